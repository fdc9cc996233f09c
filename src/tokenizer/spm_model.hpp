// A SentencePiece model file (tokenizer.model): the ModelProto message of sentencepiece's
// sentencepiece_model.proto, read without libprotobuf. Kept are the fields that decide how text
// becomes ids (the pieces, the model type, byte fallback, the special pieces, the normalizer's
// switches); every other field is skipped by its wire type. Fields a file omits take the
// .proto's defaults (proto2), so an absent model_type is UNIGRAM, as sentencepiece reads it.
//
// Field numbers (sentencepiece_model.proto):
//   ModelProto       1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec,
//                    5 denormalizer_spec
//   SentencePiece    1 piece (string), 2 score (float), 3 type (enum)
//   TrainerSpec      3 model_type, 24 treat_whitespace_as_suffix, 35 byte_fallback, 40..43
//                    unk/bos/eos/pad_id, 45..48 unk/bos/eos/pad_piece
//   NormalizerSpec   1 name, 2 precompiled_charsmap, 3 add_dummy_prefix,
//                    4 remove_extra_whitespaces, 5 escape_whitespaces, 6 normalization_rule_tsv
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace sf::tok {

enum class SpmType : int32_t {
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
};

enum class SpmModelType : int32_t { Unigram = 1, Bpe = 2, Word = 3, Char = 4 };

struct SpmPiece {
  std::string piece;   // valid UTF-8, not empty
  float score = 0.0f;  // finite
  SpmType type = SpmType::Normal;
};

struct SpmNormalizer {
  std::string name;
  size_t charsmap_bytes = 0;  // precompiled_charsmap: a rule table HF's Llama converter ignores
  size_t rule_tsv_bytes = 0;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
};

struct SpmModel {
  std::vector<SpmPiece> pieces;  // id = index; no piece twice
  SpmModelType model_type = SpmModelType::Unigram;
  bool byte_fallback = false, treat_whitespace_as_suffix = false;
  int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  std::string unk_piece = "<unk>", bos_piece = "<s>", eos_piece = "</s>", pad_piece = "<pad>";
  SpmNormalizer normalizer;
  bool has_denormalizer = false;  // a denormalizer_spec with rules (changes decoding)
};

// Throws Error(Format) naming the byte offset and field when the bytes are not a ModelProto
// (truncated, a length past the end, an over-long varint, a wire type the field cannot have) or
// when the pieces are unusable (none, empty, not UTF-8, repeated, a NaN or infinite score, an
// unknown type). What the pieces mean is checked by tokenizer_json_from_spm.
SpmModel parse_spm_model(std::span<const uint8_t> bytes);

}  // namespace sf::tok
