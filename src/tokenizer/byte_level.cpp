#include "tokenizer/byte_level.hpp"

#include <array>

#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

constexpr bool printable(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
}

constexpr std::array<char32_t, 256> make_byte_to_unicode() {
  std::array<char32_t, 256> map{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) map[b] = printable(b) ? static_cast<char32_t>(b) : next++;
  return map;
}
constexpr auto kByteToUnicode = make_byte_to_unicode();

// The alphabet ends at U+0143 (256 + 68 - 1): a table covers every character of it.
constexpr size_t kAlphabetEnd = 256 + 68;
constexpr std::array<int16_t, kAlphabetEnd> make_unicode_to_byte() {
  std::array<int16_t, kAlphabetEnd> map{};
  for (auto& m : map) m = -1;
  for (int b = 0; b < 256; ++b) map[kByteToUnicode[b]] = static_cast<int16_t>(b);
  return map;
}
constexpr auto kUnicodeToByte = make_unicode_to_byte();

}  // namespace

char32_t byte_to_unicode(uint8_t b) {
  return kByteToUnicode[b];
}

int unicode_to_byte(char32_t cp) {
  return cp < kAlphabetEnd ? kUnicodeToByte[cp] : -1;
}

std::string byte_level_spelling(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) append_utf8(out, kByteToUnicode[static_cast<uint8_t>(c)]);
  return out;
}

std::optional<std::string> byte_level_bytes(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  for (size_t pos = 0; pos < token.size();) {
    const Decoded d = decode_utf8(token, pos);
    const int b = d.valid ? unicode_to_byte(d.cp) : -1;
    if (b < 0) return std::nullopt;
    out += static_cast<char>(b);
    pos += d.len;
  }
  return out;
}

}  // namespace sf::tok
