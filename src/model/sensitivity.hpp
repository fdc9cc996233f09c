// What each decoder linear costs when pruned, measured rather than guessed: the perplexity of the
// dense model with that one linear replaced by its 2:4 version. And the mixed plan built on it:
// which linears to keep dense so that the model with all the others pruned stays within a
// perplexity budget while saving as many bytes as it can.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "model/sparsegpt_model.hpp"
#include "model/weights.hpp"

namespace sf::model {

// Every 2:4 linear of `pruned` decompressed, by weight name: what the sensitivity measurements
// swap into the dense model.
std::map<std::string, PrunedWeight> decompressed_linears(const Model& pruned);

// Perplexity of `dense` with the weights named in `swap` replaced by `pruned`'s, over windows of
// `context` tokens (0: max_position_embeddings), without a progress bar of its own.
double perplexity_with(const Model& dense, const std::map<std::string, PrunedWeight>& pruned,
                       std::span<const std::string> swap, std::span<const int32_t> ids,
                       int64_t context);

struct LinearSensitivity {
  std::string name;  // "model.layers.3.mlp.up_proj.weight"
  int64_t layer = -1;
  double perplexity = 0;     // with this linear pruned alone
  double increase = 0;       // perplexity / dense perplexity - 1
  uint64_t bytes_saved = 0;  // dense bytes - 2:4 bytes (values + metadata) of this weight
};

// (done, total, name just measured)
using SensitivityProgress = std::function<void(size_t, size_t, const std::string&)>;

// One measurement per weight in `names` (each must be in `pruned`), in that order.
std::vector<LinearSensitivity> linear_sensitivity(const Model& dense,
                                                  const std::map<std::string, PrunedWeight>& pruned,
                                                  std::span<const std::string> names,
                                                  std::span<const int32_t> ids, int64_t context,
                                                  double dense_perplexity,
                                                  const SensitivityProgress& progress = {});

struct MixedPlan {
  double max_increase = 0;  // the budget: perplexity <= dense x (1 + max_increase)
  double dense_perplexity = 0;
  double perplexity = 0;                // measured with the plan: keep_dense dense, the rest 2:4
  std::vector<std::string> keep_dense;  // weight names, most harmful per byte saved first
  uint64_t dense_bytes = 0;             // every candidate linear dense
  uint64_t plan_bytes = 0;              // the candidates as the plan writes them
  std::vector<std::pair<size_t, double>> probes;  // (linears kept dense, measured perplexity)
};

// Keeps dense the linears that cost the most perplexity per byte saved, as few as the budget
// allows: sorts the candidates by increase / bytes_saved and finds by bisection the shortest head
// of that list whose keeping dense brings the measured perplexity within the budget (about
// log2(candidates) measurements; costs that add up roughly, as they do for small increases, make
// the measured perplexity fall as the head grows). Every probe is measured, none estimated.
MixedPlan plan_mixed_sparsity(const Model& dense, const std::map<std::string, PrunedWeight>& pruned,
                              const std::vector<LinearSensitivity>& sensitivity,
                              std::span<const int32_t> ids, int64_t context, double max_increase,
                              const std::function<void(size_t, double)>& on_probe = {});

}  // namespace sf::model
