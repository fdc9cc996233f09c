#include "session/model_tokenizer.hpp"

#include "core/error.hpp"
#include "tokenizer/spm_tokenizer.hpp"

namespace sf::session {

tok::Tokenizer model_tokenizer(const model::Model& m) {
  if (!m.tokenizer_json().empty() || !m.tokenizer_model().empty()) {
    tok::SpmConversion spm;  // tokenizer.model of a checkpoint without tokenizer.json
    if (m.tokenizer_json().empty()) {
      spm = tok::tokenizer_json_from_spm(m.tokenizer_model(), m.tokenizer_config_json());
    }
    const bool converted = !spm.tokenizer_json.empty();
    auto t = tok::Tokenizer::from_tokenizer_json(
        converted ? spm.tokenizer_json : m.tokenizer_json(),
        converted ? spm.tokenizer_config_json : m.tokenizer_config_json());
    // Generation ends on any of the description's end ids (generation_config: Llama 3 instruct
    // ends a turn with <|eot_id|>, not with the tokenizer's eos).
    std::vector<int32_t> ends;
    const auto& c = m.config();
    if (c.eos_token_id >= 0) ends.push_back(int32_t(c.eos_token_id));
    for (int64_t id : c.extra_eos_ids) ends.push_back(int32_t(id));
    if (!ends.empty()) t.set_eos_ids(ends);
    return t;
  }
  if (m.vocab_json().empty() || m.merges_txt().empty())
    fail(Status::NotFound,
         "the model has no tokenizer (tokenizer.json, tokenizer.model, or vocab.json + "
         "merges.txt). Put it in the "
         "checkpoint directory (and re-run convert for a .sf file), or pass token ids instead of "
         "text (--ids on the command line).");
  return tok::Tokenizer::from_json_and_merges(m.vocab_json(), m.merges_txt());
}

bool model_has_tokenizer(const model::Model& m) {
  return !m.tokenizer_json().empty() || !m.tokenizer_model().empty() ||
         (!m.vocab_json().empty() && !m.merges_txt().empty());
}

}  // namespace sf::session
