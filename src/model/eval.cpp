#include "model/eval.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace sf::model {

namespace {

// log sum_v exp(x_v), shifted by the maximum so that no exp overflows; the argmax rides along.
struct LogSumExp {
  double value = 0;
  size_t argmax = 0;
};
LogSumExp log_sum_exp(std::span<const float> x) {
  LogSumExp r;
  double mx = x[0];
  for (size_t v = 1; v < x.size(); ++v)
    if (x[v] > mx) {
      mx = x[v];
      r.argmax = v;
    }
  double s = 0;
  for (float e : x) s += std::exp(double(e) - mx);
  r.value = mx + std::log(s);
  return r;
}

}  // namespace

TokenComparison compare_position(std::span<const float> ref, std::span<const float> model,
                                 int32_t target) {
  if (ref.size() != model.size() || ref.empty())
    fail(Status::InvalidArgument,
         "compare_position: the reference has {} logits and the model {}; they must be the same "
         "non-empty vocabulary",
         ref.size(), model.size());
  if (target < 0 || size_t(target) >= ref.size())
    fail(Status::InvalidArgument,
         "compare_position: target token {} is outside the vocabulary [0, {})", target, ref.size());
  for (size_t v = 0; v < ref.size(); ++v)
    if (std::isnan(ref[v]) || std::isnan(model[v]))
      fail(Status::InvalidArgument, "compare_position: logit {} of the {} is NaN", v,
           std::isnan(ref[v]) ? "reference" : "model");
  const LogSumExp r = log_sum_exp(ref), m = log_sum_exp(model);
  TokenComparison t;
  double kl = 0;
  for (size_t v = 0; v < ref.size(); ++v) {
    const double lr = double(ref[v]) - r.value, lm = double(model[v]) - m.value;
    const double p = std::exp(lr);
    if (p > 0) kl += p * (lr - lm);
  }
  t.kl = std::max(0.0, kl);  // >= 0 exactly; rounding can leave -1e-17 for equal distributions
  t.same_top1 = r.argmax == m.argmax;
  t.nll_ref = r.value - double(ref[size_t(target)]);
  t.nll_model = m.value - double(model[size_t(target)]);
  return t;
}

void EvalAccumulator::add(const TokenComparison& t) {
  kl_.push_back(t.kl);
  same_top1_ += t.same_top1 ? 1 : 0;
  nll_ref_ += t.nll_ref;
  nll_model_ += t.nll_model;
}

void EvalAccumulator::add_window(std::span<const float> ref, std::span<const float> model,
                                 std::span<const int32_t> window, int64_t vocab) {
  const size_t len = window.size(), V = size_t(vocab);
  if (ref.size() != len * V || model.size() != len * V)
    fail(Status::InvalidArgument,
         "EvalAccumulator: a window of {} tokens needs {} x {} logits from each side, found {} "
         "and {}",
         len, len, V, ref.size(), model.size());
  for (size_t i = 0; i + 1 < len; ++i)
    add(compare_position(ref.subspan(i * V, V), model.subspan(i * V, V), window[i + 1]));
}

double EvalAccumulator::mean_kl() const {
  if (kl_.empty()) return 0;
  double s = 0;
  for (double k : kl_) s += k;
  return s / double(kl_.size());
}

double EvalAccumulator::kl_std_error() const {
  const size_t n = kl_.size();
  if (n < 2) return 0;
  const double mean = mean_kl();
  double ss = 0;
  for (double k : kl_) ss += (k - mean) * (k - mean);
  return std::sqrt(ss / double(n - 1) / double(n));
}

double EvalAccumulator::kl_quantile(double q) const {
  if (kl_.empty()) return 0;
  std::vector<double> s = kl_;
  std::sort(s.begin(), s.end());
  const double rank = std::ceil(std::clamp(q, 0.0, 1.0) * double(s.size()));
  return s[size_t(std::max(1.0, rank)) - 1];
}

double EvalAccumulator::max_kl() const {
  return kl_.empty() ? 0 : *std::max_element(kl_.begin(), kl_.end());
}

double EvalAccumulator::top1_agreement() const {
  return kl_.empty() ? 0 : double(same_top1_) / double(kl_.size());
}

double EvalAccumulator::perplexity_ref() const {
  return kl_.empty() ? 0 : std::exp(nll_ref_ / double(kl_.size()));
}

double EvalAccumulator::perplexity_model() const {
  return kl_.empty() ? 0 : std::exp(nll_model_ / double(kl_.size()));
}

nlohmann::ordered_json EvalAccumulator::to_json() const {
  return {{"positions", positions()},           {"kl_mean", mean_kl()},
          {"kl_std_error", kl_std_error()},     {"kl_median", kl_quantile(0.5)},
          {"kl_p99", kl_quantile(0.99)},        {"kl_max", max_kl()},
          {"top1_agreement", top1_agreement()}, {"perplexity_reference", perplexity_ref()},
          {"perplexity", perplexity_model()},   {"perplexity_ratio", perplexity_ratio()}};
}

}  // namespace sf::model
