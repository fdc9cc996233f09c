// The BPE model of a tokenizer: a vocabulary, merge rules by rank, and how a word becomes its
// initial symbols, in one of two ways:
//   byte-level  (GPT-2, Llama 3, Qwen2, SmolLM2) each byte of the word is one symbol: the token
//               spelling the byte in GPT-2's alphabet (byte_level.hpp); a byte the vocabulary
//               lacks is the unknown token, or nothing when there is none (as in HF: SmolLM2's
//               vocabulary has no token for 0x04, and HF drops that byte)
//   characters  (SentencePiece-style: Llama 2, Mistral) each character is one symbol when the
//               vocabulary has it; otherwise, with byte_fallback, its UTF-8 bytes as the tokens
//               <0x00>..<0xFF>; otherwise the unknown token (consecutive ones fused with fuse_unk),
//               or nothing when there is none
// Then pairs merge, lowest rank first and leftmost among equals, until no rule applies; with
// ignore_merges a word that is itself in the vocabulary is that token, unmerged. This is HF's
// `tokenizers` BPE, down to which queued merges it treats as stale.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sf::tok {

struct StringHash {  // lets maps keyed by std::string be searched with a string_view
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct MergeRule {
  int32_t left, right, merged;  // token ids
};

struct BpeOptions {
  bool byte_level = true;
  bool byte_fallback = false;
  bool fuse_unk = false;
  bool ignore_merges = false;
  int32_t unk_id = -1;  // -1: no unknown token
};

class BpeModel {
 public:
  BpeModel();
  // vocab: token spelling -> id; merges in rank order (a repeated pair takes its later rank).
  BpeModel(Vocab vocab, const std::vector<MergeRule>& merges, BpeOptions options);
  BpeModel(BpeModel&&) noexcept;
  BpeModel& operator=(BpeModel&&) noexcept;
  ~BpeModel();

  // Appends the ids of one word: raw bytes (byte-level) or UTF-8 text. Thread-safe.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  // A SentencePiece-style word is a whole stretch of text ("▁The▁cat"), too long to cache. When
  // every merge that makes a token with `marker` ("▁") after its first character makes a run of
  // markers only (Llama's "▁▁▁▁"), no merge joins across the start of a run of markers, so
  // encoding the pieces that start there separately gives the same ids, and those pieces recur.
  // Turns that on when it holds (and the model is not byte-level and has no ignore_merges, which
  // would look the whole word up); returns whether it did.
  bool split_words_at(std::string_view marker);

  const Vocab& vocab() const { return vocab_; }
  const BpeOptions& options() const { return options_; }
  int64_t num_merges() const { return static_cast<int64_t>(merges_.size()); }

 private:
  struct Merge {
    int32_t rank, merged;
  };
  struct Cache;
  void initial_symbols(std::string_view word, std::vector<int32_t>& ids) const;
  void merge(std::vector<int32_t>& ids) const;
  void encode_piece(std::string_view word, std::vector<int32_t>& out) const;
  const Merge* find_merge(int32_t left, int32_t right) const;

  Vocab vocab_;
  BpeOptions options_;
  std::unordered_map<uint64_t, Merge> merges_;  // key: (left << 32) | right
  std::vector<int32_t> byte_ids_;    // [256]: the byte's token (byte-level) or <0xXX> (-1: none)
  std::vector<int32_t> ascii_ids_;   // [128]: the one-character token of each ASCII character
  Vocab raw_words_;                  // byte-level with ignore_merges: a token's bytes -> id
  std::string marker_;               // split_words_at; empty: words are encoded whole
  std::vector<std::string> merged_;  // each merge's result, until split_words_at checks them
  std::unique_ptr<Cache> cache_;
};

}  // namespace sf::tok
