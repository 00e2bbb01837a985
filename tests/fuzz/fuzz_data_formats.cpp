// JSON-lines training data in every format (text/data_formats.h), with a byte-level tokenizer
// that has a chat template (for "messages" lines) and two adapter names (for "adapter").
#include "fuzz_util.h"
#include "text/data_formats.h"
#include "text/tokenizer.h"

namespace {

const qpeft::Tokenizer& tokenizer() {
  // 256 byte tokens, <s>, </s>; ChatML-style template.
  static const qpeft::Tokenizer t = [] {
    std::string vocab;
    for (int b = 0; b < 256; ++b) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "<0x%02X>", b);
      vocab += std::string(b ? "," : "") + "\"" + hex + "\":" + std::to_string(b + 2);
    }
    const std::string json = R"({"model": {"type": "BPE", "byte_fallback": true, "vocab": {"<s>": 0, "</s>": 1, )" + vocab +
                             R"(}, "merges": []}, "added_tokens": [{"id": 0, "content": "<s>", "special": true},
                             {"id": 1, "content": "</s>", "special": true}]})";
    const std::string config = R"({"bos_token": "<s>", "eos_token": "</s>", "chat_template":
      "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"})";
    return qpeft::Tokenizer::from_json(json, config, "fuzz tokenizer");
  }();
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const qpeft::Tokenizer& tok = tokenizer();
  // The first byte picks the format option (auto or one forced), and adapter routing.
  if (size == 0) return 0;
  qpeft::DataOptions opt;
  opt.format = qpeft::DataFormat(data[0] % (int(qpeft::DataFormat::kTokenized) + 1));
  opt.route_adapters = data[0] & 0x80;
  opt.adapter_names = {"a", "b"};
  qpeft::fuzz::refuse_only_with_error(
      [&] { (void)qpeft::parse_jsonl(qpeft::fuzz::text_of(data + 1, size - 1), "data.jsonl", tok, opt); });
  return 0;
}
