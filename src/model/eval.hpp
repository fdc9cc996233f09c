// What a compressed model loses against its reference, token by token: the KL divergence of the
// next-token distributions KL(ref || model), whether the two agree on the most likely token, and
// each side's negative log-likelihood of the actual next token (as llama.cpp's `perplexity
// --kl-divergence` reports for quantization). Computed from logits in fp64.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <vector>

namespace sf::model {

struct TokenComparison {
  double kl = 0;                      // sum_v p_ref(v) (log p_ref(v) - log p_model(v)), nats
  bool same_top1 = true;              // argmax equal (ties to the lower id on both sides)
  double nll_ref = 0, nll_model = 0;  // -log p(target)
};

// One position: ref and model are the logits [vocab] of the same position, target the token that
// follows. Throws Error(InvalidArgument) when the sizes differ, a logit is NaN or the target is out
// of range.
TokenComparison compare_position(std::span<const float> ref, std::span<const float> model,
                                 int32_t target);

// Sums over the scored positions of a text.
class EvalAccumulator {
 public:
  void add(const TokenComparison& t);
  // The logits of one window [len, vocab] (row i predicts token i + 1 of `window`; the last row
  // predicts nothing), from the reference and the model.
  void add_window(std::span<const float> ref, std::span<const float> model,
                  std::span<const int32_t> window, int64_t vocab);

  int64_t positions() const { return int64_t(kl_.size()); }
  double mean_kl() const;
  double kl_std_error() const;         // of the mean: sample standard deviation / sqrt(n)
  double kl_quantile(double q) const;  // nearest-rank, q in [0, 1]
  double max_kl() const;
  double top1_agreement() const;  // fraction of positions
  double perplexity_ref() const;
  double perplexity_model() const;
  double perplexity_ratio() const { return perplexity_model() / perplexity_ref(); }
  nlohmann::ordered_json to_json() const;

 private:
  std::vector<double> kl_;
  int64_t same_top1_ = 0;
  double nll_ref_ = 0, nll_model_ = 0;
};

}  // namespace sf::model
