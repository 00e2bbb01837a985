// Chat templates: renders tokenizer_config.json's `chat_template` (Jinja) for a list of
// messages, like transformers' apply_chat_template(tokenize=False). A subset of Jinja is
// interpreted (see jinja.h); anything else is an error naming the construct and its line.
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace qpeft {

class Tokenizer;

struct ChatMessage {
  std::string role;
  std::string content;
};

class ChatTemplate {
 public:
  // Parses the template; errors name `origin` and the line.
  static ChatTemplate parse(const std::string& source, const std::string& origin = "chat_template");
  // The tokenizer's template (error if its tokenizer_config.json has none).
  static ChatTemplate from_tokenizer(const Tokenizer& tok);
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;
  ~ChatTemplate();

  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     const std::string& bos_token, const std::string& eos_token) const;
  // Renders with a JSON context: {"messages": [...], "add_generation_prompt": ..., ...}.
  std::string render_json(const std::string& context_json) const;

 private:
  struct Impl;
  explicit ChatTemplate(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qpeft
