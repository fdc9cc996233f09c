// eval's statistics against hand computations on tiny logits.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "model/eval.hpp"

namespace sf::model {
namespace {

std::vector<float> log_of(std::vector<double> p, float shift = 0) {
  std::vector<float> l;
  for (double v : p) l.push_back(float(std::log(v)) + shift);
  return l;
}

// p = (1/4, 1/2, 1/4), q = (1/4, 1/4, 1/2):
// KL(p || q) = 1/4 ln 1 + 1/2 ln 2 + 1/4 ln(1/2) = ln(2) / 4.
TEST(Eval, KlMatchesAHandComputation) {
  const auto ref = log_of({1, 2, 1});
  const auto model = log_of({1, 1, 2}, 3.5f);  // logits are defined up to a constant
  const TokenComparison t = compare_position(ref, model, 0);
  EXPECT_NEAR(t.kl, std::log(2.0) / 4, 1e-7);
  EXPECT_FALSE(t.same_top1);  // the reference's argmax is 1, the model's 2
  EXPECT_NEAR(t.nll_ref, std::log(4.0), 1e-6);
  EXPECT_NEAR(t.nll_model, std::log(4.0), 1e-6);
  // A lopsided pair, where the direction matters: p = (0.9, 0.1), q = (0.5, 0.5) give
  // KL(p || q) = 0.9 ln 1.8 + 0.1 ln 0.2 and KL(q || p) = 0.5 ln(5 / 9) + 0.5 ln 5.
  const TokenComparison u = compare_position(log_of({0.9, 0.1}), log_of({0.5, 0.5}), 1);
  EXPECT_NEAR(u.kl, 0.9 * std::log(1.8) + 0.1 * std::log(0.2), 1e-7);
  EXPECT_NEAR(compare_position(log_of({0.5, 0.5}), log_of({0.9, 0.1}), 1).kl,
              0.5 * std::log(5.0 / 9) + 0.5 * std::log(5.0), 1e-7);
  EXPECT_TRUE(u.same_top1);  // 0.5 / 0.5 ties go to the lower id, the reference's argmax
  EXPECT_NEAR(u.nll_ref, -std::log(0.1), 1e-6);
  EXPECT_NEAR(u.nll_model, std::log(2.0), 1e-6);
}

TEST(Eval, AModelAgainstItselfLosesNothing) {
  const std::vector<int32_t> window = {0, 2, 1, 3};
  const int64_t V = 4;
  std::vector<float> logits;
  for (int i = 0; i < 4; ++i)
    for (int v = 0; v < V; ++v) logits.push_back(float(std::sin(1.3 * i + 0.7 * v)) * 4);
  EvalAccumulator acc;
  acc.add_window(logits, logits, window, V);
  EXPECT_EQ(acc.positions(), 3);  // the last row predicts nothing
  EXPECT_EQ(acc.mean_kl(), 0.0);
  EXPECT_EQ(acc.max_kl(), 0.0);
  EXPECT_EQ(acc.top1_agreement(), 1.0);
  EXPECT_DOUBLE_EQ(acc.perplexity_ratio(), 1.0);
  // Perplexity by hand: exp of the mean of -log softmax(row i)[window[i + 1]].
  double nll = 0;
  for (int i = 0; i < 3; ++i) {
    double z = 0;
    for (int v = 0; v < V; ++v) z += std::exp(double(logits[size_t(i * V + v)]));
    nll += std::log(z) - logits[size_t(i * V + window[size_t(i + 1)])];
  }
  EXPECT_NEAR(acc.perplexity_model(), std::exp(nll / 3), 1e-9);
  const auto j = acc.to_json();
  EXPECT_EQ(j["kl_mean"], 0.0);
  EXPECT_EQ(j["top1_agreement"], 1.0);
}

TEST(Eval, SummaryStatistics) {
  EvalAccumulator acc;
  for (double kl : {0.4, 0.1, 0.3, 0.2}) acc.add({kl, kl < 0.25, 1.0, 1.0 + kl});
  EXPECT_NEAR(acc.mean_kl(), 0.25, 1e-15);
  // sample sd of {0.1..0.4} = sqrt(0.05 / 3); over sqrt(4)
  EXPECT_NEAR(acc.kl_std_error(), std::sqrt(0.05 / 3) / 2, 1e-12);
  EXPECT_EQ(acc.kl_quantile(0.5), 0.2);  // nearest rank: the 2nd of 4
  EXPECT_EQ(acc.kl_quantile(0.99), 0.4);
  EXPECT_EQ(acc.max_kl(), 0.4);
  EXPECT_EQ(acc.top1_agreement(), 0.5);
  EXPECT_NEAR(acc.perplexity_ref(), std::exp(1.0), 1e-12);
  EXPECT_NEAR(acc.perplexity_ratio(), std::exp(0.25), 1e-12);
}

TEST(Eval, RejectsMismatchedInputs) {
  const std::vector<float> a = {0, 1, 2}, b = {0, 1};
  EXPECT_THROW(compare_position(a, b, 0), Error);
  EXPECT_THROW(compare_position(a, a, 3), Error);
  const std::vector<float> nan = {0, std::nanf(""), 1};
  EXPECT_THROW(compare_position(a, nan, 0), Error);
  EvalAccumulator acc;
  const std::vector<int32_t> w = {0, 1};
  EXPECT_THROW(acc.add_window(a, a, w, 3), Error);  // two rows of 3 needed
}

}  // namespace
}  // namespace sf::model
