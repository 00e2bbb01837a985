// JSON-lines training data -> tokenized examples (formats in data_formats.h).
#include "text/data_formats.h"

#include <nlohmann/json.hpp>
#include <optional>

#include "core/error.h"
#include "core/file.h"
#include "core/limits.h"
#include "core/lines.h"
#include "text/chat_template.h"
#include "io/json_reader.h"
#include "text/tokenizer.h"

namespace qpeft {

using json = nlohmann::json;

namespace {

const char* kNames[] = {"auto", "text", "completion", "alpaca", "chat", "choice", "tokenized"};
static_assert(sizeof(kNames) / sizeof(kNames[0]) == size_t(DataFormat::kTokenized) + 1, "one name per format");

const char* kAlpacaWithInput =
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";
const char* kAlpacaNoInput =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n";

std::string fill_in(std::string t, const std::string& key, const std::string& value) {
  size_t p = t.find(key);
  if (p != std::string::npos) t.replace(p, key.size(), value);
  return t;
}

DataFormat detect(const json& j) {
  if (j.contains("input_ids")) return DataFormat::kTokenized;
  if (j.contains("messages")) return DataFormat::kChat;
  if (j.contains("choices") && j.contains("prompt")) return DataFormat::kChoice;
  if (j.contains("instruction") && j.contains("output")) return DataFormat::kAlpaca;
  if (j.contains("prompt") && j.contains("completion")) return DataFormat::kCompletion;
  if (j.contains("text")) return DataFormat::kText;
  return DataFormat::kAuto;
}

struct Builder {
  const Tokenizer* tok_ptr;  // null: only pre-tokenized data can be read
  int64_t vocab_size;
  const DataOptions& opt;
  std::string where;  // "file:line"
  std::optional<ChatTemplate> chat;

  [[noreturn]] void err(const std::string& what) const { fail("{}: {}", where, what); }

  const Tokenizer& tok() const {
    if (!tok_ptr)
      err("this is text data, but the model directory has no tokenizer.json (or tokenizer.model); add one, or use "
          "pre-tokenized {\"input_ids\": [...]} lines");
    return *tok_ptr;
  }

  // j[key], which must be present (const operator[] on a missing key is undefined).
  const json& member(const json& j, const char* key, DataFormat f) const {
    auto it = j.find(key);
    if (it == j.end()) err(fmt::format("missing \"{}\" (format {})", key, data_format_name(f)));
    return *it;
  }

  const std::string& str(const json& j, const char* key, DataFormat f) const {
    const json& v = member(j, key, f);
    if (!v.is_string()) err(fmt::format("\"{}\" must be a string, found {}", key, describe_json(v)));
    return v.get_ref<const std::string&>();
  }

  void append(Example& e, const std::vector<int32_t>& ids, bool loss) const {
    e.input_ids.insert(e.input_ids.end(), ids.begin(), ids.end());
    for (int32_t id : ids) e.labels.push_back(loss ? id : kIgnoreLabel);
  }

  std::vector<int32_t> bos_plus(const std::string& text) const {
    std::vector<int32_t> ids;
    if (opt.add_bos && tok().bos_id() >= 0) ids.push_back(tok().bos_id());
    auto t = tok().encode(text, false);
    ids.insert(ids.end(), t.begin(), t.end());
    return ids;
  }

  Example prompt_response(const std::string& prompt, const std::string& response) const {
    Example e;
    append(e, bos_plus(prompt), opt.train_on_prompt);
    append(e, tok().encode(response, false), true);
    if (opt.add_eos && tok().eos_id() >= 0) append(e, {tok().eos_id()}, true);
    return e;
  }

  Example chat_example(const json& j) {
    const json& msgs = member(j, "messages", DataFormat::kChat);
    if (!msgs.is_array() || msgs.empty()) err("\"messages\" must be a non-empty array of {\"role\", \"content\"}");
    std::vector<ChatMessage> m;
    for (size_t i = 0; i < msgs.size(); ++i) {
      const json& x = msgs[i];
      if (!x.is_object() || !x.contains("role") || !x["role"].is_string() || !x.contains("content") || !x["content"].is_string())
        err(fmt::format("messages[{}] must be {{\"role\": string, \"content\": string}}", i));
      m.push_back({x["role"].get<std::string>(), x["content"].get<std::string>()});
    }
    // Each assistant turn is found by rendering the conversation up to it twice: the work grows
    // with the square of the length, so very long conversations are refused up front.
    int64_t rendered = int64_t(m.size());
    for (size_t i = 0; i < m.size(); ++i)
      if (m[i].role == "assistant") rendered += int64_t(2 * i + 1);
    if (rendered > limits::kMaxChatRenderedMessages)
      err(fmt::format("a conversation of {} messages is too long to split into turns (it would render {} messages, "
                      "beyond limits::kMaxChatRenderedMessages = {}); split it into several lines",
                      m.size(), rendered, limits::kMaxChatRenderedMessages));
    if (!chat) chat.emplace(ChatTemplate::from_tokenizer(tok()));
    auto render = [&](size_t n, bool gen) {
      std::vector<ChatMessage> head(m.begin(), m.begin() + long(n));
      try {
        return chat->render(head, gen, tok().bos_token(), tok().eos_token());
      } catch (const Error& e) {
        err(std::string("chat template: ") + e.what());
      }
    };
    Example e;
    std::string done;
    bool any = false;
    for (size_t i = 0; i < m.size(); ++i) {
      if (m[i].role != "assistant") continue;
      any = true;
      std::string prefix = render(i, true), full = render(i + 1, false);
      if (prefix.compare(0, done.size(), done) != 0 || full.compare(0, prefix.size(), prefix) != 0)
        err(fmt::format("the chat template's output for messages[{}] does not extend the earlier turns, so the assistant tokens cannot be found", i));
      append(e, tok().encode(std::string_view(prefix).substr(done.size()), false), opt.train_on_prompt);
      append(e, tok().encode(std::string_view(full).substr(prefix.size()), false), true);
      done = std::move(full);
    }
    if (!any) err("the conversation has no \"assistant\" message to train on");
    std::string all = render(m.size(), false);
    if (all.size() > done.size()) append(e, tok().encode(std::string_view(all).substr(done.size()), false), opt.train_on_prompt);
    return e;
  }

  Example tokenized(const json& j) {
    auto ids_of = [&](const char* key, bool allow_ignore) {
      const json& a = member(j, key, DataFormat::kTokenized);
      if (!a.is_array()) err(fmt::format("\"{}\" must be an array of token ids", key));
      std::vector<int32_t> v;
      v.reserve(a.size());
      for (size_t i = 0; i < a.size(); ++i) {
        int64_t x = 0;
        const bool ok = json_integer_in(a[i], INT64_MIN, INT64_MAX, &x);
        if (!ok || !((x >= 0 && x < vocab_size) || (allow_ignore && x == kIgnoreLabel)))
          err(fmt::format("{}[{}] = {} is not a token id of this tokenizer (0 .. {}{})", key, i,
                         a[i].is_number() ? a[i].dump() : describe_json(a[i]), vocab_size - 1, allow_ignore ? ", or -100" : ""));
        v.push_back(int32_t(x));
      }
      return v;
    };
    Example e;
    e.input_ids = ids_of("input_ids", false);
    if (e.input_ids.empty()) err("\"input_ids\" is empty");
    if (j.contains("labels")) {
      e.labels = ids_of("labels", true);
      if (e.labels.size() != e.input_ids.size())
        err(fmt::format("\"labels\" has {} entries but \"input_ids\" has {}", e.labels.size(), e.input_ids.size()));
    } else {
      e.labels = e.input_ids;
    }
    return e;
  }

  ChoiceExample choice(const json& j) {
    ChoiceExample c;
    c.prompt_ids = bos_plus(str(j, "prompt", DataFormat::kChoice));
    const json& ch = member(j, "choices", DataFormat::kChoice);
    if (!ch.is_array() || ch.size() < 2) err("\"choices\" must be an array of at least two strings");
    for (size_t i = 0; i < ch.size(); ++i) {
      if (!ch[i].is_string()) err(fmt::format("choices[{}] must be a string", i));
      c.choice_ids.push_back(tok().encode(ch[i].get<std::string>(), false));
    }
    int64_t answer = 0;
    if (!json_integer_in(j.contains("answer") ? j["answer"] : json(), 0, int64_t(ch.size()) - 1, &answer))
      err(fmt::format("\"answer\" must be the index (0 .. {}) of the right choice", ch.size() - 1));
    c.answer = int(answer);
    return c;
  }
};

}  // namespace

const char* data_format_name(DataFormat f) { return kNames[size_t(f)]; }

std::string adapter_names_list(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += n + ", ";
  return s + kBaseAdapterName;
}

int32_t resolve_adapter_name(const std::string* name, const std::vector<std::string>& names, const std::string& where) {
  if (!name) {
    if (names.size() == 1) return 0;
    if (names.empty()) return kBaseAdapter;
    fail("{}: no \"adapter\" field, and {} adapters are loaded; name one of {}", where, names.size(),
         adapter_names_list(names));
  }
  if (*name == kBaseAdapterName) return kBaseAdapter;
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == *name) return int32_t(i);
  fail("{}: unknown adapter '{}' (loaded: {})", where, *name, adapter_names_list(names));
}

bool parse_data_format(std::string_view s, DataFormat* out) {
  for (size_t i = 0; i < sizeof(kNames) / sizeof(kNames[0]); ++i)
    if (s == kNames[i]) return *out = DataFormat(i), true;
  return false;
}

Dataset parse_jsonl(std::string_view text, const std::string& origin, const Tokenizer& tok, const DataOptions& opt) {
  return parse_jsonl(text, origin, &tok, tok.vocab_size(), opt);
}

Dataset parse_jsonl(std::string_view text, const std::string& origin, const Tokenizer* tok, int64_t vocab_size,
                    const DataOptions& opt) {
  Dataset ds;
  ds.format = opt.format;
  Builder b{tok, vocab_size, opt, origin, std::nullopt};
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // UTF-8 BOM
  int64_t line_no = 0, detected_at = 0;
  std::string_view line;
  for (LineCursor lines(text); lines.next(&line, &line_no);) {
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    b.where = fmt::format("{}:{}", origin, line_no);
    const json j = parse_json(line, b.where);
    if (!j.is_object()) b.err(fmt::format("expected a JSON object, found {}", describe_json(j)));
    if (ds.format == DataFormat::kAuto) {
      ds.format = detect(j);
      detected_at = line_no;
      if (ds.format == DataFormat::kAuto)
        b.err("cannot tell the data format from the keys: expected \"text\", \"prompt\"+\"completion\", \"instruction\"+\"output\", \"messages\", \"prompt\"+\"choices\" or \"input_ids\" (or force one with the format option)");
    }
    (void)detected_at;
    int32_t adapter = kBaseAdapter;
    if (opt.route_adapters) {
      const bool has = j.contains("adapter");
      if (has && !j["adapter"].is_string())
        b.err(fmt::format("\"adapter\" must be a string (an adapter name, or {}), found {}", kBaseAdapterName,
                          describe_json(j["adapter"])));
      adapter = resolve_adapter_name(has ? &j["adapter"].get_ref<const std::string&>() : nullptr, opt.adapter_names,
                                     b.where);
    }
    const size_t n_examples = ds.examples.size(), n_choices = ds.choices.size();
    switch (ds.format) {
      case DataFormat::kText: {
        Example e;
        b.append(e, b.bos_plus(b.str(j, "text", ds.format)), true);
        if (opt.add_eos && b.tok().eos_id() >= 0) b.append(e, {b.tok().eos_id()}, true);
        ds.examples.push_back(std::move(e));
        break;
      }
      case DataFormat::kCompletion:
        ds.examples.push_back(b.prompt_response(b.str(j, "prompt", ds.format), b.str(j, "completion", ds.format)));
        break;
      case DataFormat::kAlpaca: {
        const std::string& ins = b.str(j, "instruction", ds.format);
        std::string input = j.contains("input") ? b.str(j, "input", ds.format) : std::string();
        std::string prompt = input.empty() ? fill_in(kAlpacaNoInput, "{instruction}", ins)
                                           : fill_in(fill_in(kAlpacaWithInput, "{instruction}", ins), "{input}", input);
        ds.examples.push_back(b.prompt_response(prompt, b.str(j, "output", ds.format)));
        break;
      }
      case DataFormat::kChat:
        if (!j.contains("messages")) b.err("missing \"messages\" (format chat)");
        ds.examples.push_back(b.chat_example(j));
        break;
      case DataFormat::kChoice:
        ds.choices.push_back(b.choice(j));
        break;
      case DataFormat::kTokenized:
        if (!j.contains("input_ids")) b.err("missing \"input_ids\" (format tokenized)");
        ds.examples.push_back(b.tokenized(j));
        break;
      case DataFormat::kAuto:
        break;
    }
    if (ds.examples.size() > n_examples) ds.examples.back().adapter = adapter;
    if (ds.choices.size() > n_choices) ds.choices.back().adapter = adapter;
  }
  if (ds.size() == 0) fail("{}: the data set is empty (no JSON lines); nothing to train on", origin);
  return ds;
}

Dataset load_jsonl(const std::string& path, const Tokenizer& tok, const DataOptions& opt) {
  return load_jsonl(path, &tok, tok.vocab_size(), opt);
}

Dataset load_jsonl(const std::string& path, const Tokenizer* tok, int64_t vocab_size, const DataOptions& opt) {
  if (!file_exists(path)) fail("{}: no such data file", path);
  return parse_jsonl(read_text_file(path), path, tok, vocab_size, opt);
}

}  // namespace qpeft
