// SparseGPT (Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
// One-Shot", 2023): 2:4 pruning of one linear layer y = x W^T that also moves the weights it keeps,
// so that the layer's output on calibration inputs X changes as little as it can.
//
// The objective of a row w of W is the squared output error ||(w - w') X^T||^2 = (w - w') H
// (w - w')^T with the input Hessian H = 2 X^T X / n. Columns are visited left to right; pruning
// column j moves the columns right of it by the optimal brain surgeon (OBS) update for the
// columns not yet visited, computed from the upper Cholesky factor U of H^-1 (H^-1 = U^T U):
//   err = w_j / U_jj,   w_c -= err * U_jc  for c > j.
// Each group of 4 columns is chosen when its first column is reached: the 2 with the smallest
// w_c^2 / U_cc^2 (the OBS error of removing each) are pruned. Updates inside a block of columns are
// applied at once; the block's accumulated errors reach the columns right of it as one matrix
// product (the paper's lazy batch update), which is where the time goes.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "sparse24/sparse24.hpp"

namespace sf::s24 {

// The input Hessian of one linear layer, accumulated over batches of its input rows in fp64:
// H = 2 / n * sum over rows x of x^T x, n the rows seen so far.
class Hessian {
 public:
  explicit Hessian(int64_t cols);
  // x: [rows, cols] fp32, row-major.
  void add(const float* x, int64_t rows);
  int64_t cols() const { return cols_; }
  int64_t rows_seen() const { return rows_; }
  // H, [cols, cols] row-major and symmetric. Throws Error(InvalidArgument) when no row was added.
  std::vector<double> matrix() const;

 private:
  int64_t cols_ = 0, rows_ = 0;
  std::vector<double> xtx_;      // [cols, cols] sum of x^T x, upper triangle only (dsyrk)
  std::vector<double> scratch_;  // a batch of rows widened to fp64
};

struct SparseGptOptions {
  // Added to H's diagonal, as a fraction of the mean of that diagonal, before it is inverted: H is
  // singular when the layer saw fewer calibration rows than it has inputs, and small eigenvalues
  // make the update chase noise. 0.01 is the paper's value.
  double dampening = 0.01;
  // Columns per lazy batch update; a multiple of 4 so that no group straddles two blocks.
  int64_t block = 128;
  // Empty: choose the 2:4 mask as above. Otherwise [rows, cols] bytes, 1 = keep, any pattern: the
  // OBS update then runs for exactly this mask (used to measure another method's mask).
  std::span<const uint8_t> mask;
};

struct SparseGptResult {
  std::vector<double> weight;  // [rows, cols]: pruned entries exactly 0, kept ones updated
  std::vector<uint8_t> mask;   // [rows, cols], 1 = kept
  // With the undamped H: sum over rows of (w - w') H (w - w')^T, and of w H w^T. Their ratio is the
  // squared relative output error on the calibration rows, ||(W - W') X^T||^2 / ||W X^T||^2.
  double error = 0, reference = 0;
  double relative_output_error() const;  // sqrt(error / reference), 0 for a zero layer
};

// Prunes w ([rows, cols], F32/F16/BF16; cols % 4 == 0) given its input Hessian h ([cols, cols],
// symmetric, fp64). An input column that never saw a nonzero (H_jj == 0) has its weights set to 0:
// they do not change the output. Deterministic for given inputs and thread count. Throws
// Error(InvalidArgument) for sizes that disagree, a non-finite H, a bad fixed mask or block size,
// and when H + dampening is not positive definite (with the dampening to try instead).
SparseGptResult sparsegpt_prune(const MatrixView& w, std::span<const double> h,
                                const SparseGptOptions& opt = {});

// sum over rows of (a - b) H (a - b)^T for a, b [rows, cols] and H [cols, cols], in fp64: the
// squared output error of replacing weights a by b, for the inputs H was accumulated from.
double output_error(std::span<const double> a, std::span<const double> b, int64_t rows,
                    int64_t cols, std::span<const double> h);

}  // namespace sf::s24
