// The decoder of a tokenizer.json: how token spellings become text, step by step over the list
// of token strings exactly as HF's decoders do (decode), and what one token contributes to a
// stream of bytes (token_bytes).
//
// Streaming (token_bytes) gives each token's bytes on its own: byte-level tokens their bytes;
// SentencePiece tokens their text with "▁" as " " and <0xXX> as the byte. It does not apply the
// steps that look at neighbours or at the first token: Strip (Llama 2's decoder drops the space
// the first token starts with), Metaspace's first-token rule, and ByteFallback's U+FFFD per byte
// of an invalid run (a stream shows U+FFFD per maximal invalid sequence, Utf8Stream). A stream of
// a whole sequence therefore starts with the space that decode strips; a stream that continues
// text (generation after a prompt) wants that space.
#pragma once
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace sf::tok {

class Decoder {
 public:
  struct ByteLevel {};  // characters of GPT-2's alphabet -> bytes, then UTF-8 with U+FFFD
  struct Replace {      // in each token, `pattern` (a plain string) -> `content`
    std::string pattern, content;
  };
  struct ByteFallback {};  // runs of <0xXX> tokens -> their bytes, or U+FFFD per byte if invalid
  struct Fuse {};          // all tokens -> one
  struct Strip {           // up to `start` leading and `stop` trailing `content` chars per token
    char32_t content;
    size_t start, stop;
  };
  struct Metaspace {  // `replacement` -> " ", except in the first token, where it is dropped
    std::string replacement;
    bool prepend_never;  // prepend_scheme "never": the first token is like the others
  };
  using Step = std::variant<ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace>;

  // No decoder at all ("decoder": null): HF joins the tokens with spaces.
  static Decoder none();

  template <typename T>
  void add(T step) {
    steps_.emplace_back(std::move(step));  // in place: no Step temporary to move
  }
  bool byte_level() const;

  std::string decode(std::vector<std::string> tokens) const;
  std::string token_bytes(std::string_view token) const;

 private:
  std::vector<Step> steps_;
  bool join_with_spaces_ = false;
};

}  // namespace sf::tok
