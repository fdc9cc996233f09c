// GPU test of the layer-norm kernels (src/kernels/cuda/model/layernorm.cu) against an fp64
// reference: every row of the width table (float4 x 2, float4 x 4, scalar, the strided fallback),
// 1..64 rows, with and without gamma/beta, fp32 / fp16 / bf16 outputs, in place (out_f32 == x) and
// misaligned rows. Inputs have an offset and OPT-like outliers; outputs are poisoned (NaN bytes)
// before each run so an unwritten element shows. Skips with the reason when no GPU is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "kernels/cuda/cuda_api.hpp"
#include "kernels/cuda/model/model_kernels.hpp"
#include "kernel_test_util.hpp"

namespace sf::cuda::model {
namespace {

using test::Dev;

constexpr float kEps = 1e-5f;

struct Case {
  int64_t rows, dim;
  bool affine;
  int act_dt;       // -1: no act output
  bool f32_out;
  bool in_place;    // out_f32 == x
  bool misaligned;  // x and out_f32 start 4 bytes past a 16-byte boundary
};

std::string describe(const Case& c) {
  return "rows " + std::to_string(c.rows) + " dim " + std::to_string(c.dim) + (c.affine ? " affine" : "") +
         " act_dt " + std::to_string(c.act_dt) + (c.f32_out ? " f32" : "") + (c.in_place ? " in-place" : "") +
         (c.misaligned ? " misaligned" : "");
}

void run_case(const Case& c, std::mt19937_64& rng) {
  SCOPED_TRACE(describe(c));
  const size_t n = size_t(c.rows * c.dim);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(n), w(size_t(c.dim)), b(size_t(c.dim));
  for (int64_t r = 0; r < c.rows; ++r) {
    const float scale = std::pow(10.0f, float(r % 4) - 1.0f), offset = float(r % 3) * scale;
    for (int64_t j = 0; j < c.dim; ++j) x[size_t(r * c.dim + j)] = nd(rng) * scale + offset;
    for (int k = 0; k < 4; ++k)
      x[size_t(r * c.dim) + rng() % uint64_t(c.dim)] = (rng() % 2 ? 1.0f : -1.0f) * scale * float(50 + rng() % 2000);
  }
  for (auto& e : w) e = 1.0f + 0.2f * nd(rng);
  for (auto& e : b) e = 0.2f * nd(rng);

  // fp64 reference, as the CPU backend computes it.
  std::vector<double> ref(n);
  for (int64_t r = 0; r < c.rows; ++r) {
    const float* xr = x.data() + r * c.dim;
    double s = 0;
    for (int64_t j = 0; j < c.dim; ++j) s += xr[j];
    const double mean = s / double(c.dim);
    double q = 0;
    for (int64_t j = 0; j < c.dim; ++j) q += (xr[j] - mean) * (xr[j] - mean);
    const double inv = 1.0 / std::sqrt(q / double(c.dim) + double(kEps));
    for (int64_t j = 0; j < c.dim; ++j) {
      double y = (xr[j] - mean) * inv;
      if (c.affine) y = y * w[size_t(j)] + b[size_t(j)];
      ref[size_t(r * c.dim + j)] = y;
    }
  }

  const size_t pad = c.misaligned ? 1 : 0;
  Dev dx((n + pad) * 4), dy((n + pad) * 4), dw(w.size() * 4), db(b.size() * 4), dact(n * 4);
  float* xin = dx.f() + pad;
  float* yout = c.in_place ? xin : dy.f() + pad;
  ASSERT_EQ(cudaMemcpy(xin, x.data(), n * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dw.p, w.data(), w.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(db.p, b.data(), b.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  if (!c.in_place) {
    ASSERT_EQ(cudaMemset(dy.p, 0xff, (n + pad) * 4), cudaSuccess);
  }
  ASSERT_EQ(cudaMemset(dact.p, 0xff, n * 4), cudaSuccess);

  launch_layernorm(xin, c.rows, c.dim, c.affine ? dw.f() : nullptr, c.affine ? db.f() : nullptr, kEps,
                   c.f32_out ? yout : nullptr, c.act_dt >= 0 ? dact.p : nullptr, c.act_dt < 0 ? 0 : c.act_dt, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  if (c.f32_out) {
    std::vector<float> got(n);
    ASSERT_EQ(cudaMemcpy(got.data(), yout, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i)
      if (!(std::abs(double(got[i]) - ref[i]) <= 1e-5 * (1.0 + std::abs(ref[i]))) && bad++ < 3)
        ADD_FAILURE() << "fp32 output " << i << ": got " << got[i] << ", expected " << ref[i];
    EXPECT_EQ(bad, 0u);
  }
  if (c.act_dt >= 0) {
    const size_t es = c.act_dt == 0 ? 4 : 2;
    std::vector<uint8_t> raw(n * es);
    ASSERT_EQ(cudaMemcpy(raw.data(), dact.p, raw.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    const double tol = c.act_dt == 0 ? 1e-5 : c.act_dt == 1 ? 1e-3 : 8e-3;  // one rounding of the type
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
      const float got = load_as_float(raw.data(), DType(c.act_dt), i);
      if (!(std::abs(double(got) - ref[i]) <= tol * (1.0 + std::abs(ref[i]))) && bad++ < 3)
        ADD_FAILURE() << "act output " << i << ": got " << got << ", expected " << ref[i];
    }
    EXPECT_EQ(bad, 0u);
  }
}

TEST(CudaLayerNorm, EveryPathAgainstFp64) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(20261201);
  // 16..8192 with dim % 4 == 0: float4 x 2; 8196..16384: float4 x 4; 1002, 4098: scalar; 9002 and
  // 20000: the strided kernel.
  for (int64_t dim : {16, 768, 1000, 1002, 2560, 4096, 4098, 8192, 8196, 9002, 12288, 16384, 20000})
    for (int64_t rows : {1, 5, 64})
      for (bool affine : {true, false}) {
        run_case({rows, dim, affine, 1, false, false, false}, rng);  // pre-LN: act only
        run_case({rows, dim, affine, 2, true, true, false}, rng);    // post-LN: in place + act
      }
  for (int64_t dim : {768, 4096, 12288}) {
    run_case({3, dim, true, 0, true, false, false}, rng);  // fp32 act
    run_case({3, dim, true, 1, true, false, true}, rng);   // misaligned: the scalar / strided path
    run_case({3, dim, true, 1, true, true, true}, rng);
  }
}

}  // namespace
}  // namespace sf::cuda::model
