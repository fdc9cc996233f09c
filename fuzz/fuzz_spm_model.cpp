// The SentencePiece model reader (tokenizer.model) and its conversion to a tokenizer on arbitrary
// bytes. The first byte picks a tokenizer_config.json (none, Llama 2 legacy, legacy false, no
// prefix space with EOS); the rest is the model. Parsing returns or throws sf::Error, and what it
// returns keeps the reader's promises (pieces non-empty, UTF-8, unique, finite scores); a model
// that converts loads as a Tokenizer that encodes and decodes with ids in range, valid UTF-8 out,
// and token-by-token bytes equal to decode_bytes.
#include <cmath>
#include <set>
#include <string>
#include <string_view>

#include "core/error.hpp"
#include "harness.hpp"
#include "tokenizer/spm_model.hpp"
#include "tokenizer/spm_tokenizer.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/unicode.hpp"

namespace {

constexpr std::string_view kConfigs[] = {
    "",
    R"({"add_bos_token": true, "add_eos_token": false, "legacy": true})",
    R"({"legacy": false, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})",
    R"({"add_prefix_space": false, "add_bos_token": false, "add_eos_token": true})",
};

void exercise(const sf::tok::Tokenizer& t) {
  for (std::string_view text : {"", " ", "Hello world", " a  b\n\n\t12345 caf\xc3\xa9",
                                "\xe4\xb8\xad\xf0\x9f\x98\x80 <s>x</s><unk>", "\xff\xfe"}) {
    for (bool special : {false, true}) {
      const auto ids = t.encode(text, special);
      for (int32_t id : ids) SF_FUZZ_CHECK(id >= 0 && id < t.vocab_size());
      SF_FUZZ_CHECK(sf::tok::is_valid_utf8(t.decode(ids)));
      std::string streamed;
      for (int32_t id : ids) streamed += t.token_bytes(id);
      SF_FUZZ_CHECK(streamed == t.decode_bytes(ids));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view config = kConfigs[data[0] % std::size(kConfigs)];
  const std::span<const uint8_t> model(data + 1, size - 1);
  try {
    const sf::tok::SpmModel m = sf::tok::parse_spm_model(model);
    SF_FUZZ_CHECK(!m.pieces.empty());
    std::set<std::string_view> seen;
    for (const auto& p : m.pieces) {
      SF_FUZZ_CHECK(!p.piece.empty() && sf::tok::is_valid_utf8(p.piece));
      SF_FUZZ_CHECK(std::isfinite(p.score));
      SF_FUZZ_CHECK(seen.insert(p.piece).second);
    }
  } catch (const sf::Error&) {
    return 0;  // refusing a malformed file is the expected outcome
  }
  try {
    const auto c = sf::tok::tokenizer_json_from_spm(
        std::string_view(reinterpret_cast<const char*>(model.data()), model.size()), config);
    exercise(sf::tok::Tokenizer::from_tokenizer_json(c.tokenizer_json, c.tokenizer_config_json));
  } catch (const sf::Error&) {
    // An unsupported or inconsistent model is refused.
  }
  return 0;
}
