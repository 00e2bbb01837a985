// Chat templates (text/chat_template.h): the input is a template, optionally followed by a NUL and
// a JSON render context; it is parsed, then rendered for a fixed conversation and the context.
#include <cstring>

#include "fuzz_util.h"
#include "text/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = qpeft::fuzz::text_of(data, size);
  const size_t nul = in.find('\0');
  const std::string source(in.substr(0, nul));
  qpeft::fuzz::refuse_only_with_error([&] {
    const qpeft::ChatTemplate t = qpeft::ChatTemplate::parse(source, "fuzz");
    qpeft::fuzz::refuse_only_with_error([&] {
      (void)t.render({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}}, true, "<s>", "</s>");
    });
    if (nul != std::string_view::npos)
      qpeft::fuzz::refuse_only_with_error([&] { (void)t.render_json(std::string(in.substr(nul + 1))); });
  });
  return 0;
}
