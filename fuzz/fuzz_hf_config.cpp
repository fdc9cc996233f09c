// sf::format::parse_hf_config on arbitrary text. A config it accepts must survive the round trip
// through hf_config_json unchanged (that JSON is what the .sf writer stores).
#include <string_view>

#include "core/error.hpp"
#include "format/hf_config.hpp"
#include "harness.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  sf::arch::ModelDesc config;
  try {
    config = sf::format::parse_hf_config(text, "fuzz/config.json");
  } catch (const sf::Error&) {
    return 0;  // refused: the expected outcome for most inputs
  }
  // Accepted: the sizes must be usable, and writing it out must give the same description back.
  SF_FUZZ_CHECK(config.hidden_size > 0 && config.num_attention_heads > 0 && config.head_dim > 0);
  SF_FUZZ_CHECK(config.num_attention_heads % config.num_key_value_heads == 0);
  SF_FUZZ_CHECK(config.num_hidden_layers > 0 && config.vocab_size > 0 && config.ffn_dim > 0);
  const auto json = sf::format::hf_config_json(config);
  const auto again = sf::format::parse_hf_config(json.dump(), "round trip");
  SF_FUZZ_CHECK(config == again);
  return 0;
}
