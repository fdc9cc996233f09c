// gemm_cpu and gemm_dense_cpu against an fp64 reference: M sweep, odd N, K not a multiple of 32,
// every epilogue, every x / y / weight dtype, every CPU kernel family this machine can run.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/error.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::s24 {
namespace {

const DType kTypes[3] = {DType::F32, DType::F16, DType::BF16};
const Activation kActs[5] = {Activation::None, Activation::ReLU, Activation::GELU, Activation::SiLU,
                             Activation::GELUTanh};
const int64_t kMs[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 255, 256, 300};

std::vector<uint8_t> random_buf(size_t n, DType dt, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<uint8_t> b(n * dtype_size(dt));
  for (size_t i = 0; i < n; ++i) store_from_float(b.data(), dt, i, u(rng));
  return b;
}

double act_ref(Activation a, double v) {
  switch (a) {
    case Activation::None: return v;
    case Activation::ReLU: return v < 0 ? 0 : v;
    case Activation::GELU: return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
    case Activation::SiLU: return v / (1.0 + std::exp(-v));
    case Activation::GELUTanh: {
      // 0.5 v (1 + tanh(u)) written as v / (1 + exp(-2u)): even fp64's 1 + tanh(u) rounds to 0
      // below u ~ -19, and the tails are what the fp32 kernels are checked on.
      const double u = std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v);
      return v / (1.0 + std::exp(-2.0 * u));
    }
  }
  return v;
}

// Half an ulp of the output format, relative.
double out_rounding(DType t) {
  return t == DType::F16 ? std::ldexp(1.0, -11) : t == DType::BF16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -24);
}

struct Case {
  int64_t n, k, m;
  DType wdt, xdt, ydt;
  Epilogue ep;
};

// Checks y (poisoned with NaN before the call) against the fp64 reference computed from the same
// (already rounded) inputs, so the only differences are fp32 accumulation and output rounding.
void check(const Case& cs, const std::vector<uint8_t>& wdense, const std::vector<uint8_t>& x,
           const std::vector<uint8_t>& y, const std::string& what) {
  const double eps32 = std::ldexp(1.0, -24);
  int bad = 0;
  for (int64_t i = 0; i < cs.m; ++i)
    for (int64_t j = 0; j < cs.n; ++j) {
      double acc = 0.0, mag = 0.0;
      for (int64_t k = 0; k < cs.k; ++k) {
        const double p = double(load_as_float(x.data(), cs.xdt, size_t(i * cs.k + k))) *
                         double(load_as_float(wdense.data(), cs.wdt, size_t(j * cs.k + k)));
        acc += p;
        mag += std::fabs(p);
      }
      if (cs.ep.bias) acc += load_as_float(cs.ep.bias, cs.ep.bias_dtype, size_t(j));
      const double pre = acc;
      double ref = act_ref(cs.ep.act, pre);
      if (cs.ep.residual) ref += load_as_float(cs.ep.residual, cs.ep.residual_dtype, size_t(i * cs.n + j));
      const double got = load_as_float(y.data(), cs.ydt, size_t(i * cs.n + j));
      // fp32 accumulation of K products: rounding errors grow like sqrt(K) * eps32 relative to
      // sum |x w| (4x margin for the tail of the distribution); the activations have slope <= 1.13
      // (GELU; GELU-tanh and SiLU stay below 1.13 too), so 1.2x carries it through; bias/activation/residual each add a few fp32 ulps;
      // a 16-bit output adds half an ulp of its format (2^-11 fp16, 2^-8 bf16), and fp16's
      // subnormal spacing 2^-24 bounds the absolute part.
      const double tol = 1.2 * 4.0 * std::sqrt(double(cs.k)) * eps32 * mag +
                         8.0 * eps32 * (std::fabs(pre) + std::fabs(ref) + 1e-30) +
                         out_rounding(cs.ydt) * std::fabs(ref) + (cs.ydt == DType::F16 ? eps32 : 0.0);
      if (!(std::fabs(got - ref) <= tol) && bad++ < 5)
        ADD_FAILURE() << what << " m=" << i << " n=" << j << " got " << got << " ref " << ref
                      << " tol " << tol;
    }
  ASSERT_EQ(bad, 0) << what << ": " << bad << " mismatches";
}

void poison(std::vector<uint8_t>& y, DType t) {
  const size_t n = y.size() / dtype_size(t);
  for (size_t i = 0; i < n; ++i) {
    if (t == DType::F32) {
      const uint32_t nan = 0x7fc00000u;
      std::memcpy(y.data() + 4 * i, &nan, 4);
    } else {
      const uint16_t nan = t == DType::F16 ? 0x7e00 : 0x7fc0;
      std::memcpy(y.data() + 2 * i, &nan, 2);
    }
  }
}

// Runs the M sweep for one weight shape and dtype; `ms` limits the sweep (non-default ISAs).
void sweep(int64_t n, int64_t k, DType wdt, const std::vector<int64_t>& ms, bool also_dense,
           const std::string& tag) {
  std::mt19937 rng(uint32_t(n * 131 + k * 7 + int(wdt)));
  auto w = random_buf(size_t(n * k), wdt, rng);
  apply_mask(w.data(), wdt, n, k, magnitude_mask({w.data(), wdt, n, k}));
  const Compressed c = compress({w.data(), wdt, n, k});
  int combo = 0;
  for (int64_t m : ms) {
    for (int rep = 0; rep < 3; ++rep, ++combo) {
      Case cs{n, k, m, wdt, kTypes[combo % 3], kTypes[(combo / 3 + rep) % 3], {}};
      auto x = random_buf(size_t(m * k), cs.xdt, rng);
      const DType bdt = kTypes[(combo + 1) % 3], rdt = kTypes[(combo + 2) % 3];
      auto bias = random_buf(size_t(n), bdt, rng, -0.5f, 0.5f);
      auto res = random_buf(size_t(m * n), rdt, rng);
      cs.ep.act = kActs[combo % 5];
      if (combo % 2 == 0) cs.ep.bias = bias.data(), cs.ep.bias_dtype = bdt;
      if (combo % 5 < 2) cs.ep.residual = res.data(), cs.ep.residual_dtype = rdt;
      std::vector<uint8_t> y(size_t(m * n) * dtype_size(cs.ydt));
      const std::string what = fmt::format("{} W {} [{}, {}] M={} x {} y {} act {} bias {} residual {}", tag,
                                           dtype_name(wdt), n, k, m, dtype_name(cs.xdt), dtype_name(cs.ydt),
                                           int(cs.ep.act), cs.ep.bias != nullptr, cs.ep.residual != nullptr);
      poison(y, cs.ydt);
      gemm_cpu(c, x.data(), cs.xdt, m, y.data(), cs.ydt, cs.ep);
      check(cs, w, x, y, "sparse " + what);
      if (also_dense) {
        poison(y, cs.ydt);
        gemm_dense_cpu({w.data(), wdt, n, k}, x.data(), cs.xdt, m, y.data(), cs.ydt, cs.ep);
        check(cs, w, x, y, "dense " + what);
      }
    }
  }
}

TEST(GemmCpu, SweepAgainstFp64Reference) {
  const std::vector<int64_t> ms(std::begin(kMs), std::end(kMs));
  for (DType wdt : kTypes) {
    sweep(37, 100, wdt, ms, true, "best-isa");   // odd N, K % 32 != 0
    sweep(50, 292, wdt, {1, 5, 16, 70}, false, "best-isa");  // several 64-column K blocks
  }
}

TEST(GemmCpu, EveryKernelFamilyThisCpuRuns) {
  const CpuIsa best = cpu_isa_supported();
  for (CpuIsa isa : {CpuIsa::Generic, CpuIsa::Avx2, CpuIsa::Avx512}) {
    if (int(isa) > int(best)) {
      EXPECT_THROW(set_cpu_isa(isa), Error);
      continue;
    }
    set_cpu_isa(isa);
    EXPECT_EQ(cpu_isa(), isa);
    for (DType wdt : kTypes) sweep(45, 132, wdt, {1, 4, 15, 16, 33, 130}, true, cpu_isa_name(isa));
  }
  set_cpu_isa(CpuIsa::Auto);
  EXPECT_EQ(cpu_isa(), best);
}

TEST(GemmCpu, DenseMatrixNotPrunedMatchesReference) {
  // gemm_dense_cpu must not assume 2:4: a fully dense W.
  std::mt19937 rng(9);
  const int64_t n = 19, k = 70, m = 13;
  auto w = random_buf(size_t(n * k), DType::F32, rng);
  auto x = random_buf(size_t(m * k), DType::F16, rng);
  Case cs{n, k, m, DType::F32, DType::F16, DType::F32, {}};
  std::vector<uint8_t> y(size_t(m * n) * 4);
  poison(y, DType::F32);
  gemm_dense_cpu({w.data(), DType::F32, n, k}, x.data(), DType::F16, m, y.data(), DType::F32);
  check(cs, w, x, y, "dense unpruned");
}

TEST(GemmCpu, RejectsBadArguments) {
  std::vector<float> w(64, 0.0f), x(64, 1.0f), y(64);
  const Compressed c = compress({w.data(), DType::F32, 2, 32});
  EXPECT_THROW(gemm_cpu(c, x.data(), DType::I32, 1, y.data(), DType::F32), Error);
  EXPECT_THROW(gemm_cpu(c, x.data(), DType::F32, 1, x.data(), DType::F32), Error);  // aliasing
  EXPECT_THROW(gemm_cpu(c, nullptr, DType::F32, 1, y.data(), DType::F32), Error);
  Compressed broken = c;
  broken.meta.pop_back();
  EXPECT_THROW(gemm_cpu(broken, x.data(), DType::F32, 1, y.data(), DType::F32), Error);
  gemm_cpu(c, x.data(), DType::F32, 0, y.data(), DType::F32);  // M = 0 is a no-op
}

TEST(GemmCpu, ActivationFunctions) {
  EXPECT_EQ(apply_activation(Activation::ReLU, -2.0f), 0.0f);
  EXPECT_EQ(apply_activation(Activation::ReLU, 3.0f), 3.0f);
  EXPECT_TRUE(std::isnan(apply_activation(Activation::ReLU, NAN)));
  EXPECT_NEAR(apply_activation(Activation::GELU, 1.0f), 0.8413447460685429, 1e-6);  // Phi(1)
  EXPECT_NEAR(apply_activation(Activation::GELU, -1.0f), -0.15865525393145707, 1e-6);
  EXPECT_NEAR(apply_activation(Activation::SiLU, 2.0f), 2.0 / (1.0 + std::exp(-2.0)), 1e-6);
  EXPECT_NEAR(apply_activation(Activation::GELUTanh, 1.0f), 0.8411919906082768, 1e-6);
  EXPECT_NEAR(apply_activation(Activation::GELUTanh, -1.0f), -0.15880800939172324, 1e-6);
}

// Every activation against its fp64 definition over [-40, 40], both tails included: GELU-tanh
// and SiLU compute v * sigmoid(.), which must neither cancel nor overflow for large negative v.
// Relative tolerance: a few fp32 ulps for exp/erf/tanh and the arithmetic, times the argument of
// the exponential (the fp32 rounding of that argument is amplified by it: exp(a(1+d)) = exp(a)
// (1 + a d)). The erf form of GELU also cancels in 1 + erf(v / sqrt 2) for negative v, an absolute
// error up to an ulp of 1 times |v| / 2: that is the form the GELU contract names, so it is allowed.
// Results below 1e-37 may flush to -0 (exp(-2u) overflows to Inf there; fp32's normal range ends
// at 1.2e-38).
TEST(GemmCpu, ActivationsMatchFp64Definitions) {
  const double eps32 = std::ldexp(1.0, -24);
  for (Activation a : kActs) {
    int bad = 0;
    for (int i = -40000; i <= 40000; ++i) {
      const float v = float(i) * 1e-3f;
      const double dv = v;
      const double ref = act_ref(a, dv);
      const double got = apply_activation(a, v);
      const double arg = a == Activation::SiLU       ? std::fabs(dv)
                         : a == Activation::GELUTanh ? 1.6 * std::fabs(dv + 0.044715 * dv * dv * dv)
                         : a == Activation::GELU     ? 0.5 * dv * dv
                                                     : 0.0;
      const double tol = 8.0 * eps32 * std::fabs(ref) * (1.0 + arg) +
                         (a == Activation::GELU ? eps32 * std::fabs(dv) : 0.0) + 1e-37;
      if (!(std::fabs(got - ref) <= tol) && bad++ < 5)
        ADD_FAILURE() << "act " << int(a) << " v " << v << " got " << got << " ref " << ref << " tol " << tol;
    }
    EXPECT_EQ(bad, 0) << "act " << int(a);
    // Huge and infinite inputs: +-1e20 cubes to +-Inf inside GELU-tanh.
    const bool passes = a == Activation::None;
    EXPECT_EQ(apply_activation(a, 1e20f), 1e20f) << "act " << int(a);
    EXPECT_EQ(apply_activation(a, INFINITY), INFINITY) << "act " << int(a);
    EXPECT_EQ(apply_activation(a, -1e20f), passes ? -1e20f : 0.0f) << "act " << int(a);
    EXPECT_TRUE(std::isnan(apply_activation(a, NAN))) << "act " << int(a);
  }
}

}  // namespace
}  // namespace sf::s24
