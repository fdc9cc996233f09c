// The CLI's model helpers: --ids parsing and UTF-8 streaming of token bytes.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cli/model_io.hpp"
#include "core/error.hpp"
#include "tokenizer/bpe.hpp"

namespace sf::cli {
namespace {

TEST(ParseIdList, AcceptsCommaListWithSpaces) {
  EXPECT_EQ(parse_id_list("2,17, 5"), (std::vector<int32_t>{2, 17, 5}));
  EXPECT_EQ(parse_id_list("0"), (std::vector<int32_t>{0}));
}

TEST(ParseIdList, RejectsGarbageNamingTheItem) {
  for (const char* bad : {"", "2,,3", "2,x", "-1", "1.5", "2,", "99999999999"}) {
    try {
      parse_id_list(bad);
      ADD_FAILURE() << "accepted \"" << bad << "\"";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--ids"), std::string::npos) << e.what();
    }
  }
}

// Feeding a string byte by byte (the worst split) gives back exactly the string when it is valid.
TEST(Utf8Stream, ReassemblesCharactersSplitAcrossTokens) {
  const std::string text = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80!";  // café € 😀!
  Utf8Stream s;
  std::string out;
  for (char c : text) {
    const std::string piece = s.push(std::string(1, c));
    // Never emits half a character.
    if (!piece.empty()) {
      EXPECT_NE(static_cast<unsigned char>(piece.back()) & 0xC0, 0xC0);
    }
    out += piece;
  }
  out += s.finish();
  EXPECT_EQ(out, text);
}

TEST(Utf8Stream, InvalidBytesBecomeReplacementCharacters) {
  const std::string fffd = "\xEF\xBF\xBD";
  Utf8Stream s;
  EXPECT_EQ(s.push("a\xFF"
                   "b"),
            "a" + fffd + "b");
  EXPECT_EQ(s.push("\xC3"), "");                          // incomplete: held back
  EXPECT_EQ(s.push("x"), fffd + "x");                     // lead without its continuation
  EXPECT_EQ(s.push("\xED\xA0\x80"), fffd + fffd + fffd);  // a surrogate is not UTF-8
  EXPECT_EQ(s.push("\xE2\x82"), "");
  EXPECT_EQ(s.finish(), fffd);  // truncated at the end
}

}  // namespace
}  // namespace sf::cli
