// What the activation predictors cost in output quality, measured on the CPU: the model run twice
// over the same tokens, once in full and once computing each FFN only over the neurons the stored
// predictors select (every other neuron's pre-activation set to 0 before the activation, which is
// what the offloaded engine computes: it never touches an unpredicted neuron). Reported: both
// perplexities, the greedy (argmax) agreement and the logits' relative L2 error between the runs,
// and the predictors' recall and precision on these tokens. `sparseflow perplexity --ffn-neurons
// predicted` prints it; docs/OFFLOAD.md states the recall that keeps perplexity within 1%.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

namespace sf::model {
class Model;
}
namespace sf::offload {

class NeuronStore;

struct PredictorQuality {
  double ppl_full = 0, ppl_predicted = 0;
  double logit_rel_l2 = 0;      // || logits_pred - logits_full || / || logits_full ||, all positions
  double greedy_agreement = 0;  // share of positions whose argmax is the same
  double recall = 0, precision = 0, predicted_fraction = 0, active_fraction = 0;  // over rows, layers, neurons
  int64_t tokens = 0, predicted_tokens = 0, windows = 0;
  double ppl_change() const { return ppl_full > 0 ? ppl_predicted / ppl_full - 1 : 0; }
  nlohmann::ordered_json to_json() const;
  std::string table() const;
};

// Throws Error(InvalidArgument) when the store has no predictors (run `sparseflow calibrate`), or as
// model::perplexity does for the context and the tokens. context: tokens per window (0: max positions).
PredictorQuality measure_predictor_quality(const model::Model& model, const NeuronStore& store,
                                           std::span<const int32_t> ids, int64_t context = 0);

}  // namespace sf::offload
