// The GPU SparseGPT solver against the CPU one (sparse24/sparsegpt.hpp) on the same layers: the
// same masks, the same updated weights within fp64 rounding, the same output error and reference.
// Shapes that exercise the edges: rows not a multiple of the kernel's 4 warps, columns whose last
// block is partial (600 = 4 x 128 + 88), a block of 32, and a dead input column (its weights go).
// Correlated inputs make the OBS updates large, so a wrong update shows in the error. Skips with
// the reason when no GPU is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.hpp"
#include "kernels/cuda/cuda_api.hpp"
#include "kernels/cuda/sparsegpt_cuda.hpp"
#include "sparse24/sparsegpt.hpp"

namespace sf::cuda {
namespace {

struct Layer {
  std::vector<float> w;  // [rows, cols]
  std::vector<double> h;
};

// Weights N(0, 1); inputs with a shared component per row so that the Hessian is far from
// diagonal; column `dead` of the inputs always zero.
Layer make_layer(int64_t rows, int64_t cols, int64_t n, int64_t dead, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  Layer L;
  L.w.resize(size_t(rows * cols));
  for (auto& v : L.w) v = g(rng);
  std::vector<float> x(size_t(n * cols));
  for (int64_t i = 0; i < n; ++i) {
    const float common = g(rng);
    for (int64_t j = 0; j < cols; ++j)
      x[size_t(i * cols + j)] = j == dead ? 0.0f : 0.7f * common + g(rng) * (1.0f + float(j % 5));
  }
  s24::Hessian hs(cols);
  hs.add(x.data(), n);
  L.h = hs.matrix();
  return L;
}

double rel_l2(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0, s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d += (a[i] - b[i]) * (a[i] - b[i]);
    s += b[i] * b[i];
  }
  return std::sqrt(d / s);
}

class SparseGptCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
  }
  cudaStream_t stream_ = nullptr;
};

TEST_F(SparseGptCuda, EqualsTheCpuSolver) {
  struct Case {
    int64_t rows, cols, n, dead, block;
  };
  for (const Case c : {Case{37, 600, 900, 5, 128}, Case{64, 256, 200, 300, 128},
                       Case{130, 128, 1000, 17, 32}, Case{8, 4, 50, -1, 128}}) {
    SCOPED_TRACE(::testing::Message()
                 << c.rows << " x " << c.cols << ", " << c.n << " rows of X, block " << c.block);
    const Layer L = make_layer(c.rows, c.cols, c.n, c.dead, uint32_t(c.rows * 7 + c.cols));
    const s24::MatrixView w{L.w.data(), DType::F32, c.rows, c.cols};
    s24::SparseGptOptions opt;
    opt.block = c.block;
    const s24::SparseGptResult cpu = s24::sparsegpt_prune(w, L.h, opt);
    SparseGptSolver solver(stream_);
    const s24::SparseGptResult gpu = solver.prune(w, std::span<const double>(L.h), opt);
    ASSERT_EQ(gpu.mask.size(), cpu.mask.size());
    EXPECT_EQ(gpu.mask, cpu.mask);
    EXPECT_LT(rel_l2(gpu.weight, cpu.weight), 1e-9);
    EXPECT_NEAR(gpu.error, cpu.error, 1e-8 * cpu.reference);
    EXPECT_NEAR(gpu.reference, cpu.reference, 1e-10 * cpu.reference);
    EXPECT_GT(cpu.error, 0.0);
    // 2:4: two of every four kept, and the pruned entries exactly zero.
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t g = 0; g < c.cols / 4; ++g) {
        int kept = 0;
        for (int t = 0; t < 4; ++t) {
          const size_t i = size_t(r * c.cols + 4 * g + t);
          kept += gpu.mask[i];
          if (!gpu.mask[i]) EXPECT_EQ(gpu.weight[i], 0.0);
        }
        EXPECT_EQ(kept, 2);
      }
    if (c.dead >= 0 && c.dead < c.cols)
      for (int64_t r = 0; r < c.rows; ++r) EXPECT_EQ(gpu.weight[size_t(r * c.cols + c.dead)], 0.0);
  }
}

TEST_F(SparseGptCuda, RefusesWhatItDoesNotRun) {
  const Layer L = make_layer(8, 64, 100, -1, 3);
  const s24::MatrixView w{L.w.data(), DType::F32, 8, 64};
  SparseGptSolver solver(stream_);
  s24::SparseGptOptions big;
  big.block = 256;
  EXPECT_THROW(solver.prune(w, std::span<const double>(L.h), big), Error);
  const std::vector<uint8_t> mask(8 * 64, 1);
  s24::SparseGptOptions fixed;
  fixed.mask = mask;
  EXPECT_THROW(solver.prune(w, std::span<const double>(L.h), fixed), Error);
  std::vector<double> nan = L.h;
  nan[5] = std::nan("");
  EXPECT_THROW(solver.prune(w, std::span<const double>(nan), {}), Error);
  std::vector<double> neg(L.h.size(), 0.0);  // -1 on the diagonal: not positive definite
  for (int j = 0; j < 64; ++j) neg[size_t(j * 64 + j)] = -1.0;
  s24::SparseGptOptions undamped;
  undamped.dampening = 0.0;
  EXPECT_THROW(solver.prune(w, std::span<const double>(neg), undamped), Error);
}

}  // namespace
}  // namespace sf::cuda
