// tokenizer.model (a SentencePiece model) + tokenizer_config.json -> tokenizer.json (+ the config
// with the special tokens it implies), so that a checkpoint shipping only tokenizer.model gets
// the same Tokenizer, stored the same way, as one shipping tokenizer.json.
//
// The reference is what transformers does with such a directory: AutoTokenizer gives
// LlamaTokenizerFast, which converts the model with LlamaConverter (convert_slow_tokenizer.py):
//   model       BPE over the pieces (id = index), merges rebuilt from the scores (the first three
//               pieces scored 0), unk_token = trainer_spec.unk_piece, fuse_unk, byte_fallback
//   added       CONTROL pieces as special tokens, USER_DEFINED ones as plain ones (split out of
//               the text before it is normalized), then tokenizer_config.json's
//               added_tokens_decoder, then the special tokens (bos/eos/unk/pad, default <s>, </s>,
//               <unk>) not added yet
//   legacy      (tokenizer_config "legacy", default true) normalizer Prepend("▁") + Replace(" ",
//               "▁"): every stretch between added tokens starts with "▁", as sentencepiece does
//   non-legacy  Metaspace(prepend_scheme "first", split false): only the text's start gets "▁"
//   add_prefix_space false: no "▁" prepended, and the decoder keeps the first space
//   post        BOS before the text when add_bos_token (default true), EOS after when
//               add_eos_token (default false), as LlamaTokenizerFast.update_post_processor
// For plain text (no special or added tokens written in it) the legacy conversion gives
// sentencepiece's own ids; tests/data/tokenizer/spm_cases.json records where the others differ.
//
// Refused with Status::UnsupportedShape, naming the option: a model other than BPE (Unigram, as T5
// and Gemma's tokenizer.model are, Word, Char), a tokenizer_class other than LlamaTokenizer, and
// the model options transformers' converter ignores, where its ids would differ from
// sentencepiece's (a normalization rule table such as nmt_nfkc, remove_extra_whitespaces, no
// whitespace escaping, whitespace as suffix, a denormalizer, add_dummy_prefix false with no
// add_prefix_space in the config). The message says how to get transformers' conversion anyway
// (save the tokenizer as tokenizer.json). Malformed files and configs: Status::Format.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace sf::tok {

struct SpmConversion {
  std::string tokenizer_json;
  // tokenizer_config.json with bos_token / eos_token / unk_token filled in where it left
  // LlamaTokenizerFast's defaults: pass both to Tokenizer::from_tokenizer_json.
  std::string tokenizer_config_json;
};

// model: the bytes of tokenizer.model; tokenizer_config_json: "" when the checkpoint has none.
SpmConversion tokenizer_json_from_spm(std::string_view model,
                                      std::string_view tokenizer_config_json);

}  // namespace sf::tok
