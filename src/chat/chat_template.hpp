// Chat templates rendered exactly as Hugging Face transformers' apply_chat_template renders them:
// the model's Jinja2 template (tokenizer_config.json "chat_template", or a GGUF's
// tokenizer.chat_template) run by a small Jinja2 interpreter with transformers' environment
// (trim_blocks, lstrip_blocks, loop controls, raise_exception, strftime_now, tojson, namespace).
//
// A template that uses something outside the supported subset is refused with
// Error(UnsupportedShape) naming the construct and its line and column, at parse time where the
// construct is visible there, else when rendering reaches it: a prompt is never silently different
// from the one transformers would build.
#pragma once
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sf::chat {

struct ChatMessage {
  std::string role, content;
};

struct ChatContext {
  // Special-token strings, passed as the template variables of the same names (transformers
  // passes its special_tokens_map). An empty string leaves the variable undefined, as a tokenizer
  // without that token does.
  std::string bos_token, eos_token;
  // Further special tokens by variable name, e.g. {"unk_token", "<unk>"}, {"pad_token", ...}.
  std::vector<std::pair<std::string, std::string>> special_tokens;
  // JSON array of tool schemas for the `tools` variable (apply_chat_template's tools=); empty
  // leaves `tools` None. Objects keep their key order.
  std::string tools_json;
  // JSON object of further template variables (apply_chat_template's **kwargs), e.g.
  // {"date_string": "26 Jul 2024"}; empty for none.
  std::string extra_json;
  // Bounds on one render, so that no template, however hostile, runs long or grows without end:
  // evaluation steps, and bytes of any one string (the prompt included). Call nesting is bounded
  // too (200 levels). Exceeding one is Error(UnsupportedShape).
  int64_t max_steps = 20'000'000;
  size_t max_string_bytes = 64u << 20;
};

class ChatTemplate {
 public:
  // Throws sf::Error: Format when Jinja2 itself would reject the template (syntax errors,
  // unknown tags and filters), UnsupportedShape for valid Jinja2 outside the subset.
  static ChatTemplate parse(std::string_view source);

  // Throws sf::Error: InvalidArgument when the template rejects the conversation (its
  // raise_exception() message, verbatim, is the error's message) or fails on it as Jinja2 would
  // fail (undefined values used, type errors); UnsupportedShape as for parse().
  std::string render(std::span<const ChatMessage> messages, bool add_generation_prompt,
                     const ChatContext& ctx) const;

 private:
  struct Impl;
  explicit ChatTemplate(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace sf::chat
