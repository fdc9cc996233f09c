#include "tokenizer/unicode.hpp"

#include <algorithm>
#include <array>
#include <span>

namespace sf::tok {
namespace {

#include "tokenizer/unicode_tables.inc"
#include "tokenizer/word_tables.inc"

bool in_ranges(std::span<const CodepointRange> ranges, char32_t cp) {
  // First range whose end is >= cp; cp is in the set iff that range starts at or before it.
  auto it = std::lower_bound(ranges.begin(), ranges.end(), cp,
                             [](const CodepointRange& r, char32_t c) { return r.last < c; });
  return it != ranges.end() && it->first <= cp;
}

bool is_continuation(uint8_t b) { return (b & 0xC0) == 0x80; }

}  // namespace

CharClass char_class_slow(char32_t cp) {
  if (cp < 128) return kAsciiClasses[cp];
  if (in_ranges(kLetterRanges, cp)) return CharClass::Letter;
  if (in_ranges(kNumberRanges, cp)) return CharClass::Number;
  if (in_ranges(kWhitespaceRanges, cp)) return CharClass::Whitespace;
  return CharClass::Other;
}

bool is_word_char(char32_t cp) {
  if (cp < 128) {
    return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') ||
           cp == '_';
  }
  return in_ranges(kWordRanges, cp);
}

Decoded decode_utf8_before(std::string_view s, size_t end) {
  size_t start = end - 1;
  while (start > 0 && end - start < 4 && is_continuation(static_cast<uint8_t>(s[start]))) --start;
  Decoded d = decode_utf8(s, start);
  if (start + d.len != end) d = {kReplacementChar, 1, false};  // not valid UTF-8 there
  return d;
}

Decoded decode_utf8_slow(std::string_view s, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t b0 = byte(pos);
  if (b0 < 0x80) return {b0, 1, true};
  // Lead byte: how many continuation bytes follow, and the allowed range of the first one
  // (narrower after E0, ED, F0, F4 to exclude overlong forms, surrogates and > U+10FFFF).
  int need = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  char32_t cp = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {kReplacementChar, 1, false};  // C0, C1, F5..FF or a stray continuation byte
  }
  size_t i = pos + 1;
  for (int k = 0; k < need; ++k, ++i) {
    if (i >= s.size()) break;
    const uint8_t b = byte(i);
    const bool ok = k == 0 ? (b >= lo && b <= hi) : is_continuation(b);
    if (!ok) break;
    cp = (cp << 6) | (b & 0x3F);
    if (k == need - 1) return {cp, static_cast<uint32_t>(need + 1), true};
  }
  // The lead byte and the continuation bytes accepted so far form one maximal subpart.
  return {kReplacementChar, static_cast<uint32_t>(i - pos), false};
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_valid_utf8(std::string_view s) {
  for (size_t pos = 0; pos < s.size();) {
    const Decoded d = decode_utf8(s, pos);
    if (!d.valid) return false;
    pos += d.len;
  }
  return true;
}

std::string to_valid_utf8(std::string_view s) {
  if (is_valid_utf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  for (size_t pos = 0; pos < s.size();) {
    const Decoded d = decode_utf8(s, pos);
    if (d.valid) {
      out.append(s.substr(pos, d.len));
    } else {
      append_utf8(out, kReplacementChar);
    }
    pos += d.len;
  }
  return out;
}

}  // namespace sf::tok
