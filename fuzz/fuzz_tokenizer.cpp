// The tokenizer (fixture vocabulary, tests/data/tokenizer) on arbitrary bytes: encode must accept
// anything, and decoding its ids must give back the input with invalid UTF-8 repaired, both as a
// whole and token by token.
#include <string>
#include <string_view>

#include "harness.hpp"
#include "tokenizer/bpe.hpp"
#include "tokenizer/unicode.hpp"

#ifndef SF_FUZZ_TOKENIZER_DIR
#error "SF_FUZZ_TOKENIZER_DIR must name the folder holding vocab.json and merges.txt"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const sf::tok::Tokenizer tok = sf::tok::Tokenizer::from_files(
      SF_FUZZ_TOKENIZER_DIR "/vocab.json", SF_FUZZ_TOKENIZER_DIR "/merges.txt");
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto ids = tok.encode(text);
  SF_FUZZ_CHECK(ids.size() <= 3 * size);  // >= 1 byte per token; a bad byte becomes 3 (U+FFFD)
  for (int32_t id : ids) SF_FUZZ_CHECK(id >= 0 && id < tok.vocab_size());
  const std::string valid = sf::tok::to_valid_utf8(text);
  SF_FUZZ_CHECK(sf::tok::is_valid_utf8(valid));
  SF_FUZZ_CHECK(tok.decode(ids) == valid);
  std::string streamed;
  for (int32_t id : ids) streamed += tok.token_bytes(id);
  SF_FUZZ_CHECK(streamed == valid);
  // Encoding is a function of the repaired text alone, and the cache changes nothing.
  SF_FUZZ_CHECK(tok.encode(valid) == ids);
  return 0;
}
