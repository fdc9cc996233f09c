// Sampling: greedy ties, seeded determinism, top-k / top-p truncation, and that sampled frequencies
// follow softmax(logits / T). Frequency bounds: with 40000 draws the standard error of a frequency
// p is sqrt(p(1-p)/40000) <= 0.0025, so 0.015 is 6 standard errors (a false failure ~1e-9).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "model/sampling.hpp"

namespace sf::model {
namespace {

TEST(Sampling, ArgmaxTakesLowestIndexOnTiesAndSkipsNaN) {
  EXPECT_EQ(argmax(std::vector<float>{1, 3, 3, 2}), 1);
  EXPECT_EQ(argmax(std::vector<float>{NAN, -5, -7}), 1);
  EXPECT_EQ(argmax(std::vector<float>{-INFINITY, -INFINITY}), 0);
  Sampler g(SamplingParams{});
  EXPECT_EQ(g.sample(std::vector<float>{0.1f, 0.7f, 0.2f}), 1);
}

std::vector<double> frequencies(const SamplingParams& p, const std::vector<float>& logits, int n) {
  Sampler s(p);
  std::vector<double> f(logits.size(), 0.0);
  for (int i = 0; i < n; ++i) f[size_t(s.sample(logits))] += 1.0;
  for (auto& e : f) e /= n;
  return f;
}

TEST(Sampling, FollowsSoftmaxWithTemperature) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                     std::log(0.05f)};
  SamplingParams p;
  p.greedy = false;
  p.seed = 42;
  auto f = frequencies(p, logits, 40000);
  const double want1[] = {0.5, 0.3, 0.15, 0.05};
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(f[i], want1[i], 0.015) << i;
  // T = 2: p_i proportional to sqrt(q_i).
  p.temperature = 2.0f;
  f = frequencies(p, logits, 40000);
  double z = 0;
  for (double q : want1) z += std::sqrt(q);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(f[i], std::sqrt(want1[i]) / z, 0.015) << i;
}

TEST(Sampling, TopKAndTopPTruncate) {
  const std::vector<float> logits = {std::log(0.1f), std::log(0.5f), std::log(0.3f),
                                     std::log(0.1f)};
  SamplingParams p;
  p.greedy = false;
  p.seed = 3;
  p.top_k = 2;  // {1: 0.5, 2: 0.3} renormalised: 0.625 / 0.375
  auto f = frequencies(p, logits, 40000);
  EXPECT_EQ(f[0], 0.0);
  EXPECT_EQ(f[3], 0.0);
  EXPECT_NEAR(f[1], 0.625, 0.015);
  p.top_k = 0;
  p.top_p = 0.75f;  // 0.5 < 0.75 <= 0.5 + 0.3: keeps ids 1 and 2
  f = frequencies(p, logits, 40000);
  EXPECT_EQ(f[0] + f[3], 0.0);
  EXPECT_NEAR(f[2], 0.375, 0.015);
  p.top_p = 0.2f;  // the single most likely token
  f = frequencies(p, logits, 1000);
  EXPECT_EQ(f[1], 1.0);
  p.top_p = 1.0f;
  p.top_k = 1;
  f = frequencies(p, logits, 1000);
  EXPECT_EQ(f[1], 1.0);
}

TEST(Sampling, SameSeedSameTokensOtherSeedOtherTokens) {
  std::vector<float> logits(100);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(std::sin(double(i)));
  SamplingParams p;
  p.greedy = false;
  p.temperature = 0.8f;
  p.top_k = 50;
  p.top_p = 0.9f;
  p.seed = 1234;
  auto draw = [&](uint64_t seed) {
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.sample(logits));
    return out;
  };
  EXPECT_EQ(draw(1234), draw(1234));
  EXPECT_NE(draw(1234), draw(1235));
}

TEST(Sampling, RejectsBadParameters) {
  SamplingParams p;
  p.greedy = false;
  p.temperature = 0.0f;
  EXPECT_THROW(Sampler{p}, Error);
  p.temperature = 1.0f;
  p.top_p = 0.0f;
  EXPECT_THROW(Sampler{p}, Error);
  p.top_p = 1.5f;
  EXPECT_THROW(Sampler{p}, Error);
  p.top_p = 1.0f;
  p.top_k = -1;
  EXPECT_THROW(Sampler{p}, Error);
}

}  // namespace
}  // namespace sf::model
