// Stop strings in a stream: the output ends before the first stop string, even one split across
// pieces, and nothing that could still be the start of one is shown early.
#include <gtest/gtest.h>

#include "serve/stop_strings.hpp"

namespace sf::serve {
namespace {

std::string run(StopFilter& f, const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) out += f.push(p);
  return out + f.flush();
}

TEST(StopFilter, NoStopsPassesEverythingAtOnce) {
  StopFilter f({});
  EXPECT_EQ(f.push("abc"), "abc");
  EXPECT_EQ(f.flush(), "");
  EXPECT_FALSE(f.stopped());
}

TEST(StopFilter, EndsBeforeAStopSplitAcrossPieces) {
  StopFilter f({"\n\nUser:"});
  EXPECT_EQ(f.push("Hello"), "Hello");
  EXPECT_EQ(f.push(" there\n"), " there");  // "\n" may begin the stop string: held
  EXPECT_EQ(f.push("\nUs"), "");
  EXPECT_EQ(f.push("er: hi"), "");
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(f.push("more"), "");
  EXPECT_EQ(f.flush(), "");
}

TEST(StopFilter, AHeldTailThatDoesNotCompleteIsReleased) {
  StopFilter f({"STOP"});
  EXPECT_EQ(f.push("ST"), "");
  EXPECT_EQ(f.push("AR"), "STAR");
  EXPECT_EQ(f.push("S"), "");
  EXPECT_EQ(f.flush(), "S");
  EXPECT_FALSE(f.stopped());
}

TEST(StopFilter, TheEarliestOfSeveralWins) {
  StopFilter f({"world", "lo"});
  EXPECT_EQ(run(f, {"hello world"}), "hel");
  StopFilter g({"", "x"});  // an empty stop string is ignored, not a stop at 0
  EXPECT_EQ(run(g, {"ab", "cxd"}), "abc");
}

TEST(StopFilter, MultibyteTextIsCutOnlyAtTheStop) {
  StopFilter f({"é!"});
  EXPECT_EQ(run(f, {"caf", "é", "é", "!", "x"}), "café");
}

}  // namespace
}  // namespace sf::serve
