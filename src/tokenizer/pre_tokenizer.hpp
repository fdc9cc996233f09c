// The pre-tokenizer of a tokenizer.json: splits a stretch of normalized text into the words the
// BPE model encodes one by one. Steps run in order, each on every word the previous one made.
#pragma once
#include <deque>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tokenizer/split_regex.hpp"

namespace sf::tok {

enum class PrependScheme { First, Always, Never };

class PreTokenizer {
 public:
  struct Split {  // behavior "Isolated": each match is a word
    SplitRegex regex;
  };
  struct Digits {  // digits (\p{N}) split off, each alone or as runs
    bool individual;
  };
  // Words are handed to the model as bytes; must be the last step. add_prefix_space prepends
  // " " to a word not starting with one; use_regex splits with GPT-2's regex.
  struct ByteLevel {
    bool add_prefix_space, use_regex;
  };
  // " " becomes `replacement`; the prepend scheme says which words get one in front (First: the
  // word that starts the input); split: each replacement starts a new word.
  struct Metaspace {
    std::string replacement;
    PrependScheme prepend;
    bool split;
  };
  using Step = std::variant<Split, Digits, ByteLevel, Metaspace>;

  template <typename T>
  void add(T step) {
    steps_.emplace_back(std::move(step));  // in place: no Step temporary to move
  }
  const std::vector<Step>& steps() const { return steps_; }
  bool byte_level() const;

  // Buffers reused across calls: words point into the input or into `arena`.
  struct Scratch {
    struct Word {
      std::string_view text;
      bool at_start;  // begins at offset 0 of the input
    };
    std::deque<std::string> arena;
    std::vector<Word> words, next;
    std::vector<Piece> pieces;
  };
  // Splits `text` (valid UTF-8; at_start: it begins the input) into scratch.words.
  void run(std::string_view text, bool at_start, Scratch& scratch) const;

 private:
  std::vector<Step> steps_;
};

}  // namespace sf::tok
