// Tokenizer's parts, shared by the files that build one (vocab_merges.cpp, tokenizer_json.cpp)
// and the one that runs it (tokenizer.cpp). Not part of the public API.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/added_tokens.hpp"
#include "tokenizer/bpe_model.hpp"
#include "tokenizer/decoder.hpp"
#include "tokenizer/normalizer.hpp"
#include "tokenizer/pre_tokenizer.hpp"
#include "tokenizer/tokenizer.hpp"

namespace sf::tok {

struct Tokenizer::Impl {
  BpeModel model;
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  AddedTokens added;
  Decoder decoder;
  std::vector<int32_t> prefix, suffix;  // what add_special_tokens adds around the text
  std::optional<int32_t> bos, eos;
  std::vector<int32_t> eos_ids;

  // Per id, over the model's vocabulary and the added tokens (filled by finish()):
  std::vector<std::string> spelling;  // what the decoder is given (HF's id_to_token)
  std::vector<std::string> bytes;     // token_bytes
  std::vector<uint8_t> flags;         // kUsed, kSpecial
  static constexpr uint8_t kUsed = 1, kSpecial = 2;
  int64_t num_tokens = 0;

  // Call once model, added and decoder are set: fills the per-id tables and eos_ids.
  void finish();
  void check_id(int32_t id) const;  // throws Error(InvalidArgument) naming the id
  bool find_id(int32_t id) const {
    return id >= 0 && static_cast<size_t>(id) < flags.size() && (flags[id] & kUsed);
  }
  std::optional<int32_t> find(std::string_view token) const;
};

}  // namespace sf::tok
