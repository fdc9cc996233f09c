// GPT-2 byte-level BPE (the tokenizer OPT uses), reading Hugging Face's vocab.json + merges.txt and
// producing exactly the ids HF's GPT2Tokenizer / GPT2TokenizerFast produce.
//
// encode(text):
//   1. Invalid UTF-8 becomes U+FFFD per maximal invalid subpart (see unicode.hpp): the ids are
//      HF's ids for the text Python's bytes.decode("utf-8", "replace") gives. Valid input is
//      taken as is.
//   2. Special tokens written in the text ("</s>", "<pad>" for OPT) are split out and map to their
//      ids, as HF does for its registered special tokens (longest match at the leftmost position).
//   3. The rest is split by GPT-2's pre-tokenizer regex (pretokenize.hpp).
//   4. Each piece's bytes become vocabulary symbols through GPT-2's byte-to-unicode map, and are
//      merged pairwise by merge rank (lowest first, leftmost among equals) until no merge applies.
// No BOS is added; OPT's prompts start with "</s>" (id 2): use encode_with_bos.
//
// decode(ids): the tokens' bytes (inverse byte map) concatenated, then read as UTF-8 with invalid
// sequences replaced by U+FFFD, as HF's decode does. token_bytes(id) gives one token's raw bytes
// for streaming (a character may span tokens). A token containing a character outside the byte
// map (only possible in hand-made vocabularies) stands for its own UTF-8 bytes, as in HF's Rust
// ByteLevel decoder.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sf::tok {

// The tokens OPT's tokenizer_config registers as special (bos = eos = unk = "</s>", pad = "<pad>").
// "<s>" and "<unk>" are in OPT's vocabulary but are not special: in text they are ordinary BPE.
inline const std::vector<std::string> kOptSpecialTokens = {"</s>", "<pad>"};

class Tokenizer {
 public:
  // vocab_json: {"token": id, ...}; merges_txt: an optional "#version" line, then "left right" per
  // line, highest priority first. Special tokens missing from the vocabulary are ignored.
  // Throws Error(Format) naming the line or token when the files are malformed.
  static Tokenizer from_json_and_merges(std::string_view vocab_json, std::string_view merges_txt,
                                        const std::vector<std::string>& special_tokens =
                                            kOptSpecialTokens);
  // Throws Error(Io) when a file cannot be read.
  static Tokenizer from_files(const std::string& vocab_path, const std::string& merges_path,
                              const std::vector<std::string>& special_tokens = kOptSpecialTokens);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int32_t> encode(std::string_view text) const;  // no BOS; thread-safe
  std::vector<int32_t> encode_with_bos(std::string_view text, int32_t bos_id) const;

  // Throws Error(InvalidArgument) for an id that is not in the vocabulary.
  std::string decode(std::span<const int32_t> ids) const;        // UTF-8, invalid bytes -> U+FFFD
  std::string decode_bytes(std::span<const int32_t> ids) const;  // raw concatenated token bytes
  std::string token_bytes(int32_t id) const;

  // One more than the largest id: every id is < vocab_size(). Equals the number of tokens when
  // the ids are dense, as in every HF vocabulary.
  int64_t vocab_size() const { return static_cast<int64_t>(id_to_bytes_.size()); }
  int64_t num_tokens() const { return static_cast<int64_t>(token_to_id_.size()); }
  int64_t num_merges() const { return static_cast<int64_t>(merges_.size()); }
  std::optional<int32_t> token_id(std::string_view token) const;  // by its vocab.json spelling

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  struct Cache;

  Tokenizer();
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void bpe(std::string_view piece, std::vector<int32_t>& out) const;
  std::optional<Merge> find_merge(int32_t left, int32_t right) const;
  const std::string& bytes_of(int32_t id) const;  // throws for an unknown id

  std::unordered_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_bytes_;  // raw bytes of each token
  std::vector<bool> id_used_;             // false for gaps in the id range
  std::vector<int32_t> byte_ids_;         // [256] id of the single-byte token of each byte
  std::unordered_map<uint64_t, Merge> merges_;  // key: (left id << 32) | right id
  std::vector<std::pair<std::string, int32_t>> special_;  // text -> id
  std::unique_ptr<Cache> cache_;
};

}  // namespace sf::tok
