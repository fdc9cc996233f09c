// Pieces of the tokenizer.json that transformers builds when it converts a tokenizer stored in
// another form into a `tokenizers` one: a GGUF file's metadata (gguf_tokenizer.hpp) and a
// SentencePiece model (spm_tokenizer.hpp). Each follows transformers' code step for step, so that
// the ids are those AutoTokenizer gives.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace sf::tok::hf {

// nlohmann::json, not ordered_json: ordered_json finds keys by linear search, which is quadratic
// over a 49152-token vocabulary. HF reads the objects in any key order.
using Json = nlohmann::json;

// The vocabulary as transformers' dict {token: index}: a repeated token keeps its last index.
struct VocabBuilder {
  Json object = Json::object();
  std::unordered_map<std::string, int32_t> ids;
  void add(const std::string& token, int32_t id) {
    object[token] = id;
    ids[token] = id;
  }
};

// transformers' generate_merges(vocab, scores): every split of a token into two tokens of the
// vocabulary, ordered within a token by the parts' ids, then all by score, left length and
// right length (code points), descending and stably. tokens[i] has scores[i] (the shorter list
// decides how many are scored). Scores must not be NaN.
Json merges_from_scores(std::span<const std::string> tokens, std::span<const float> scores,
                        const VocabBuilder& vocab);

// An added token with the flags of tokenizers' AddedToken.
struct AddedSpec {
  std::string content;
  bool special = false;
  bool normalized = false;
  bool lstrip = false, rstrip = false, single_word = false;
};

// HF's added vocabulary as transformers fills it: an id from the vocabulary when the content is
// in it, else the next id after the vocabulary and the tokens added so far.
class AddedBuilder {
 public:
  explicit AddedBuilder(const VocabBuilder& vocab) : vocab_(vocab) {}
  // A content added before keeps its id and flags; only `special` can still turn on (HF's set of
  // special tokens only grows).
  void add(const AddedSpec& token);
  void add(const std::string& content, bool special) { add(AddedSpec{content, special}); }
  bool has(const std::string& content) const { return index_.contains(content); }
  std::optional<int32_t> id(const std::string& content) const;
  // The content of the added token with this id, if any.
  const std::string* content_of(int32_t id) const;
  // The id add() would give a content not added yet.
  int32_t next_id(const std::string& content) const;
  Json to_json() const;

 private:
  struct Token {
    AddedSpec spec;
    int32_t id;
  };
  const VocabBuilder& vocab_;
  std::vector<Token> tokens_;
  std::unordered_map<std::string, size_t> index_;
  int32_t max_id_ = -1;
};

// TemplateProcessing putting `bos` before and `eos` after each sequence (either may be absent).
Json template_processing(const std::optional<std::string>& bos, std::optional<int32_t> bos_id,
                         const std::optional<std::string>& eos, std::optional<int32_t> eos_id);

// Llama's decoder: "▁" -> " ", byte fallback, fuse, and (strip_space) the leading space dropped.
Json llama_decoder(bool strip_space);

}  // namespace sf::tok::hf
