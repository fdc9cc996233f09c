// Added tokens (tokenizer.json's "added_tokens"): strings matched in the text before the model
// runs, each becoming its id, as HF's AddedVocabulary does. Two passes: tokens with
// normalized == false are found in the raw text; the rest in each normalized stretch between
// them, spelled as the normalizer spells them. Matching is leftmost-longest, non-overlapping;
// then each match is checked and widened by its flags:
//   single_word  the match is dropped unless no word character (\w) touches it on either side
//   lstrip       whitespace before it joins the token (not the text)
//   rstrip       whitespace after it joins the token
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sf::tok {

class Normalizer;

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, normalized = true, single_word = false;
};

class AddedTokens {
 public:
  AddedTokens() = default;
  // Empty contents are ignored, as HF does. `normalizer` spells the normalized tokens.
  AddedTokens(std::vector<AddedToken> tokens, const Normalizer& normalizer);

  struct Match {
    size_t begin, end;  // byte offsets
    int32_t id;         // -1: text between tokens
  };
  // Splits `text` (valid UTF-8) with the tokens matched before normalization (normalized false)
  // or after it (true), appending the pieces in order; they cover the text with no gaps.
  void split(std::string_view text, bool normalized, std::vector<Match>& out) const;
  bool has(bool normalized) const { return !(normalized ? normalized_ : raw_).patterns.empty(); }

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  // What a token is called in decoding: its normalized spelling when it is matched normalized.
  const std::vector<std::string>& spellings() const { return spellings_; }

 private:
  struct Set {
    struct Pattern {
      std::string text;
      uint32_t token;  // index into tokens_
    };
    std::vector<Pattern> patterns;
    std::array<std::vector<uint32_t>, 256> by_first_byte;  // pattern indices, longest first
  };
  void add_pattern(Set& set, std::string text, uint32_t token);
  void split_with(const Set& set, std::string_view text, std::vector<Match>& out) const;

  std::vector<AddedToken> tokens_;
  std::vector<std::string> spellings_;
  Set raw_, normalized_;
};

}  // namespace sf::tok
