// Masks and validation against brute-force references.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "core/error.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::s24 {
namespace {

// Independent reference: the kept pair {a, b} is the one pair for which every kept element ranks
// above every dropped one (rank: NaN highest, then by value, ties to the lower index).
bool ranks_above(double x, int ix, double y, int iy) {
  const bool nx = std::isnan(x), ny = std::isnan(y);
  if (nx != ny) return nx;
  if (!nx && x != y) return x > y;
  return ix < iy;
}
std::array<uint8_t, 4> reference_keep(const double (&s)[4]) {
  std::array<uint8_t, 4> best{};
  int found = 0;
  for (int a = 0; a < 4; ++a)
    for (int b = a + 1; b < 4; ++b) {
      bool ok = true;
      for (int k : {a, b})
        for (int d = 0; d < 4; ++d)
          if (d != a && d != b && !ranks_above(s[k], k, s[d], d)) ok = false;
      if (ok) {
        best = {};
        best[size_t(a)] = best[size_t(b)] = 1;
        ++found;
      }
    }
  EXPECT_EQ(found, 1);
  return best;
}

TEST(Masks, MagnitudeAllSixPatternsAndTies) {
  // Each of the 6 patterns wins once; then ties, all-zero, equal-magnitude signs.
  const std::vector<std::array<float, 4>> groups = {
      {5, 4, 1, 0},   {5, 1, 4, 0},   {5, 0, 1, 4},     {1, 5, 4, 0},    {0, 5, 1, 4},
      {0, 1, 5, 4},   {0, 0, 0, 0},   {1, 1, 1, 1},     {-2, 2, -2, 2},  {0, 3, 3, 3},
      {-0.0f, 0, 0, 0}, {1, -7, 7, 1}, {0.5f, 0.5f, 0.25f, 0.5f}};
  const std::vector<std::array<uint8_t, 4>> expect = {
      {1, 1, 0, 0}, {1, 0, 1, 0}, {1, 0, 0, 1}, {0, 1, 1, 0}, {0, 1, 0, 1}, {0, 0, 1, 1}, {1, 1, 0, 0},
      {1, 1, 0, 0}, {1, 1, 0, 0}, {0, 1, 1, 0}, {1, 1, 0, 0}, {0, 1, 1, 0}, {1, 1, 0, 0}};
  std::vector<float> w;
  for (const auto& g : groups) w.insert(w.end(), g.begin(), g.end());
  const auto mask = magnitude_mask({w.data(), DType::F32, int64_t(groups.size()), 4});
  for (size_t r = 0; r < groups.size(); ++r)
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(mask[r * 4 + i], expect[r][i]) << "group " << r << " element " << i;
}

TEST(Masks, NaNAndInfRankAboveEverything) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> w = {1, nan, 5, 3,      // NaN kept, 5 kept
                                inf, nan, 1e30f, 0,  // NaN and Inf
                                -inf, 1, inf, 2,     // both infinities tie: lower index first
                                nan, 1, 2, -nan};    // two NaNs (any sign/payload) beat numbers
  const auto mask = magnitude_mask({w.data(), DType::F32, 4, 4});
  const std::vector<uint8_t> expect = {0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1};
  EXPECT_EQ(mask, expect);
}

TEST(Masks, RandomAgainstBruteForceAllDtypes) {
  std::mt19937 rng(7);
  // Few distinct values so ties are frequent; sprinkle NaN, Inf, -0.0.
  const float pool[] = {0.0f, -0.0f, 1.0f, -1.0f, 2.0f, -2.0f, 0.5f, 3.0f, -3.0f,
                        std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                        std::numeric_limits<float>::quiet_NaN()};
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    const int64_t rows = 37, cols = 44;
    std::vector<uint8_t> buf(size_t(rows * cols) * dtype_size(dt));
    std::vector<float> act(static_cast<size_t>(cols));
    for (size_t i = 0; i < size_t(rows * cols); ++i) store_from_float(buf.data(), dt, i, pool[rng() % 12]);
    for (auto& a : act) a = float(rng() % 4) * 0.5f;  // includes 0: Inf * 0 = NaN ranks highest
    const MatrixView v{buf.data(), dt, rows, cols};
    const auto mm = magnitude_mask(v);
    const auto wm = wanda_mask(v, act);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g = 0; g < cols / 4; ++g) {
        double sm[4], sw[4];
        for (int i = 0; i < 4; ++i) {
          const double x = load_as_float(buf.data(), dt, size_t(r * cols + 4 * g + i));
          sm[i] = std::fabs(x);
          sw[i] = std::fabs(x) * double(act[size_t(4 * g + i)]);
        }
        const auto em = reference_keep(sm), ew = reference_keep(sw);
        for (int i = 0; i < 4; ++i) {
          ASSERT_EQ(mm[size_t(r * cols + 4 * g + i)], em[size_t(i)]) << dtype_name(dt) << " r" << r << " g" << g;
          ASSERT_EQ(wm[size_t(r * cols + 4 * g + i)], ew[size_t(i)]) << dtype_name(dt) << " r" << r << " g" << g;
        }
      }
  }
}

TEST(Masks, WandaUsesActivationNorms) {
  // Magnitude would keep columns 0,1; the norms make 2,3 win.
  const std::vector<float> w = {4, 3, 2, 1};
  const std::vector<float> act = {0.1f, 0.1f, 10.0f, 10.0f};
  const auto m = wanda_mask({w.data(), DType::F32, 1, 4}, act);
  EXPECT_EQ(m, (std::vector<uint8_t>{0, 0, 1, 1}));
  EXPECT_THROW(wanda_mask({w.data(), DType::F32, 1, 4}, std::span<const float>(act.data(), 3)), Error);
}

TEST(Masks, ApplyMaskAndFindViolation) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  const int64_t rows = 9, cols = 24;
  std::vector<uint16_t> w(size_t(rows * cols));
  for (auto& h : w) h = float_to_half(nd(rng));
  const MatrixView v{w.data(), DType::F16, rows, cols};
  ASSERT_TRUE(find_violation(v).has_value());
  const auto mask = magnitude_mask(v);
  apply_mask(w.data(), DType::F16, rows, cols, mask);
  EXPECT_FALSE(find_violation(v).has_value());
  for (size_t i = 0; i < w.size(); ++i)
    if (!mask[i]) {
      EXPECT_EQ(w[i], 0);
    }
  // Violations: the first in row-major order; NaN counts as nonzero, -0.0 does not.
  w[size_t(5 * cols + 8)] = w[size_t(5 * cols + 9)] = w[size_t(5 * cols + 10)] = float_to_half(1.0f);
  w[size_t(5 * cols + 11)] = 0x8000;  // -0.0
  w[size_t(7 * cols + 0)] = w[size_t(7 * cols + 1)] = w[size_t(7 * cols + 2)] = w[size_t(7 * cols + 3)] = 0x7e00;
  auto viol = find_violation(v);
  ASSERT_TRUE(viol.has_value());
  EXPECT_EQ(viol->row, 5);
  EXPECT_EQ(viol->group, 2);
  EXPECT_EQ(viol->nonzeros, 3);
  w[size_t(5 * cols + 8)] = 0;
  viol = find_violation(v);
  ASSERT_TRUE(viol.has_value());
  EXPECT_EQ(viol->row, 7);
  EXPECT_EQ(viol->group, 0);
  EXPECT_EQ(viol->nonzeros, 4);
}

TEST(Masks, ShapeErrorsSayWhatIsRequired) {
  std::vector<float> w(12, 1.0f);
  try {
    magnitude_mask({w.data(), DType::F32, 2, 6});
    FAIL() << "cols % 4 != 0 must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::UnsupportedShape);
    EXPECT_NE(std::string(e.what()).find("multiple of 4"), std::string::npos) << e.what();
  }
  try {
    find_violation({w.data(), DType::F32, 0, 4});
    FAIL() << "an empty matrix must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::UnsupportedShape);
  }
  EXPECT_THROW(compress({w.data(), DType::F32, 3, 0}), Error);
  EXPECT_THROW(magnitude_mask({w.data(), DType::I32, 3, 4}), Error);
}

}  // namespace
}  // namespace sf::s24
