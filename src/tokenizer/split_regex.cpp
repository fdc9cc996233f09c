#include "tokenizer/split_regex.hpp"

#include <cstdint>

#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct Char {
  char32_t cp;
  CharClass cls;
  size_t offset;  // of the code point in the text
};

bool is_newline(char32_t cp) {
  return cp == U'\r' || cp == U'\n';
}

// Case folding as Oniguruma applies it to the contraction letters: ASCII case, and U+017F (long
// s) folds to 's'. No other code point folds to one of s t r e v m l d.
char32_t fold(char32_t cp) {
  if (cp >= U'A' && cp <= U'Z') return cp + 32;
  return cp == 0x17F ? U's' : cp;
}

// "(?i:'s|'t|'re|'ve|'m|'ll|'d)": its length in code points at i, or 0.
size_t contraction_at(const std::vector<Char>& c, size_t i) {
  if (c[i].cp != U'\'' || i + 1 >= c.size()) return 0;
  const char32_t c1 = fold(c[i + 1].cp);
  if (c1 == U's' || c1 == U't' || c1 == U'm' || c1 == U'd') return 2;
  if (i + 2 >= c.size()) return 0;
  const char32_t c2 = fold(c[i + 2].cp);
  if ((c1 == U'r' && c2 == U'e') || (c1 == U'v' && c2 == U'e') || (c1 == U'l' && c2 == U'l')) {
    return 3;
  }
  return 0;
}

size_t run_end(const std::vector<Char>& c, size_t j, CharClass cls) {
  while (j < c.size() && c[j].cls == cls) ++j;
  return j;
}

// End (exclusive, in code points) of the Llama 3 / Qwen2 match that starts at i. The
// alternatives are tried in order, as the regex engine does; max_digits is 3 or 1.
size_t llama3_match_end(const std::vector<Char>& c, size_t i, size_t max_digits) {
  const size_t n = c.size();
  if (size_t len = contraction_at(c, i)) return i + len;
  const CharClass cls = c[i].cls;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (cls == CharClass::Letter) return run_end(c, i + 1, CharClass::Letter);
  if (cls != CharClass::Number && !is_newline(c[i].cp) && i + 1 < n &&
      c[i + 1].cls == CharClass::Letter) {
    return run_end(c, i + 2, CharClass::Letter);
  }
  // \p{N}{1,3}
  if (cls == CharClass::Number) {
    size_t j = i + 1;
    while (j < n && j - i < max_digits && c[j].cls == CharClass::Number) ++j;
    return j;
  }
  // " ?[^\s\p{L}\p{N}]+[\r\n]*"
  const size_t first = (c[i].cp == U' ' && i + 1 < n) ? i + 1 : i;
  if (c[first].cls == CharClass::Other) {
    size_t j = run_end(c, first + 1, CharClass::Other);
    while (j < n && is_newline(c[j].cp)) ++j;
    return j;
  }
  // What is left starts with whitespace.
  const size_t end = run_end(c, i, CharClass::Whitespace);
  // "\s*[\r\n]+": the run up to and including its last newline.
  for (size_t k = end; k > i; --k) {
    if (is_newline(c[k - 1].cp)) return k;
  }
  // "\s+(?!\S)": the run, less its last character when a non-space follows; else "\s+".
  if (end < n && end - i >= 2) return end - 1;
  return end;
}

std::vector<Char> decode_chars(std::string_view text) {
  std::vector<Char> chars;
  chars.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const Decoded d = decode_utf8(text, pos);
    chars.push_back({d.cp, char_class(d.cp), pos});
    pos += d.len;
  }
  return chars;
}

}  // namespace

std::optional<SplitRegex> split_regex_from_pattern(std::string_view pattern) {
  if (pattern == kGpt2Pattern) return SplitRegex::Gpt2;
  if (pattern == kLlama3Pattern) return SplitRegex::Llama3;
  if (pattern == kQwen2Pattern) return SplitRegex::Qwen2;
  return std::nullopt;
}

std::string_view split_regex_pattern(SplitRegex regex) {
  switch (regex) {
    case SplitRegex::Gpt2:
      return kGpt2Pattern;
    case SplitRegex::Llama3:
      return kLlama3Pattern;
    case SplitRegex::Qwen2:
      return kQwen2Pattern;
  }
  return kGpt2Pattern;
}

void split_with_regex(SplitRegex regex, std::string_view text, std::vector<Piece>& out) {
  if (regex == SplitRegex::Gpt2) {
    pretokenize(text, out);
    return;
  }
  const size_t max_digits = regex == SplitRegex::Llama3 ? 3 : 1;
  const std::vector<Char> chars = decode_chars(text);
  for (size_t i = 0; i < chars.size();) {
    const size_t j = llama3_match_end(chars, i, max_digits);
    const size_t end = j < chars.size() ? chars[j].offset : text.size();
    out.push_back({chars[i].offset, end});
    i = j;
  }
}

}  // namespace sf::tok
