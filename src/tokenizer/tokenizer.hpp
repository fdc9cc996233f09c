// A BPE tokenizer producing exactly the ids Hugging Face produces, loaded from:
//   - vocab.json + merges.txt (GPT-2 / OPT checkpoints): byte-level BPE with GPT-2's
//     pre-tokenizer; the given special tokens are split out of the text. No BOS is added.
//   - tokenizer.json (the `tokenizers` library's format, every HF checkpoint of Llama 2/3,
//     Mistral, Qwen2, SmolLM2, GPT-2), optionally with tokenizer_config.json: a model of type BPE
//     with its normalizer, pre-tokenizer, added tokens, post-processor and decoder (the parts
//     are in normalizer.hpp, pre_tokenizer.hpp, added_tokens.hpp, bpe_model.hpp, decoder.hpp).
//     A part or option this reader does not implement is refused with an error naming it, never
//     approximated: the ids would be silently wrong.
//   - a GGUF file's tokenizer metadata, through tokenizer_json_from_gguf (gguf_tokenizer.hpp).
//   - a SentencePiece BPE model (tokenizer.model of a checkpoint without tokenizer.json), through
//     tokenizer_json_from_spm (spm_tokenizer.hpp).
//
// encode(text, add_special_tokens) is HF's encode:
//   1. Invalid UTF-8 becomes U+FFFD per maximal invalid subpart (unicode.hpp): the ids are HF's
//      for the text Python's bytes.decode("utf-8", "replace") gives.
//   2. Added tokens written in the text are split out (added_tokens.hpp).
//   3. Each stretch between them is normalized, pre-tokenized into words, and each word encoded by
//      the BPE model.
//   4. With add_special_tokens, the post-processor's tokens go around the ids (BOS for Llama).
// encode(text) is encode(text, false): what OPT callers used, with encode_with_bos.
//
// decode(ids) is HF's decode(ids, skip_special_tokens=False): every token, special ones included,
// through the decoder (for Llama 2 that drops the space the first token starts with). token_bytes
// gives one token's bytes for streaming, see decoder.hpp; decode_bytes concatenates them.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
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
  static Tokenizer from_json_and_merges(
      std::string_view vocab_json, std::string_view merges_txt,
      const std::vector<std::string>& special_tokens = kOptSpecialTokens);
  // Throws Error(Io) when a file cannot be read.
  static Tokenizer from_files(const std::string& vocab_path, const std::string& merges_path,
                              const std::vector<std::string>& special_tokens = kOptSpecialTokens);

  // tokenizer_json: the text of tokenizer.json. tokenizer_config_json (optional, "" for none):
  // the text of tokenizer_config.json, whose bos_token / eos_token name the BOS and EOS tokens
  // and whose add_bos_token / add_eos_token, when present, decide what add_special_tokens adds
  // (as transformers rebuilds the post-processor from them). Throws Error(Format) naming the
  // field when either is malformed or uses something not implemented.
  static Tokenizer from_tokenizer_json(std::string_view tokenizer_json,
                                       std::string_view tokenizer_config_json = {});

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Thread-safe (a shared cache of words is locked).
  std::vector<int32_t> encode(std::string_view text) const;  // no special tokens added
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  std::vector<int32_t> encode_with_bos(std::string_view text, int32_t bos_id) const;

  // Throws Error(InvalidArgument) for an id that is not in the vocabulary.
  std::string decode(std::span<const int32_t> ids) const;        // HF's decode: valid UTF-8
  std::string decode_bytes(std::span<const int32_t> ids) const;  // concatenated token_bytes
  std::string token_bytes(int32_t id) const;

  // One more than the largest id (model vocabulary and added tokens): every id is below it.
  // Equals the number of tokens when the ids are dense, as in every HF vocabulary.
  int64_t vocab_size() const;
  int64_t num_tokens() const;
  int64_t num_merges() const;
  // By its spelling in the vocabulary (e.g. "Ġthe", "▁the") or an added token's content.
  std::optional<int32_t> token_id(std::string_view token) const;

  // BOS and EOS: tokenizer_config.json's bos_token / eos_token, else the post-processor's
  // first token before the text / last token after it. nullopt when neither says.
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  // What add_special_tokens puts before / after the text.
  std::span<const int32_t> special_prefix() const;
  std::span<const int32_t> special_suffix() const;
  // The ids that end generation: {eos_id()} unless set. Llama 3 instruct ends on several (its
  // generation_config's eos_token_id list): the caller sets them. Throws Error(InvalidArgument)
  // for an id outside the vocabulary. Not thread-safe against concurrent readers.
  const std::vector<int32_t>& eos_ids() const;
  void set_eos_ids(std::vector<int32_t> ids);
  bool is_eos(int32_t id) const;
  // Whether the id is an added token marked special (HF's skip_special_tokens would drop it).
  bool is_special(int32_t id) const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sf::tok
