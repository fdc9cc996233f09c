// Hugging Face OPT config.json <-> sf::model::OptConfig. Unknown model types and architectures,
// missing fields and nonsensical values (zero layers, heads that do not divide the hidden size)
// are refused with a message naming the field, the value found and what was expected.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "model/weights.hpp"

namespace sf::format {

// Parses config.json text (the fuzzer's entry point). Throws Error(Format) for malformed JSON,
// Error(UnsupportedShape) for a well-formed config of a model SparseFlow does not run.
// `where` names the source in messages ("ckpt/config.json").
model::OptConfig parse_opt_config(std::string_view json_text, std::string_view where = "config.json");
model::OptConfig parse_opt_config_json(const nlohmann::json& j, std::string_view where = "config.json");

// The HF field names and values, with model_type "opt" and architectures ["OPTForCausalLM"], so
// that transformers' OPTConfig.from_pretrained reads it back to the same model.
nlohmann::json opt_config_to_json(const model::OptConfig& c);

}  // namespace sf::format
