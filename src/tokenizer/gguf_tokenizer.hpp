// GGUF tokenizer metadata -> tokenizer.json (+ tokenizer_config.json), so that a GGUF model's
// tokenizer is the same Tokenizer, stored the same way, as an HF checkpoint's. The JSON is what
// transformers builds when it loads the GGUF (AutoTokenizer.from_pretrained(dir, gguf_file=...),
// transformers/integrations/gguf/gguf_tokenizer_mapping.py), which is the reference for its ids:
//   "gpt2"   byte-level BPE over the file's merges. Tokens spelled outside GPT-2's byte alphabet
//            are respelled from their UTF-8. `pre` picks the Split regex for "llama3",
//            "llama-bpe", "qwen2", ... (and refuses those whose regex SparseFlow does not
//            implement); every other `pre` (e.g. SmolLM2's "smollm") gets GPT-2's ByteLevel
//            regex, as in transformers, which is not always what llama.cpp splits by.
//   "llama"  SentencePiece-style BPE with byte fallback, Metaspace (prepend_scheme "first"),
//            Llama 2's decoder. Merges are the file's, or when it has none rebuilt from the
//            scores as transformers does (every split of a token into two tokens, by score).
// Added tokens: the tokens of type CONTROL (3) as special ones (for "gpt2" only those spelled in
// the byte alphabet), USER_DEFINED (4) as plain ones, and the bos/eos/unk/pad tokens. BOS/EOS are
// added by add_special_tokens when add_bos / add_eos say so. add_space_prefix is not used
// (transformers ignores it; a "llama" file always gets the leading "▁").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace sf::tok {

// tokenizer.ggml.* of a GGUF file, as read by the GGUF reader.
struct GgufTokenizerData {
  std::string model;  // tokenizer.ggml.model: "gpt2" or "llama"
  std::string pre;    // tokenizer.ggml.pre ("" when absent)
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> token_types;  // 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte
  std::vector<std::string> merges;   // "left right", highest priority first
  int64_t bos = -1, eos = -1, unk = -1, pad = -1;  // token ids, -1 when absent
  // tokenizer.ggml.add_bos_token etc. When a "llama" file lacks add_bos_token, set add_bos = true:
  // llama.cpp and transformers both add BOS then.
  bool add_bos = false, add_eos = false, add_space_prefix = false;
};

// Throws Error(Format) for inconsistent metadata (an id out of range, a malformed merge, a token
// that is not UTF-8) and Error(UnsupportedShape) for a model or pre-tokenizer not implemented.
std::string tokenizer_json_from_gguf(const GgufTokenizerData& d);

// {"bos_token": ..., "eos_token": ..., "unk_token": ..., "pad_token": ...} for the tokens the
// file names: pass it with the tokenizer.json to Tokenizer::from_tokenizer_json.
std::string tokenizer_config_json_from_gguf(const GgufTokenizerData& d);

}  // namespace sf::tok
