// Splits a chat template into Jinja2 tokens exactly as jinja2.lexer does for transformers'
// environment (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False): the same
// whitespace control (-, +), the same string escapes, the same number forms.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sf::chat::jinja {

enum class Tok : uint8_t {
  Data,        // template text, whitespace control already applied
  VarBegin,    // {{
  VarEnd,      // }}
  BlockBegin,  // {%
  BlockEnd,    // %}
  Name,
  String,  // text holds the unescaped value
  Integer,
  Float,
  Op,  // text holds the operator: + - * / // % ** ~ == != < <= > >= = . : | , ; ( ) [ ] { }
  Eof,
};

struct Token {
  Tok type;
  std::string text;
  int64_t ival = 0;
  double fval = 0;
  int line = 1, col = 1;
};

// Throws sf::Error: Format for what Jinja2 rejects too, UnsupportedShape for what it accepts
// but this interpreter does not (non-ASCII identifiers, \N{...} escapes, huge integers).
std::vector<Token> lex(std::string_view source);

// Jinja2's view of the source: \r\n and \r become \n, and one trailing newline is dropped.
std::string normalize_source(std::string_view source);

}  // namespace sf::chat::jinja
