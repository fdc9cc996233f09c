// Hugging Face config.json <-> arch::ModelDesc for the architectures SparseFlow runs: OPT
// (OPTForCausalLM), Llama (LlamaForCausalLM: Llama 2 and 3, SmolLM2), Mistral, Qwen2 and GPT-2.
// Fields a config leaves out take the defaults of the transformers config class of its model_type,
// so a hand-written config means what it would mean to transformers. Unknown model types and
// architectures, malformed fields and nonsensical values (zero layers, heads that do not divide)
// are refused with a message naming the field, the value found and what was expected; features the
// engines do not implement (dynamic NTK rope, per-layer sliding windows) are refused, never
// ignored.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "arch/model_desc.hpp"

namespace sf::format {

// Parses config.json text (the fuzzer's entry point). Throws Error(Format) for malformed JSON,
// Error(UnsupportedShape) for a well-formed config of a model SparseFlow does not run.
// `where` names the source in messages ("ckpt/config.json").
arch::ModelDesc parse_hf_config(std::string_view json_text, std::string_view where = "config.json");
arch::ModelDesc parse_hf_config_json(const nlohmann::json& j,
                                     std::string_view where = "config.json");

// generation_config.json: its eos_token_id (an id or a list: Llama 3 instruct ends a turn with
// <|eot_id|>) joins the description's end-of-sequence ids.
void apply_generation_config(arch::ModelDesc& d, const nlohmann::json& j, std::string_view where);

// The config.json of the description's architecture, with HF's field names and the
// architectures list, so that transformers' AutoConfig reads it back to the same model (and
// parse_hf_config_json gives back an equal description). This is what `.sf` headers store.
nlohmann::json hf_config_json(const arch::ModelDesc& d);

}  // namespace sf::format
