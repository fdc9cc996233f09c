// The rotary tables and rotation (src/kernels/cpu/rope.cpp) against HF transformers' formulas as
// re-derived in numpy by tests/data/rope/make_cases.py (cases.json): every scaling (none, linear,
// llama3, yarn with its attention factor, truncated or not), full and partial rotary, head_dim 64,
// 80, 96 and 128, positions 1 and 4000. Also the rotate_half pairing, the pass-through of the
// non-rotary elements and the parameters HF would refuse.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/rope.hpp"

namespace sf::cpu {
namespace {

RopeParams params_of(const nlohmann::json& c) {
  RopeParams p;
  p.theta = c.at("theta").get<double>();
  p.rotary_dims = c.at("rotary_dims").get<int64_t>();
  const std::string s = c.at("scaling").get<std::string>();
  p.scaling = s == "linear"   ? RopeParams::Linear
              : s == "llama3" ? RopeParams::Llama3
              : s == "yarn"   ? RopeParams::Yarn
                              : RopeParams::None;
  p.factor = c.at("factor").get<double>();
  p.low_freq_factor = c.at("low_freq_factor").get<double>();
  p.high_freq_factor = c.at("high_freq_factor").get<double>();
  p.original_max_positions = c.at("original_max_positions").get<int64_t>();
  p.beta_fast = c.at("beta_fast").get<double>();
  p.beta_slow = c.at("beta_slow").get<double>();
  p.attention_factor = c.at("attention_factor_in").get<double>();
  p.yarn_truncate = c.at("truncate").get<bool>();
  return p;
}

nlohmann::json load_cases() {
  const std::string path = std::string(SF_TEST_DATA_DIR) + "/rope/cases.json";
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "cannot open " << path;
  std::stringstream ss;
  ss << f.rdbuf();
  return nlohmann::json::parse(ss.str());
}

// Both sides take the same fp32 steps; they differ only in fp32 pow (torch / numpy powf against
// fp64 pow rounded: <= 1 ulp each), which llama3's and yarn's few further fp32 operations carry on
// with a factor of at most ~2 (the ramp and the smoothing are convex combinations): 4 ulp.
constexpr double kInvFreqUlps = 4.0;

TEST(Rope, InvFreqMatchesHfFormulas) {
  const nlohmann::json cases = load_cases();
  ASSERT_GE(cases.at("cases").size(), 10u);
  for (const auto& c : cases.at("cases")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const RopeParams p = params_of(c);
    const std::vector<float> got = rope_inv_freq(p);
    const auto want = c.at("inv_freq").get<std::vector<double>>();
    ASSERT_EQ(got.size(), want.size());
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double ulps =
          std::abs(double(got[i]) - want[i]) / (std::abs(want[i]) * std::ldexp(1.0, -23));
      worst = std::max(worst, ulps);
      EXPECT_LE(ulps, kInvFreqUlps)
          << "inv_freq[" << i << "]: got " << got[i] << ", HF " << want[i];
    }
    std::printf("%-40s inv_freq worst %.1f ulp\n", c.at("name").get<std::string>().c_str(), worst);
    EXPECT_FLOAT_EQ(rope_attention_factor(p), float(c.at("attention_factor").get<double>()));
  }
}

// The rotation at positions 1 and 4000 against numpy's fp32 cos / sin (within a few ulp of the
// correctly rounded values ours are), given HF's table (one ulp of inv_freq moves the angle at
// position 4000 by up to 2.4e-4, far more than the rotation's own error): an output is
// a cos + b sin with |cos|, |sin| <= af, so its error is a few ulp of (|a| + |b|) af.
TEST(Rope, ApplyMatchesHfRotation) {
  const nlohmann::json cases = load_cases();
  for (const auto& c : cases.at("cases")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const RopeParams p = params_of(c);
    const std::vector<float> inv = c.at("inv_freq").get<std::vector<float>>();
    const float af = rope_attention_factor(p);
    for (const auto& a : c.at("apply")) {
      const int64_t heads = a.at("heads"), head_dim = a.at("head_dim"), pos = a.at("pos");
      std::vector<float> x = a.at("x").get<std::vector<float>>();
      const auto want = a.at("out").get<std::vector<float>>();
      const std::vector<float> in = x;
      apply_rope_cpu(x.data(), heads, head_dim, pos, inv, af);
      const int64_t half = p.rotary_dims / 2;
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t e = 0; e < head_dim; ++e) {
          const size_t i = size_t(h * head_dim + e);
          if (e >= p.rotary_dims) {  // pass-through: bit-exact
            EXPECT_EQ(x[i], in[i]) << "element " << e << " past the rotary part changed";
            continue;
          }
          const int64_t pe = e < half ? e + half : e - half;
          const double mag = (std::abs(in[i]) + std::abs(in[size_t(h * head_dim + pe)])) * af;
          EXPECT_NEAR(x[i], want[i], 8.0 * std::ldexp(1.0, -23) * mag + 1e-30)
              << "pos " << pos << " element " << e;
        }
    }
  }
}

// rotate_half: element i pairs with i + rotary_dims / 2 (not i ^ 1, GPT-J's interleaved pairs).
TEST(Rope, RotateHalfPairing) {
  RopeParams p;
  p.rotary_dims = 8;
  const std::vector<float> inv = rope_inv_freq(p);
  ASSERT_EQ(inv.size(), 4u);
  EXPECT_EQ(inv[0], 1.0f);
  std::vector<float> x(10, 0.0f);
  x[0] = 1.0f;  // pair (0, 4) at angle pos * 1
  x[9] = 3.0f;  // past the rotary part
  apply_rope_cpu(x.data(), 1, 10, 1, inv, 1.0f);
  EXPECT_FLOAT_EQ(x[0], std::cos(1.0f));
  EXPECT_FLOAT_EQ(x[4], std::sin(1.0f));
  for (int e : {1, 2, 3, 5, 6, 7, 8}) EXPECT_EQ(x[size_t(e)], 0.0f) << e;
  EXPECT_EQ(x[9], 3.0f);
  // Position 0 is the identity.
  std::vector<float> y = {0.5f, -2.0f, 3.0f, 7.0f, 1.0f, 2.0f, 3.0f, 4.0f};
  const std::vector<float> y0 = y;
  apply_rope_cpu(y.data(), 1, 8, 0, inv, 1.0f);
  EXPECT_EQ(y, y0);
}

TEST(Rope, RefusesWhatHfRefuses) {
  auto status_of = [](const RopeParams& p) {
    try {
      rope_inv_freq(p);
    } catch (const Error& e) {
      return e.status();
    }
    return Status::Ok;
  };
  RopeParams p;
  p.rotary_dims = 7;
  EXPECT_EQ(status_of(p), Status::InvalidArgument);
  p.rotary_dims = 0;
  EXPECT_EQ(status_of(p), Status::InvalidArgument);
  p.rotary_dims = 64;
  EXPECT_EQ(status_of(p), Status::Ok);
  p.theta = 0;
  EXPECT_EQ(status_of(p), Status::InvalidArgument);
  p.theta = 1e4;
  p.scaling = RopeParams::Llama3;
  p.factor = 8;
  EXPECT_EQ(status_of(p), Status::InvalidArgument);  // no original_max_positions
  p.original_max_positions = 8192;
  EXPECT_EQ(status_of(p), Status::Ok);
  p.high_freq_factor = p.low_freq_factor;
  EXPECT_EQ(status_of(p), Status::InvalidArgument);
  p.scaling = RopeParams::Yarn;
  p.original_max_positions = 0;
  EXPECT_EQ(status_of(p), Status::InvalidArgument);
  p.scaling = RopeParams::Linear;
  p.factor = 0;
  EXPECT_EQ(status_of(p), Status::InvalidArgument);
  std::vector<float> x(8), inv(5, 1.0f);
  EXPECT_THROW(apply_rope_cpu(x.data(), 1, 8, 3, inv, 1.0f),
               Error);  // 10 rotary dims in a head of 8
}

}  // namespace
}  // namespace sf::cpu
