// UTF-8 repair, character classes and the pre-tokenizer's splits.
#include <gtest/gtest.h>

#include "tokenizer/pretokenize.hpp"
#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

const std::string kFffd = "\xef\xbf\xbd";

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

TEST(Utf8, ValidTextIsUnchanged) {
  for (const std::string& s : std::vector<std::string>{"", "abc", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80",
                              "\xef\xbf\xbd", "\xf4\x8f\xbf\xbf", std::string("a\0b", 3)}) {
    EXPECT_TRUE(is_valid_utf8(s));
    EXPECT_EQ(to_valid_utf8(s), s);
  }
}

// Expected values are Python's bytes.decode("utf-8", errors="replace"): one U+FFFD per maximal
// invalid subpart.
TEST(Utf8, InvalidBytesBecomeOneReplacementPerMaximalSubpart) {
  struct Case {
    std::string in, out;
  };
  const Case cases[] = {
      {"\xff", kFffd},
      {"\x80\x80", repeat(kFffd, 2)},
      {"\xc3", kFffd},
      {"\xc3(", kFffd + "("},
      {"\xc0\xaf", repeat(kFffd, 2)},                // overlong lead bytes are never valid
      {"\xe0\x80\xaf", repeat(kFffd, 3)},            // overlong 3-byte form
      {"\xed\xa0\x80", repeat(kFffd, 3)},            // a UTF-16 surrogate
      {"\xf0\x9f\x98", kFffd},                       // truncated 4-byte sequence
      {"\xf0\x9f\x98 x", kFffd + " x"},
      {"\xf4\x90\x80\x80", repeat(kFffd, 4)},        // above U+10FFFF
      {"\xe1\x80\xe1\x80\x80", kFffd + "\xe1\x80\x80"},
      {"caf\xe9!", "caf" + kFffd + "!"},
  };
  for (const auto& c : cases) {
    EXPECT_FALSE(is_valid_utf8(c.in));
    EXPECT_EQ(to_valid_utf8(c.in), c.out);
    EXPECT_TRUE(is_valid_utf8(to_valid_utf8(c.in)));
  }
}

TEST(Utf8, AppendEncodesEveryLength) {
  std::string s;
  for (char32_t cp : {U'A', U'\u00e9', U'\u4e2d', U'\U0001F600'}) append_utf8(s, cp);
  EXPECT_EQ(s, "A\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80");
  size_t pos = 0;
  for (char32_t cp : {U'A', U'\u00e9', U'\u4e2d', U'\U0001F600'}) {
    const Decoded d = decode_utf8(s, pos);
    EXPECT_TRUE(d.valid);
    EXPECT_EQ(d.cp, cp);
    pos += d.len;
  }
  EXPECT_EQ(pos, s.size());
}

TEST(CharClass, MatchesTheRegexClasses) {
  EXPECT_EQ(char_class(U'a'), CharClass::Letter);
  EXPECT_EQ(char_class(U'\u00e9'), CharClass::Letter);
  EXPECT_EQ(char_class(U'\u4e2d'), CharClass::Letter);   // CJK ideograph: Lo
  EXPECT_EQ(char_class(U'\u1c89'), CharClass::Letter);   // Unicode 16.0, as Oniguruma has it
  EXPECT_EQ(char_class(U'7'), CharClass::Number);
  EXPECT_EQ(char_class(U'\u0663'), CharClass::Number);   // Arabic-Indic digit
  EXPECT_EQ(char_class(U'\u00bd'), CharClass::Number);   // No
  EXPECT_EQ(char_class(U'\u2167'), CharClass::Number);   // Nl
  EXPECT_EQ(char_class(U'\u00a0'), CharClass::Whitespace);
  EXPECT_EQ(char_class(U'\u3000'), CharClass::Whitespace);
  EXPECT_EQ(char_class(U'\u0085'), CharClass::Whitespace);
  EXPECT_EQ(char_class(U'\x1c'), CharClass::Other);      // Python isspace() says yes; \s says no
  EXPECT_EQ(char_class(U'\u200b'), CharClass::Other);    // zero width space is not White_Space
  EXPECT_EQ(char_class(U'\u0301'), CharClass::Other);    // combining mark: Mn
  EXPECT_EQ(char_class(U'\U0001F600'), CharClass::Other);
  EXPECT_EQ(char_class(U'\U0010FFFF'), CharClass::Other);
}

std::vector<std::string> split(std::string_view s) {
  std::vector<std::string> out;
  for (const Piece& p : pretokenize(s)) out.emplace_back(s.substr(p.begin, p.end - p.begin));
  return out;
}

using V = std::vector<std::string>;

TEST(Pretokenize, FollowsGpt2Regex) {
  EXPECT_EQ(split(""), V{});
  EXPECT_EQ(split("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(split("a   b"), (V{"a", "  ", " b"}));
  EXPECT_EQ(split("a   "), (V{"a", "   "}));
  EXPECT_EQ(split(" "), (V{" "}));
  EXPECT_EQ(split("x\n\ny"), (V{"x", "\n", "\n", "y"}));
  EXPECT_EQ(split("x \ty"), (V{"x", " ", "\t", "y"}));
  EXPECT_EQ(split("x\t y"), (V{"x", "\t", " y"}));
  EXPECT_EQ(split("it's"), (V{"it", "'s"}));
  EXPECT_EQ(split("IT'S"), (V{"IT", "'", "S"}));
  EXPECT_EQ(split("they're we'll 'sup"), (V{"they", "'re", " we", "'ll", " '", "sup"}));
  EXPECT_EQ(split("!'s"), (V{"!'", "s"}));
  EXPECT_EQ(split("abc123 456!!"), (V{"abc", "123", " 456", "!!"}));
  EXPECT_EQ(split("e\xcc\x81"), (V{"e", "\xcc\x81"}));  // e + combining acute
  EXPECT_EQ(split(" \xf0\x9f\x98\x80\xf0\x9f\x98\x82 ok"),
            (V{" \xf0\x9f\x98\x80\xf0\x9f\x98\x82", " ok"}));
  EXPECT_EQ(split("a\xc2\xa0 b"), (V{"a", "\xc2\xa0", " b"}));  // NBSP is \s but not " ?"
}

TEST(Pretokenize, PiecesCoverTheText) {
  const std::string s = "Mixed: \xe4\xb8\xad\xe6\x96\x87 1,2  \t\n  it's \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd  ";
  size_t at = 0;
  for (const Piece& p : pretokenize(s)) {
    EXPECT_EQ(p.begin, at);
    EXPECT_GT(p.end, p.begin);
    at = p.end;
  }
  EXPECT_EQ(at, s.size());
}

}  // namespace
}  // namespace sf::tok
