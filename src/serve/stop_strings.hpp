// Stop strings (OpenAI's `stop`): generation ends where the output first contains one of them, and
// the output ends before it. Text streams out as it is decoded, so a tail that could still grow
// into a stop string is held back until the next piece settles whether it does.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace sf::serve {

class StopFilter {
 public:
  explicit StopFilter(std::vector<std::string> stops);  // empty strings are ignored

  // Adds decoded text and returns what is now final. Once a stop string completes, stopped() is
  // true, the text returned ends before it, and later calls return "".
  std::string push(std::string_view piece);
  // The output ended for another reason (EOS, the token limit): the tail held back.
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;  // the longest tail of the output that is a proper prefix of a stop string
  bool stopped_ = false;
};

}  // namespace sf::serve
