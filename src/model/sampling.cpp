#include "model/sampling.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.hpp"

namespace sf::model {

int32_t argmax(std::span<const float> logits) {
  if (logits.empty()) fail(Status::InvalidArgument, "argmax of an empty logits row");
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[size_t(best)] ||
        (std::isnan(logits[size_t(best)]) && !std::isnan(logits[i])))
      best = int32_t(i);
  return best;
}

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {
  if (p.greedy) return;
  if (!(p.temperature > 0.0f) || !std::isfinite(p.temperature))
    fail(Status::InvalidArgument,
         "temperature must be a positive number, got {}; use --greedy for argmax decoding.",
         p.temperature);
  if (p.top_k < 0)
    fail(Status::InvalidArgument, "top-k must be >= 0 (0 keeps every token), got {}.", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    fail(Status::InvalidArgument, "top-p must be in (0, 1] (1 keeps every token), got {}.",
         p.top_p);
}

double Sampler::uniform01() {
  return double(rng_() >> 11) * 0x1.0p-53;
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (p_.greedy) return argmax(logits);
  const size_t v = logits.size();
  if (v == 0) fail(Status::InvalidArgument, "cannot sample from an empty logits row");
  // Candidates sorted by logit, descending; ties by id so the order never depends on the sort.
  std::vector<int32_t> idx(v);
  std::iota(idx.begin(), idx.end(), 0);
  auto before = [&](int32_t a, int32_t b) {
    const float la = std::isnan(logits[size_t(a)]) ? -INFINITY : logits[size_t(a)];
    const float lb = std::isnan(logits[size_t(b)]) ? -INFINITY : logits[size_t(b)];
    return la > lb || (la == lb && a < b);
  };
  size_t keep = v;
  if (p_.top_k > 0 && size_t(p_.top_k) < v) {
    keep = size_t(p_.top_k);
    std::partial_sort(idx.begin(), idx.begin() + ptrdiff_t(keep), idx.end(), before);
  } else {
    std::sort(idx.begin(), idx.end(), before);
  }
  // Softmax of logits / temperature over the kept candidates, in fp64.
  const double mx = double(logits[size_t(idx[0])]) / p_.temperature;
  std::vector<double> prob(keep);
  double sum = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    const float l = logits[size_t(idx[i])];
    prob[i] = std::isnan(l) ? 0.0 : std::exp(double(l) / p_.temperature - mx);
    sum += prob[i];
  }
  // Top-p (nucleus): the shortest prefix whose probability reaches top_p; at least one token.
  if (p_.top_p < 1.0f) {
    double cum = 0.0;
    size_t n = 0;
    while (n < keep) {
      cum += prob[n] / sum;
      ++n;
      if (cum >= double(p_.top_p)) break;
    }
    keep = n;
    sum = std::accumulate(prob.begin(), prob.begin() + ptrdiff_t(keep), 0.0);
  }
  const double u = uniform01() * sum;
  double cum = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    cum += prob[i];
    if (u < cum) return idx[i];
  }
  return idx[keep - 1];  // u within rounding of sum
}

}  // namespace sf::model
