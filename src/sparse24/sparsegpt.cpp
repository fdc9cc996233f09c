// SparseGPT 2:4 pruning of one linear layer (sparsegpt.hpp), on OpenBLAS's BLAS and LAPACK.
#include "sparse24/sparsegpt.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "sparse24/internal.hpp"

// LAPACK's Cholesky factorisation and the inverse from it (OpenBLAS exports both). The trailing
// length is the hidden one gfortran passes for each character argument.
extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
void dpotri_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
}

namespace sf::s24 {

namespace {

// LAPACK is column-major; a symmetric matrix reads the same both ways, and the column-major "U"
// triangle is the row-major lower one. Factors (in place) a = L L^T in LAPACK's terms; false when
// a is not positive definite, with the order of the failing leading minor in *minor.
bool cholesky(std::vector<double>& a, int n, const char* uplo, int* minor) {
  int info = 0;
  dpotrf_(uplo, &n, a.data(), &n, &info, 1);
  if (info < 0) fail(Status::Internal, "dpotrf rejected argument {}", -info);
  *minor = info;
  return info == 0;
}

// Upper Cholesky factor U (row-major, H^-1 = U^T U) of the inverse of the symmetric positive
// definite h.
std::vector<double> inverse_cholesky_upper(std::vector<double> h, int n, double dampening) {
  int minor = 0;
  // Column-major "U" of h is row-major lower: h = L L^T. dpotri then writes H^-1 into the same
  // triangle; mirror it into a full matrix.
  if (!cholesky(h, n, "U", &minor))
    fail(Status::InvalidArgument,
         "SparseGPT: the layer's input Hessian plus dampening {} is not positive definite (leading "
         "minor {} of {}): its calibration inputs are nearly linearly dependent. Raise the "
         "dampening (e.g. --dampening 0.1) or calibrate on more text",
         dampening, minor, n);
  int info = 0;
  dpotri_("U", &n, h.data(), &n, &info, 1);
  if (info != 0)
    fail(Status::InvalidArgument,
         "SparseGPT: the layer's input Hessian plus dampening {} is singular (dpotri: {}); raise "
         "the dampening (e.g. --dampening 0.1) or calibrate on more text",
         dampening, info);
  const size_t N = size_t(n);
  for (size_t r = 0; r < N; ++r)  // row-major lower (column-major upper) holds the result
    for (size_t c = r + 1; c < N; ++c) h[r * N + c] = h[c * N + r];
  // Column-major "L" of H^-1 = L L^T reads row-major as U = L^T, upper, with H^-1 = U^T U.
  if (!cholesky(h, n, "L", &minor))
    fail(Status::InvalidArgument,
         "SparseGPT: the inverse of the layer's input Hessian lost positive definiteness to "
         "rounding (minor {} of {}); raise the dampening (e.g. --dampening 0.1)",
         minor, n);
  for (size_t r = 0; r < N; ++r)
    for (size_t c = 0; c < r; ++c) h[r * N + c] = 0.0;
  return h;
}

// Keep the two largest of 4 scores, ties to the lower index (as the magnitude and Wanda masks).
inline void keep_top2(const double (&s)[4], uint8_t* keep) {
  for (int i = 0; i < 4; ++i) {
    int above = 0;
    for (int k = 0; k < 4; ++k)
      if (k != i && (s[k] > s[i] || (s[k] == s[i] && k < i))) ++above;
    keep[i] = above < 2 ? 1 : 0;
  }
}

}  // namespace

Hessian::Hessian(int64_t cols) : cols_(cols) {
  if (cols <= 0) fail(Status::InvalidArgument, "Hessian: expected a positive width, got {}", cols);
  xtx_.assign(size_t(cols * cols), 0.0);
}

void Hessian::add(const float* x, int64_t rows) {
  if (rows <= 0) return;
  scratch_.resize(size_t(rows * cols_));
  for (size_t i = 0; i < scratch_.size(); ++i) scratch_[i] = double(x[i]);
  // Row-major upper triangle of xtx += X^T X.
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, blasint(cols_), blasint(rows), 1.0,
              scratch_.data(), blasint(cols_), 1.0, xtx_.data(), blasint(cols_));
  rows_ += rows;
}

std::vector<double> Hessian::matrix() const {
  if (rows_ == 0)
    fail(Status::InvalidArgument,
         "Hessian: no calibration rows were added; the layer's input was never observed");
  const size_t n = size_t(cols_);
  const double scale = 2.0 / double(rows_);
  std::vector<double> h(n * n);
  for (size_t r = 0; r < n; ++r)
    for (size_t c = r; c < n; ++c) h[r * n + c] = h[c * n + r] = scale * xtx_[r * n + c];
  return h;
}

double SparseGptResult::relative_output_error() const {
  return reference > 0 ? std::sqrt(std::max(0.0, error) / reference) : 0.0;
}

double output_error(std::span<const double> a, std::span<const double> b, int64_t rows,
                    int64_t cols, std::span<const double> h) {
  const size_t n = size_t(rows * cols);
  if (a.size() != n || b.size() != n || h.size() != size_t(cols * cols))
    fail(Status::InvalidArgument,
         "output_error: expected weights of {} x {} and a Hessian of {} x {}, found {}, {} and {} "
         "elements",
         rows, cols, cols, cols, a.size(), b.size(), h.size());
  std::vector<double> d(n), dh(n);
  for (size_t i = 0; i < n; ++i) d[i] = a[i] - b[i];
  cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, blasint(rows), blasint(cols), 1.0, h.data(),
              blasint(cols), d.data(), blasint(cols), 0.0, dh.data(), blasint(cols));
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += d[i] * dh[i];
  return s;
}

SparseGptResult sparsegpt_prune(const MatrixView& w, std::span<const double> h,
                                const SparseGptOptions& opt) {
  check_shape(w, "sparsegpt_prune");
  const int64_t R = w.rows, K = w.cols;
  const size_t KK = size_t(K * K), n = size_t(R * K);
  if (h.size() != KK)
    fail(Status::InvalidArgument,
         "sparsegpt_prune: expected a [{}, {}] input Hessian for a [{}, {}] weight, found {} "
         "elements; the Hessian is over the layer's input features",
         K, K, R, K, h.size());
  if (!(opt.dampening >= 0.0) || !std::isfinite(opt.dampening))
    fail(Status::InvalidArgument,
         "sparsegpt_prune: dampening must be a finite fraction >= 0 (0.01 is usual), got {}",
         opt.dampening);
  if (opt.block <= 0 || opt.block % 4 != 0)
    fail(Status::InvalidArgument,
         "sparsegpt_prune: block must be a positive multiple of 4 (so no 2:4 group straddles two "
         "blocks), got {}",
         opt.block);
  const bool fixed = !opt.mask.empty();
  if (fixed && opt.mask.size() != n)
    fail(Status::InvalidArgument,
         "sparsegpt_prune: expected a mask of {} bytes for [{}, {}], found {}", n, R, K,
         opt.mask.size());
  if (K > int64_t(1) << 30)
    fail(Status::UnsupportedShape, "sparsegpt_prune: {} input features are more than LAPACK takes",
         K);
  for (size_t i = 0; i < KK; ++i)
    if (!std::isfinite(h[i]))
      fail(Status::InvalidArgument,
           "sparsegpt_prune: the input Hessian has a non-finite entry at ({}, {}): the calibration "
           "activations overflowed or hold NaN",
           i / size_t(K), i % size_t(K));

  SparseGptResult res;
  std::vector<double>& W = res.weight;  // [R, K], updated in place column by column
  W.resize(n);
  for (size_t i = 0; i < n; ++i) {
    W[i] = double(load_as_float(w.data, w.dtype, i));
    if (!std::isfinite(W[i]))
      fail(Status::InvalidArgument,
           "sparsegpt_prune: weight ({}, {}) is {}; SparseGPT needs finite weights", i / size_t(K),
           i % size_t(K), W[i]);
  }
  const std::vector<double> W0 = W;

  // Inputs that were always zero carry no information: their weights can go (H_jj = 1 keeps the
  // factorisation defined without changing anything else).
  std::vector<double> H(h.begin(), h.end());
  double mean_diag = 0.0;
  for (int64_t j = 0; j < K; ++j) {
    double& d = H[size_t(j * K + j)];
    if (d == 0.0) {
      d = 1.0;
      for (int64_t r = 0; r < R; ++r) W[size_t(r * K + j)] = 0.0;
    }
    mean_diag += d;
  }
  mean_diag /= double(K);
  const double damp = opt.dampening * mean_diag;
  for (int64_t j = 0; j < K; ++j) H[size_t(j * K + j)] += damp;
  const std::vector<double> U = inverse_cholesky_upper(std::move(H), int(K), opt.dampening);

  res.mask.assign(n, 1);
  if (fixed)
    for (size_t i = 0; i < n; ++i) res.mask[i] = opt.mask[i] ? 1 : 0;
  const int64_t B = std::min(opt.block, K);
  std::vector<double> E(size_t(R * B));      // [R, B] each visited column's error / U_jj
  std::vector<double> loss(size_t(R), 0.0);  // per row: sum of err^2
  for (int64_t i0 = 0; i0 < K; i0 += B) {
    const int64_t i1 = std::min(i0 + B, K), b = i1 - i0;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      double* wr = W.data() + r * K;
      uint8_t* mr = res.mask.data() + r * K;
      double* er = E.data() + r * B;
      for (int64_t j = i0; j < i1; ++j) {
        if (!fixed && j % 4 == 0) {
          double s[4];
          for (int c = 0; c < 4; ++c) {
            const double u = U[size_t((j + c) * K + j + c)];
            s[c] = wr[j + c] * wr[j + c] / (u * u);
          }
          keep_top2(s, mr + j);
        }
        const double* uj = U.data() + j * K;
        const double err = mr[j] ? 0.0 : wr[j] / uj[j];
        er[j - i0] = err;
        loss[size_t(r)] += err * err;
        if (err != 0.0)
          for (int64_t c = j + 1; c < i1; ++c) wr[c] -= err * uj[c];
        if (!mr[j]) wr[j] = 0.0;
      }
    }
    // The lazy batch update: every column right of the block receives the block's errors at once,
    // W[:, i1:] -= E[:, :b] U[i0:i1, i1:].
    if (i1 < K)
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(R), blasint(K - i1),
                  blasint(b), -1.0, E.data(), blasint(B), U.data() + i0 * K + i1, blasint(K), 1.0,
                  W.data() + i1, blasint(K));
  }

  // Each visited column raised the damped objective by exactly err^2 (the columns right of it
  // being re-optimised each time), so sum err^2 = D (H + damp I) D^T for D = W0 - W: the error
  // under the undamped H costs O(rows x cols) instead of a product with H. Dead columns drop
  // out of both (their rows of H are 0, and D is 0 there).
  double err2 = 0, d2 = 0;
  for (double e : loss) err2 += e;
  for (size_t i = 0; i < n; ++i) d2 += (W0[i] - W[i]) * (W0[i] - W[i]);
  for (int64_t j = 0; j < K; ++j)
    if (h[size_t(j * K + j)] == 0.0)
      for (int64_t r = 0; r < R; ++r) d2 -= W0[size_t(r * K + j)] * W0[size_t(r * K + j)];
  res.error = std::max(0.0, err2 - damp * d2);
  const std::vector<double> zero(n, 0.0);
  res.reference = output_error(W0, zero, R, K, h);
  return res;
}

}  // namespace sf::s24
