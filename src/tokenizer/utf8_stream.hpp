// Streaming text out of a tokenizer: token bytes arrive in pieces that can split a UTF-8
// character, and a stream of text must never show half of one.
#pragma once
#include <string>

namespace sf::tok {

// push() returns the text that is complete so far (invalid bytes become U+FFFD, one per maximal
// invalid subpart, as Tokenizer::decode does), finish() whatever is left (U+FFFD for a truncated
// character, else "").
class Utf8Stream {
 public:
  std::string push(const std::string& bytes);
  std::string finish();

 private:
  std::string pending_;
};

}  // namespace sf::tok
