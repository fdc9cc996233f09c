// GPU test of RMSNorm (launch_norm(NormKind::Rms), src/kernels/cuda/model/layernorm.cu) against an
// fp64 reference: every row of the width table (float4 x 2, float4 x 4, scalar, the strided
// fallback), Llama-family widths (576, 896, 2048, 4096), 1..64 rows, with and without a weight,
// fp32 / fp16 / bf16 outputs, in place and misaligned. The act output must round as HF's
// LlamaRMSNorm does (act(w * act(x / rms))): compared with that emulated rounding, nearly every
// element matches bit for bit (a few may differ by one unit where fp32 statistics put x / rms on
// the other side of a rounding boundary than fp64 ones). Outputs are poisoned (NaN bytes) with a
// guard past the end, so an unwritten or stray element shows. Skips when no GPU is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "kernel_test_util.hpp"
#include "kernels/cuda/cuda_api.hpp"
#include "kernels/cuda/model/model_kernels.hpp"

namespace sf::cuda::model {
namespace {

using test::Dev;

constexpr float kEps = 1e-6f;
constexpr size_t kGuard = 64;  // poisoned elements past each output that must stay untouched

struct Case {
  int64_t rows, dim;
  bool weight;
  int act_dt;  // -1: no act output
  bool f32_out, in_place, misaligned;
};

std::string describe(const Case& c) {
  return "rows " + std::to_string(c.rows) + " dim " + std::to_string(c.dim) +
         (c.weight ? " weight" : "") + " act_dt " + std::to_string(c.act_dt) +
         (c.f32_out ? " f32" : "") + (c.in_place ? " in-place" : "") +
         (c.misaligned ? " misaligned" : "");
}

// x rounded to the type t, as a float.
float round_to(float x, DType t) {
  uint8_t buf[8];
  store_from_float(buf, t, 0, x);
  return load_as_float(buf, t, 0);
}

// Relative size of one unit in the last place of t: fp32 2^-23, fp16 2^-10, bf16 2^-7.
double ulp_of(DType t) {
  return t == DType::F32 ? 0x1p-23 : t == DType::F16 ? 0x1p-10 : 0x1p-7;
}

bool all_bytes(const void* p, size_t n, uint8_t v) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i)
    if (b[i] != v) return false;
  return true;
}

void run_case(const Case& c, std::mt19937_64& rng) {
  SCOPED_TRACE(describe(c));
  const size_t n = size_t(c.rows * c.dim);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(n), w(size_t(c.dim));
  for (int64_t r = 0; r < c.rows; ++r) {
    const float scale = std::pow(10.0f, float(r % 4) - 1.0f), offset = float(r % 3) * scale;
    for (int64_t j = 0; j < c.dim; ++j) x[size_t(r * c.dim + j)] = nd(rng) * scale + offset;
    for (int k = 0; k < 4; ++k)  // residual-stream outliers
      x[size_t(r * c.dim) + rng() % uint64_t(c.dim)] =
          (rng() % 2 ? 1.0f : -1.0f) * scale * float(50 + rng() % 2000);
  }
  // Weights as a 16-bit checkpoint holds them (exact in bf16), some near 0 and some large.
  for (auto& e : w) e = round_to(0.1f + 2.0f * std::abs(nd(rng)), DType::BF16);

  // fp64 reference: yn = x / rms; fp32 output yn * w; act output act(w * act(yn)) from the fp64 yn.
  std::vector<double> ref_f32(n);
  std::vector<float> ref_act(n);
  const DType at = DType(c.act_dt < 0 ? 0 : c.act_dt);
  for (int64_t r = 0; r < c.rows; ++r) {
    const float* xr = x.data() + r * c.dim;
    double q = 0;
    for (int64_t j = 0; j < c.dim; ++j) q += double(xr[j]) * xr[j];
    const double inv = 1.0 / std::sqrt(q / double(c.dim) + double(kEps));
    for (int64_t j = 0; j < c.dim; ++j) {
      const double yn = xr[j] * inv, wj = c.weight ? w[size_t(j)] : 1.0;
      const size_t i = size_t(r * c.dim + j);
      ref_f32[i] = yn * wj;
      ref_act[i] =
          c.weight ? round_to(float(wj) * round_to(float(yn), at), at) : round_to(float(yn), at);
    }
  }

  const size_t pad = c.misaligned ? 1 : 0;
  Dev dx((n + pad + kGuard) * 4), dy((n + pad + kGuard) * 4), dw(w.size() * 4),
      dact((n + kGuard) * 4);
  float* xin = dx.f() + pad;
  float* yout = c.in_place ? xin : dy.f() + pad;
  ASSERT_EQ(cudaMemset(dx.p, 0xff, (n + pad + kGuard) * 4), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(xin, x.data(), n * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dw.p, w.data(), w.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(dy.p, 0xff, (n + pad + kGuard) * 4), cudaSuccess);
  ASSERT_EQ(cudaMemset(dact.p, 0xff, (n + kGuard) * 4), cudaSuccess);

  launch_norm(NormKind::Rms, xin, c.rows, c.dim, c.weight ? dw.f() : nullptr, nullptr, kEps,
              c.f32_out ? yout : nullptr, c.act_dt >= 0 ? dact.p : nullptr,
              c.act_dt < 0 ? 0 : c.act_dt, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  if (c.f32_out) {
    std::vector<float> got(n + kGuard);
    ASSERT_EQ(cudaMemcpy(got.data(), yout, (n + kGuard) * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    // fp32 statistics: the sum of squares carries ~25 fp32 roundings (~3e-6 relative), rsqrtf 2
    // ulp.
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i)
      if (!(std::abs(double(got[i]) - ref_f32[i]) <= 1e-5 * std::abs(ref_f32[i]) + 1e-30) &&
          bad++ < 3)
        ADD_FAILURE() << "fp32 output " << i << ": got " << got[i] << ", expected " << ref_f32[i];
    EXPECT_EQ(bad, 0u);
    EXPECT_TRUE(all_bytes(got.data() + n, kGuard * 4, 0xff)) << "fp32 output written past the end";
  }
  if (c.act_dt >= 0) {
    const size_t es = dtype_size(at);
    std::vector<uint8_t> raw((n + kGuard) * es);
    ASSERT_EQ(cudaMemcpy(raw.data(), dact.p, raw.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    // 16-bit, against the emulated rounding: where fp32 statistics flip the inner rounding, one
    // unit of x / rms (w times it is exact in fp32) and then the outer rounding: 2 units of the
    // result (plus two fp16 subnormal steps near 0); exact everywhere else. fp32: the fp32
    // tolerance above.
    size_t bad = 0, exact = 0;
    for (size_t i = 0; i < n; ++i) {
      const float got = load_as_float(raw.data(), at, i);
      if (got == ref_act[i]) ++exact;
      const double tol = at == DType::F32
                             ? 1e-5 * std::abs(ref_f32[i]) + 1e-30
                             : 2.0 * ulp_of(at) * std::abs(double(ref_act[i])) + 0x1p-23;
      if (!(std::abs(double(got) - ref_act[i]) <= tol) && bad++ < 3)
        ADD_FAILURE() << "act output " << i << ": got " << got << ", expected " << ref_act[i];
    }
    EXPECT_EQ(bad, 0u);
    if (at != DType::F32) {
      EXPECT_GE(double(exact), 0.99 * double(n))
          << "the act output does not round as act(w * act(x / rms))";
    }
    EXPECT_TRUE(all_bytes(raw.data() + n * es, kGuard * es, 0xff))
        << "act output written past the end";
  }
}

TEST(CudaRmsNorm, EveryPathAgainstFp64) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(20261210);
  // 16..8192 with dim % 4 == 0: float4 x 2; 8196..16384: float4 x 4; 1002, 4098: scalar; 20000:
  // strided.
  for (int64_t dim : {16, 576, 896, 1002, 2048, 4096, 4098, 8192, 8196, 16384, 20000})
    for (int64_t rows : {1, 5, 64})
      for (bool weight : {true, false}) {
        run_case({rows, dim, weight, 1, false, false, false}, rng);  // pre-norm: act only
        run_case({rows, dim, weight, 2, false, false, false}, rng);
        run_case({rows, dim, weight, 2, true, true, false}, rng);  // in place + act
      }
  for (int64_t dim : {576, 4096, 12288}) {
    run_case({3, dim, true, 0, true, false, false}, rng);  // fp32 act
    run_case({3, dim, true, 1, true, false, true}, rng);   // misaligned: the scalar / strided path
    run_case({3, dim, true, 2, true, true, true}, rng);
  }
}

TEST(CudaRmsNorm, RefusesABias) {
  SKIP_WITHOUT_GPU();
  Dev x(64 * 4), b(64 * 4), out(64 * 2);
  EXPECT_THROW(
      launch_norm(NormKind::Rms, x.f(), 1, 64, nullptr, b.f(), kEps, nullptr, out.p, 1, nullptr),
      Error);
}

}  // namespace
}  // namespace sf::cuda::model
