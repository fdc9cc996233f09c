// The normalizer of a tokenizer.json: applied to each stretch of text between added tokens
// before it is pre-tokenized, as HF does (so Llama 2's Prepend("▁") starts every stretch).
#pragma once
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace sf::tok {

class Normalizer {
 public:
  struct Prepend {  // prepends `text` to non-empty input
    std::string text;
  };
  struct Replace {  // every occurrence of `pattern` (a plain string) becomes `content`
    std::string pattern, content;
  };
  struct Nfc {};
  using Step = std::variant<Prepend, Replace, Nfc>;

  template <typename T>
  void add(T step) {
    steps_.emplace_back(std::move(step));  // in place: no Step temporary to move
  }
  bool empty() const { return steps_.empty(); }
  std::string apply(std::string_view text) const;  // text: valid UTF-8

 private:
  std::vector<Step> steps_;
};

}  // namespace sf::tok
