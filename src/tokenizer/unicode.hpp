// UTF-8 decoding and the Unicode classes GPT-2's pre-tokenizer distinguishes.
//
// Invalid UTF-8 is never rejected: each maximal invalid subpart (Unicode 15 §3.9, "U+FFFD
// substitution of maximal subparts") becomes U+FFFD, exactly as Python's
// bytes.decode("utf-8", errors="replace") and Rust's String::from_utf8_lossy do. So encoding
// arbitrary bytes gives the ids Hugging Face gives for the text Python would read from them.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace sf::tok {

struct CodepointRange {
  uint32_t first, last;  // inclusive
};

// \p{L}, \p{N}, \s and everything else, as the fast (Rust) HF tokenizer's regex engine sees them.
enum class CharClass : uint8_t { Letter, Number, Whitespace, Other };

// ASCII dominates real text: it is classified and decoded inline, the rest out of line.
CharClass char_class_slow(char32_t cp);
constexpr std::array<CharClass, 128> make_ascii_classes() {
  std::array<CharClass, 128> t{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      t[c] = CharClass::Letter;
    } else if (c >= '0' && c <= '9') {
      t[c] = CharClass::Number;
    } else if (c == ' ' || (c >= 0x09 && c <= 0x0D)) {
      t[c] = CharClass::Whitespace;
    } else {
      t[c] = CharClass::Other;
    }
  }
  return t;
}
inline constexpr std::array<CharClass, 128> kAsciiClasses = make_ascii_classes();
inline CharClass char_class(char32_t cp) {
  return cp < 128 ? kAsciiClasses[cp] : char_class_slow(cp);
}

// \w as the Rust regex crate has it (Alphabetic, marks, decimal digits, connector punctuation,
// ZWNJ/ZWJ): what HF's added-token matching calls a word character (single_word).
bool is_word_char(char32_t cp);

inline constexpr char32_t kReplacementChar = 0xFFFD;

struct Decoded {
  char32_t cp;   // kReplacementChar when !valid
  uint32_t len;  // bytes consumed, >= 1: the sequence, or the maximal invalid subpart
  bool valid;
};

// Decodes one code point starting at s[pos] (pos < s.size()).
Decoded decode_utf8_slow(std::string_view s, size_t pos);
inline Decoded decode_utf8(std::string_view s, size_t pos) {
  const auto b0 = static_cast<uint8_t>(s[pos]);
  return b0 < 0x80 ? Decoded{b0, 1, true} : decode_utf8_slow(s, pos);
}

// Decodes the code point that ends at s[end - 1] (0 < end <= s.size(), s valid UTF-8); its first
// byte is at end - result.len.
Decoded decode_utf8_before(std::string_view s, size_t end);

void append_utf8(std::string& out, char32_t cp);

// `s` with every maximal invalid subpart replaced by U+FFFD (EF BF BD); valid input is unchanged.
std::string to_valid_utf8(std::string_view s);

bool is_valid_utf8(std::string_view s);

}  // namespace sf::tok
