// The tokenizer a model carries (tokenizer.json + tokenizer_config.json, or OPT's vocab.json +
// merges.txt, in the checkpoint, the GGUF metadata or the .sf file).
#pragma once
#include "model/weights.hpp"
#include "tokenizer/bpe.hpp"

namespace sf::session {

// Throws Error(NotFound) saying what to add when the model carries no tokenizer.
tok::Tokenizer model_tokenizer(const model::Model& m);
bool model_has_tokenizer(const model::Model& m);

}  // namespace sf::session
