// The tokenizer a model carries (vocab.json + merges.txt in the checkpoint or the .sf file), and
// the prompt convention the engine follows for it.
#pragma once
#include "model/weights.hpp"
#include "tokenizer/bpe.hpp"

namespace sf::session {

// Throws Error(NotFound) saying what to add when the model carries no tokenizer.
tok::Tokenizer model_tokenizer(const model::Model& m);

}  // namespace sf::session
