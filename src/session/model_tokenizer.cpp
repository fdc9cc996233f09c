#include "session/model_tokenizer.hpp"

#include "core/error.hpp"

namespace sf::session {

tok::Tokenizer model_tokenizer(const model::Model& m) {
  if (m.vocab_json().empty() || m.merges_txt().empty())
    fail(Status::NotFound,
         "the model has no tokenizer (vocab.json + merges.txt). Put both files in the checkpoint "
         "directory (and re-run convert for a .sf file), or pass token ids instead of text (--ids "
         "on the "
         "command line).");
  return tok::Tokenizer::from_json_and_merges(m.vocab_json(), m.merges_txt());
}

}  // namespace sf::session
