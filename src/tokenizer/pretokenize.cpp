#include "tokenizer/pretokenize.hpp"

#include <cstdint>

#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

struct Char {
  char32_t cp;
  CharClass cls;
  size_t offset;  // byte offset of the code point in the text
};

// Length (in code points) of the contraction ('s 't 're 've 'm 'll 'd, lower case only) at i, or 0.
size_t contraction_at(const std::vector<Char>& c, size_t i) {
  if (c[i].cp != U'\'' || i + 1 >= c.size()) return 0;
  const char32_t c1 = c[i + 1].cp;
  if (c1 == U's' || c1 == U't' || c1 == U'm' || c1 == U'd') return 2;
  if (i + 2 >= c.size()) return 0;
  const char32_t c2 = c[i + 2].cp;
  if ((c1 == U'r' && c2 == U'e') || (c1 == U'v' && c2 == U'e') || (c1 == U'l' && c2 == U'l')) {
    return 3;
  }
  return 0;
}

// End (exclusive, in code points) of the regex match that starts at i.
size_t match_end(const std::vector<Char>& c, size_t i) {
  const size_t n = c.size();
  if (size_t len = contraction_at(c, i)) return i + len;

  // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": an optional U+0020, then a run of one class.
  // The classes are disjoint, so the first character after the optional space picks the branch.
  const size_t first = (c[i].cp == U' ' && i + 1 < n) ? i + 1 : i;
  const CharClass cls = c[first].cls;
  if (cls != CharClass::Whitespace) {
    size_t j = first + 1;
    while (j < n && c[j].cls == cls) ++j;
    return j;
  }

  // "\s+(?!\S)": the whitespace run, less its last character when a non-space follows, so that
  // the last space can lead the next word. When that leaves nothing, "\s+" takes the one char.
  size_t j = i;
  while (j < n && c[j].cls == CharClass::Whitespace) ++j;
  if (j < n && j - i >= 2) return j - 1;
  return j;
}

}  // namespace

std::vector<Piece> pretokenize(std::string_view text) {
  std::vector<Piece> pieces;
  pretokenize(text, pieces);
  return pieces;
}

void pretokenize(std::string_view text, std::vector<Piece>& pieces) {
  std::vector<Char> chars;
  chars.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const Decoded d = decode_utf8(text, pos);
    chars.push_back({d.cp, char_class(d.cp), pos});
    pos += d.len;
  }
  for (size_t i = 0; i < chars.size();) {
    const size_t j = match_end(chars, i);
    const size_t end = j < chars.size() ? chars[j].offset : text.size();
    pieces.push_back({chars[i].offset, end});
    i = j;
  }
}

}  // namespace sf::tok
