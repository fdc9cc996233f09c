// Chat templates on arbitrary bytes: parsing and rendering must return or throw sf::Error, never
// crash, hang or grow without bound. The first byte picks add_generation_prompt and whether tools
// are passed; the rest is the template, rendered over a fixed conversation with tight limits.
#include <string>
#include <string_view>
#include <vector>

#include "chat/chat_template.hpp"
#include "core/error.hpp"
#include "harness.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const std::string_view src(reinterpret_cast<const char*>(data + 1), size - 1);
  static const std::vector<sf::chat::ChatMessage> messages = {
      {"system", "You are a helpful assistant."},
      {"user", "Hello {{ there }} \"quoted\"\n\u00e9\u65e5"},
      {"assistant", "  Hi!  "},
      {"user", "And again?"},
      {"tool", "{\"ok\": true}"},
  };
  sf::chat::ChatContext ctx;
  ctx.bos_token = "<s>";
  ctx.eos_token = "</s>";
  if (mode & 2) {
    ctx.tools_json =
        R"([{"type": "function", "function": {"name": "f", "description": "d",)"
        R"( "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}}])";
  }
  ctx.max_steps = 200'000;
  ctx.max_string_bytes = 1u << 20;
  try {
    const auto tpl = sf::chat::ChatTemplate::parse(src);
    const std::string out = tpl.render(messages, (mode & 1) != 0, ctx);
    SF_FUZZ_CHECK(out.size() <= ctx.max_string_bytes);
    // Rendering is a function of the template and its inputs.
    SF_FUZZ_CHECK(tpl.render(messages, (mode & 1) != 0, ctx) == out);
  } catch (const sf::Error&) {
  }
  return 0;
}
