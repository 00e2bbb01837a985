// ChatTemplate: tokenizer_config.json's chat_template through the Jinja subset.
#include "text/chat_template.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/jinja.h"
#include "text/tokenizer.h"

namespace qpeft {

struct ChatTemplate::Impl {
  jinja::Template t;
};

ChatTemplate::ChatTemplate(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
ChatTemplate::~ChatTemplate() = default;

ChatTemplate ChatTemplate::parse(const std::string& source, const std::string& origin) {
  auto impl = std::make_unique<Impl>();
  impl->t = jinja::parse(source, origin);
  return ChatTemplate(std::move(impl));
}

ChatTemplate ChatTemplate::from_tokenizer(const Tokenizer& tok) {
  if (tok.chat_template().empty())
    fail("[chat template] {}: the tokenizer has no chat_template (tokenizer_config.json); use another data format or a model with a chat template", tok.source());
  return parse(tok.chat_template(), tok.source() + " chat_template");
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 const std::string& bos_token, const std::string& eos_token) const {
  jinja::Array msgs;
  for (const auto& m : messages)
    msgs.push_back(jinja::Value::object({{"role", jinja::Value::string(m.role)}, {"content", jinja::Value::string(m.content)}}));
  jinja::Value ctx = jinja::Value::object({
      {"messages", jinja::Value::array(std::move(msgs))},
      {"add_generation_prompt", jinja::Value::boolean(add_generation_prompt)},
      {"bos_token", jinja::Value::string(bos_token)},
      {"eos_token", jinja::Value::string(eos_token)},
  });
  return jinja::render(impl_->t, ctx);
}

std::string ChatTemplate::render_json(const std::string& context_json) const {
  const jinja::Value ctx = jinja::from_json_text(context_json, "[chat template] " + impl_->t.origin + ": the context");
  return jinja::render(impl_->t, ctx);
}

}  // namespace qpeft
