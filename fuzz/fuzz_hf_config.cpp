// sf::format::parse_opt_config on arbitrary text. A config it accepts must survive the round trip
// through opt_config_to_json unchanged (that JSON is what the .sf writer stores).
#include <string_view>

#include "core/error.hpp"
#include "format/hf_config.hpp"
#include "harness.hpp"

namespace {

bool same(const sf::model::OptConfig& a, const sf::model::OptConfig& b) {
  return a.vocab_size == b.vocab_size && a.hidden_size == b.hidden_size &&
         a.num_hidden_layers == b.num_hidden_layers && a.ffn_dim == b.ffn_dim &&
         a.num_attention_heads == b.num_attention_heads &&
         a.max_position_embeddings == b.max_position_embeddings &&
         a.word_embed_proj_dim == b.word_embed_proj_dim &&
         a.do_layer_norm_before == b.do_layer_norm_before && a.enable_bias == b.enable_bias &&
         a.layer_norm_elementwise_affine == b.layer_norm_elementwise_affine &&
         a.tie_word_embeddings == b.tie_word_embeddings &&
         a.activation_function == b.activation_function && a.pad_token_id == b.pad_token_id &&
         a.bos_token_id == b.bos_token_id && a.eos_token_id == b.eos_token_id;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  sf::model::OptConfig config;
  try {
    config = sf::format::parse_opt_config(text, "fuzz/config.json");
  } catch (const sf::Error&) {
    return 0;  // refused: the expected outcome for most inputs
  }
  // Accepted: the sizes must be usable, and writing it out must give the same config back.
  SF_FUZZ_CHECK(config.hidden_size > 0 && config.num_attention_heads > 0);
  SF_FUZZ_CHECK(config.hidden_size % config.num_attention_heads == 0);
  SF_FUZZ_CHECK(config.num_hidden_layers > 0 && config.vocab_size > 0 && config.ffn_dim > 0);
  const auto json = sf::format::opt_config_to_json(config);
  const auto again = sf::format::parse_opt_config(json.dump(), "round trip");
  SF_FUZZ_CHECK(same(config, again));
  return 0;
}
