// SparseGPT on small layers against direct fp64 solves written here with plain loops (no BLAS, no
// Cholesky tricks, no lazy batches): the least-squares optimum for a fixed mask, and the OBS
// procedure column by column with every inverse Hessian formed explicitly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "core/error.hpp"
#include "sparse24/sparse24.hpp"
#include "sparse24/sparsegpt.hpp"

namespace sf::s24 {
namespace {

using Mat = std::vector<double>;  // row-major

// A calibration batch whose features are correlated and of different scales, as a transformer's
// are: X = Z A with Z ~ N(0, 1) [n, k] and A upper triangular with a spread diagonal.
std::vector<float> correlated_inputs(int64_t n, int64_t k, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> nd;
  Mat A(size_t(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = i; j < k; ++j)
      A[size_t(i * k + j)] = (i == j ? 0.5 + double(i % 5) : 0.4 * nd(g));
  std::vector<float> x(size_t(n * k));
  std::vector<double> z(static_cast<size_t>(k));
  for (int64_t r = 0; r < n; ++r) {
    for (auto& e : z) e = nd(g);
    for (int64_t j = 0; j < k; ++j) {
      double s = 0;
      for (int64_t i = 0; i <= j; ++i) s += z[size_t(i)] * A[size_t(i * k + j)];
      x[size_t(r * k + j)] = float(s);
    }
  }
  return x;
}

std::vector<float> random_weights(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> nd;
  std::vector<float> w(size_t(rows * cols));
  for (auto& e : w) e = nd(g);
  return w;
}

// 2 / n X^T X with plain loops.
Mat hessian_of(const std::vector<float>& x, int64_t n, int64_t k) {
  Mat h(size_t(k * k), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j)
        h[size_t(i * k + j)] +=
            2.0 / double(n) * double(x[size_t(r * k + i)]) * x[size_t(r * k + j)];
  return h;
}

// Inverse of a symmetric positive definite matrix by Gauss-Jordan elimination.
Mat inverse(Mat a, int64_t n) {
  Mat inv(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) inv[size_t(i * n + i)] = 1.0;
  for (int64_t p = 0; p < n; ++p) {
    const double d = a[size_t(p * n + p)];
    for (int64_t c = 0; c < n; ++c) {
      a[size_t(p * n + c)] /= d;
      inv[size_t(p * n + c)] /= d;
    }
    for (int64_t r = 0; r < n; ++r) {
      if (r == p) continue;
      const double f = a[size_t(r * n + p)];
      for (int64_t c = 0; c < n; ++c) {
        a[size_t(r * n + c)] -= f * a[size_t(p * n + c)];
        inv[size_t(r * n + c)] -= f * inv[size_t(p * n + c)];
      }
    }
  }
  return inv;
}

Mat submatrix(const Mat& h, int64_t k, const std::vector<int64_t>& rows,
              const std::vector<int64_t>& cols) {
  Mat s;
  for (int64_t r : rows)
    for (int64_t c : cols) s.push_back(h[size_t(r * k + c)]);
  return s;
}

// The least-squares optimum for a fixed mask: per row, the kept weights S minimise
// (w - w') H (w - w')^T with w'_P = 0 on the pruned set P, i.e. w'_S = w_S + H_SS^-1 H_SP w_P.
Mat least_squares_optimum(const std::vector<float>& w, int64_t rows, int64_t k, const Mat& h,
                          const std::vector<uint8_t>& mask) {
  Mat out(size_t(rows * k), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int64_t> S, P;
    for (int64_t j = 0; j < k; ++j) (mask[size_t(r * k + j)] ? S : P).push_back(j);
    const Mat Hss_inv = inverse(submatrix(h, k, S, S), int64_t(S.size()));
    const Mat Hsp = submatrix(h, k, S, P);
    std::vector<double> t(S.size(), 0.0);  // H_SP w_P
    for (size_t a = 0; a < S.size(); ++a)
      for (size_t b = 0; b < P.size(); ++b) t[a] += Hsp[a * P.size() + b] * w[size_t(r * k + P[b])];
    for (size_t a = 0; a < S.size(); ++a) {
      double s = w[size_t(r * k + S[a])];
      for (size_t b = 0; b < S.size(); ++b) s += Hss_inv[a * S.size() + b] * t[b];
      out[size_t(r * k + S[a])] = s;
    }
  }
  return out;
}

// The OBS procedure of the paper, one column at a time: at column j the free columns are F = j..k-1
// and their inverse Hessian is inverse(H[F, F]), formed directly. Groups of 4 are chosen at their
// first column by w_c^2 / inverse(H[c.., c..])_cc. h is the damped Hessian.
Mat direct_obs(const std::vector<float>& w0, int64_t rows, int64_t k, const Mat& h,
               std::vector<uint8_t>* mask_out) {
  std::vector<Mat> hinv(static_cast<size_t>(k));  // hinv[j] = inverse(H[j.., j..])
  std::vector<int64_t> F;
  for (int64_t j = k - 1; j >= 0; --j) {
    F.insert(F.begin(), j);
    hinv[size_t(j)] = inverse(submatrix(h, k, F, F), int64_t(F.size()));
  }
  Mat w(w0.begin(), w0.end());
  std::vector<uint8_t> mask(size_t(rows * k), 1);
  for (int64_t r = 0; r < rows; ++r) {
    double* wr = w.data() + r * k;
    for (int64_t j = 0; j < k; ++j) {
      if (j % 4 == 0) {
        double s[4];
        for (int c = 0; c < 4; ++c) s[c] = wr[j + c] * wr[j + c] / hinv[size_t(j + c)][0];
        // prune the two smallest; ties prune the higher index
        for (int c = 0; c < 4; ++c) {
          int above = 0;
          for (int d = 0; d < 4; ++d)
            if (d != c && (s[d] > s[c] || (s[d] == s[c] && d < c))) ++above;
          mask[size_t(r * k + j + c)] = above < 2;
        }
      }
      if (mask[size_t(r * k + j)]) continue;
      const Mat& hi = hinv[size_t(j)];  // row 0 is column j
      const double f = wr[j] / hi[0];
      for (int64_t c = j; c < k; ++c) wr[c] -= f * hi[size_t(c - j)];
      wr[j] = 0.0;
    }
  }
  if (mask_out) *mask_out = mask;
  return w;
}

double max_rel_diff(const Mat& a, const Mat& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(a[i] - b[i]));
    den = std::max(den, std::fabs(b[i]));
  }
  return num / den;
}

TEST(SparseGpt, HessianIsTwoOverNXtXOverBatches) {
  const int64_t n = 37, k = 12;
  const auto x = correlated_inputs(n, k, 3);
  Hessian acc(k);
  acc.add(x.data(), 20);
  acc.add(x.data() + 20 * k, n - 20);
  EXPECT_EQ(acc.rows_seen(), n);
  EXPECT_LT(max_rel_diff(acc.matrix(), hessian_of(x, n, k)), 1e-12);
  EXPECT_THROW(Hessian(k).matrix(), Error);
}

// With every pruned column left of every kept one, visiting columns in order leaves all kept
// weights free while the pruned ones go, so the OBS updates add up to the exact least-squares
// optimum for that mask. Blocks of 4 exercise the lazy batch update; 128 is one block.
TEST(SparseGpt, FixedMaskUpdateIsTheLeastSquaresOptimum) {
  const int64_t rows = 7, k = 24, n = 96;
  const auto x = correlated_inputs(n, k, 11);
  const auto w = random_weights(rows, k, 12);
  const Mat h = hessian_of(x, n, k);
  std::vector<uint8_t> mask(size_t(rows * k), 1);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < 2 + 3 * r; ++j) mask[size_t(r * k + j)] = 0;  // row r prunes 2 + 3r
  const Mat best = least_squares_optimum(w, rows, k, h, mask);
  for (int64_t block : {4, 8, 128}) {
    SparseGptOptions o;
    o.dampening = 0;
    o.block = block;
    o.mask = mask;
    const auto res = sparsegpt_prune({w.data(), DType::F32, rows, k}, h, o);
    EXPECT_LT(max_rel_diff(res.weight, best), 1e-9) << "block " << block;
    EXPECT_EQ(res.mask, mask);
    const Mat w64(w.begin(), w.end());
    const double opt_err = output_error(w64, best, rows, k, h);
    EXPECT_NEAR(res.error, opt_err, 1e-9 * opt_err) << "block " << block;
  }
}

// The 2:4 selection and update against the column-by-column procedure, damped and undamped, for
// blocks smaller than, not dividing, and larger than the width.
TEST(SparseGpt, MatchesDirectObsColumnByColumn) {
  const int64_t rows = 9, k = 40, n = 160;
  const auto x = correlated_inputs(n, k, 21);
  const auto w = random_weights(rows, k, 22);
  const Mat h = hessian_of(x, n, k);
  for (double damp : {0.0, 0.01, 0.3}) {
    Mat hd = h;
    double mean = 0;
    for (int64_t j = 0; j < k; ++j) mean += h[size_t(j * k + j)] / double(k);
    for (int64_t j = 0; j < k; ++j) hd[size_t(j * k + j)] += damp * mean;
    std::vector<uint8_t> want_mask;
    const Mat want = direct_obs(w, rows, k, hd, &want_mask);
    for (int64_t block : {4, 12, 128}) {
      SparseGptOptions o;
      o.dampening = damp;
      o.block = block;
      const auto res = sparsegpt_prune({w.data(), DType::F32, rows, k}, h, o);
      EXPECT_EQ(res.mask, want_mask) << "damp " << damp << " block " << block;
      EXPECT_LT(max_rel_diff(res.weight, want), 1e-9) << "damp " << damp << " block " << block;
      // The error comes from the OBS losses, not a product with H: it must still be H's.
      const double direct = output_error(Mat(w.begin(), w.end()), res.weight, rows, k, h);
      EXPECT_NEAR(res.error, direct, 1e-9 * direct) << "damp " << damp;
    }
  }
}

// The chosen mask is 2:4, its weights are within a small factor of the least-squares optimum for
// that mask (SparseGPT freezes a kept weight once visited, so it cannot reach it exactly), and the
// output error is far below that of magnitude and Wanda masks without an update.
TEST(SparseGpt, TwoFourAndBetterThanMagnitudeAndWanda) {
  const int64_t rows = 48, k = 64, n = 512;
  const auto x = correlated_inputs(n, k, 31);
  const auto w = random_weights(rows, k, 32);
  const Mat h = hessian_of(x, n, k);
  const auto res = sparsegpt_prune({w.data(), DType::F32, rows, k}, h, {});

  std::vector<float> wf(res.weight.begin(), res.weight.end());
  EXPECT_FALSE(find_violation({wf.data(), DType::F32, rows, k}).has_value());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < k / 4; ++g) {
      int kept = 0;
      for (int c = 0; c < 4; ++c) {
        const size_t i = size_t(r * k + 4 * g + c);
        kept += res.mask[i];
        if (!res.mask[i]) {
          EXPECT_EQ(res.weight[i], 0.0);
        }
      }
      EXPECT_EQ(kept, 2);
    }

  const Mat w64(w.begin(), w.end());
  auto masked_error = [&](const std::vector<uint8_t>& m) {
    Mat p = w64;
    for (size_t i = 0; i < p.size(); ++i)
      if (!m[i]) p[i] = 0;
    return output_error(w64, p, rows, k, h);
  };
  std::vector<float> norms(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j)
    norms[size_t(j)] = float(std::sqrt(h[size_t(j * k + j)] * double(n) / 2));
  const double magnitude = masked_error(magnitude_mask({w.data(), DType::F32, rows, k}));
  const double wanda = masked_error(wanda_mask({w.data(), DType::F32, rows, k}, norms));
  const double optimum =
      output_error(w64, least_squares_optimum(w, rows, k, h, res.mask), rows, k, h);
  EXPECT_NEAR(res.error, output_error(w64, res.weight, rows, k, h), 1e-12 * res.error);
  EXPECT_GE(res.error, optimum * (1 - 1e-9));
  std::printf(
      "output error: SparseGPT %.1f, optimum for its mask %.1f, Wanda %.1f, magnitude %.1f\n",
      res.error, optimum, wanda, magnitude);
  EXPECT_LT(res.error, 2.0 * optimum);
  EXPECT_LT(res.error, wanda);
  EXPECT_LT(res.error, magnitude);
  EXPECT_NEAR(res.reference, output_error(w64, Mat(w64.size(), 0.0), rows, k, h),
              1e-12 * res.reference);
  EXPECT_GT(res.relative_output_error(), 0.0);
  EXPECT_LT(res.relative_output_error(), 1.0);
}

TEST(SparseGpt, DeterministicAndReadsHalfPrecision) {
  const int64_t rows = 33, k = 136, n = 300;  // k spans a partial second block
  const auto x = correlated_inputs(n, k, 41);
  const auto w = random_weights(rows, k, 42);
  const Mat h = hessian_of(x, n, k);
  const auto a = sparsegpt_prune({w.data(), DType::F32, rows, k}, h, {});
  const auto b = sparsegpt_prune({w.data(), DType::F32, rows, k}, h, {});
  EXPECT_EQ(a.weight, b.weight);
  EXPECT_EQ(a.mask, b.mask);
  // fp16 weights: the same as their fp32 values.
  std::vector<uint16_t> w16(w.size());
  std::vector<float> w16f(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    store_from_float(w16.data(), DType::F16, i, w[i]);
    w16f[i] = load_as_float(w16.data(), DType::F16, i);
  }
  EXPECT_EQ(sparsegpt_prune({w16.data(), DType::F16, rows, k}, h, {}).weight,
            sparsegpt_prune({w16f.data(), DType::F32, rows, k}, h, {}).weight);
}

TEST(SparseGpt, DeadInputsAreZeroedAndSingularHessiansNeedDampening) {
  const int64_t rows = 4, k = 16, n = 40;
  auto x = correlated_inputs(n, k, 51);
  for (int64_t r = 0; r < n; ++r) x[size_t(r * k + 5)] = 0.0f;  // input 5 never fires
  const auto w = random_weights(rows, k, 52);
  const Mat h = hessian_of(x, n, k);
  const auto res = sparsegpt_prune({w.data(), DType::F32, rows, k}, h, {});
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(res.weight[size_t(r * k + 5)], 0.0);
  const double direct = output_error(Mat(w.begin(), w.end()), res.weight, rows, k, h);
  EXPECT_NEAR(res.error, direct, 1e-9 * direct);

  // Fewer rows than inputs: singular without dampening, fine with it.
  const auto few = correlated_inputs(6, k, 53);
  SparseGptOptions undamped;
  undamped.dampening = 0;
  try {
    sparsegpt_prune({w.data(), DType::F32, rows, k}, hessian_of(few, 6, k), undamped);
    ADD_FAILURE() << "a rank-6 Hessian of 16 inputs factored without dampening";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("dampening"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(sparsegpt_prune({w.data(), DType::F32, rows, k}, hessian_of(few, 6, k), {}));
}

TEST(SparseGpt, RejectsBadArguments) {
  const int64_t rows = 2, k = 8;
  const auto w = random_weights(rows, k, 61);
  const Mat h = hessian_of(correlated_inputs(32, k, 62), 32, k);
  const MatrixView v{w.data(), DType::F32, rows, k};
  auto status = [&](const Mat& hh, SparseGptOptions o) {
    try {
      sparsegpt_prune(v, hh, o);
    } catch (const Error& e) {
      return e.status();
    }
    return Status::Ok;
  };
  EXPECT_EQ(status(Mat(10, 1.0), {}), Status::InvalidArgument);  // wrong Hessian size
  SparseGptOptions o;
  o.block = 6;
  EXPECT_EQ(status(h, o), Status::InvalidArgument);
  o = {};
  o.dampening = -1;
  EXPECT_EQ(status(h, o), Status::InvalidArgument);
  o = {};
  const std::vector<uint8_t> short_mask(3, 1);
  o.mask = short_mask;
  EXPECT_EQ(status(h, o), Status::InvalidArgument);
  Mat bad = h;
  bad[3] = std::nan("");
  EXPECT_EQ(status(bad, {}), Status::InvalidArgument);
  const std::vector<float> w6(12, 1.0f);
  EXPECT_THROW(sparsegpt_prune({w6.data(), DType::F32, 2, 6}, Mat(36, 0.0), {}), Error);  // K % 4
}

}  // namespace
}  // namespace sf::s24
