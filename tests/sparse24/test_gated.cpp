// The gated (SwiGLU / GeGLU) epilogue of gemm_cpu and gemm_dense_cpu on a fuse_gate_up weight,
// against the unfused product in fp64: y[m, j] = act(x . gate_j + bg_j) * (x . up_j + bu_j) +
// residual[m, j]. Every x / y / weight dtype, every activation, M across both CPU paths, odd F and
// K not a multiple of 32; and fuse_gate_up itself (dense and compressed).
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

std::vector<uint8_t> random_buf(size_t n, DType dt, std::mt19937& rng, float lo = -1.0f,
                                float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<uint8_t> b(n * dtype_size(dt));
  for (size_t i = 0; i < n; ++i) store_from_float(b.data(), dt, i, u(rng));
  return b;
}

// A random 2:4 matrix [rows, cols] of dtype dt.
std::vector<uint8_t> random_24(int64_t rows, int64_t cols, DType dt, std::mt19937& rng) {
  auto w = random_buf(size_t(rows * cols), dt, rng);
  apply_mask(w.data(), dt, rows, cols, magnitude_mask({w.data(), dt, rows, cols}));
  return w;
}

double act_ref(Activation a, double v) {
  switch (a) {
    case Activation::None:
      return v;
    case Activation::ReLU:
      return v < 0 ? 0 : v;
    case Activation::GELU:
      return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
    case Activation::SiLU:
      return v / (1.0 + std::exp(-v));
    case Activation::GELUTanh:
      return v / (1.0 + std::exp(-2.0 * std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
  }
  return v;
}

// What computing act(g) in fp32 may cost: a few ulps of the result, times the argument of the
// exponential inside (its fp32 rounding is amplified by it: exp(a (1 + d)) = exp(a) (1 + a d)).
// The erf form of GELU also cancels in 1 + erf(g / sqrt 2) for negative g: an ulp of 1 times |g|.
double act_error(Activation a, double g) {
  const double eps32 = std::ldexp(1.0, -24);
  const double arg = a == Activation::SiLU       ? std::fabs(g)
                     : a == Activation::GELUTanh ? 1.6 * std::fabs(g + 0.044715 * g * g * g)
                     : a == Activation::GELU     ? 0.5 * g * g
                                                 : 0.0;
  return 8.0 * eps32 * (1.0 + arg) * std::fabs(act_ref(a, g)) +
         (a == Activation::GELU ? 2.0 * eps32 * std::fabs(g) : 0.0);
}

double half_ulp(DType t) {
  return t == DType::F16    ? std::ldexp(1.0, -11)
         : t == DType::BF16 ? std::ldexp(1.0, -8)
                            : std::ldexp(1.0, -24);
}

void poison(std::vector<uint8_t>& y) {
  std::memset(y.data(), 0xff, y.size());
}  // NaN in every float type

struct Gated {
  int64_t f, k, m;
  DType wdt, xdt, ydt;
  Activation act;
  bool bias, residual;
  DType bdt = DType::F32, rdt = DType::F32;
};

// y (poisoned before the call) against the unfused fp64 reference from the same rounded inputs.
// Tolerance: gate and up are fp32 sums of K products, each off by at most ~4 sqrt(K) eps32
// sum |x w| (the rounding walk, 4x margin); that error reaches y through the product as
// |act'(g)| |u| dg + |act(g)| du, with |act'| <= 1.13 for every activation here (1.2 used); the
// activation costs act_error(g), the product, bias and residual a few fp32 ulps of what they
// touch; the output rounds to half an ulp of its format, and fp16's subnormal step 2^-24 is the
// absolute floor.
void check(const Gated& c, const std::vector<uint8_t>& gate, const std::vector<uint8_t>& up,
           const std::vector<uint8_t>& x, const std::vector<uint8_t>& bias,
           const std::vector<uint8_t>& res, const std::vector<uint8_t>& y,
           const std::string& what) {
  const double eps32 = std::ldexp(1.0, -24);
  int bad = 0;
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < c.f; ++j) {
      double g = 0, u = 0, gmag = 0, umag = 0;
      for (int64_t k = 0; k < c.k; ++k) {
        const double xv = load_as_float(x.data(), c.xdt, size_t(i * c.k + k));
        const double pg = xv * load_as_float(gate.data(), c.wdt, size_t(j * c.k + k));
        const double pu = xv * load_as_float(up.data(), c.wdt, size_t(j * c.k + k));
        g += pg, u += pu, gmag += std::fabs(pg), umag += std::fabs(pu);
      }
      if (c.bias) {  // bias in the fused order: [2j] gate's, [2j + 1] up's
        g += load_as_float(bias.data(), c.bdt, size_t(2 * j));
        u += load_as_float(bias.data(), c.bdt, size_t(2 * j + 1));
      }
      const double a = act_ref(c.act, g);
      double ref = a * u;
      const double r = c.residual ? load_as_float(res.data(), c.rdt, size_t(i * c.f + j)) : 0.0;
      ref += r;
      const double got = load_as_float(y.data(), c.ydt, size_t(i * c.f + j));
      const double walk = 4.0 * std::sqrt(double(c.k)) * eps32;
      const double tol = 1.2 * std::fabs(u) * walk * gmag + std::fabs(a) * walk * umag +
                         act_error(c.act, g) * std::fabs(u) +
                         8.0 * eps32 * (std::fabs(a * u) + std::fabs(r)) +
                         half_ulp(c.ydt) * std::fabs(ref) + (c.ydt == DType::F16 ? eps32 : 1e-30);
      if (!(std::fabs(got - ref) <= tol) && bad++ < 5)
        ADD_FAILURE() << what << " y[" << i << ", " << j << "] = " << got << ", expected " << ref
                      << " (tol " << tol << ")";
    }
  ASSERT_EQ(bad, 0) << what << ": " << bad << " mismatches";
}

void run_case(const Gated& c, std::mt19937& rng, bool also_dense) {
  const auto gate = random_24(c.f, c.k, c.wdt, rng), up = random_24(c.f, c.k, c.wdt, rng);
  const auto x = random_buf(size_t(c.m * c.k), c.xdt, rng);
  const auto bias = random_buf(size_t(2 * c.f), c.bdt, rng, -0.5f, 0.5f);
  const auto res = random_buf(size_t(c.m * c.f), c.rdt, rng);
  Epilogue ep;
  ep.gated = true;
  ep.act = c.act;
  if (c.bias) ep.bias = bias.data(), ep.bias_dtype = c.bdt;
  if (c.residual) ep.residual = res.data(), ep.residual_dtype = c.rdt;
  const std::string what = fmt::format("W {} F={} K={} M={} x {} y {} act {} bias {} residual {}",
                                       dtype_name(c.wdt), c.f, c.k, c.m, dtype_name(c.xdt),
                                       dtype_name(c.ydt), int(c.act), c.bias, c.residual);
  // One element past y: poisoned and checked untouched (a kernel writing N instead of N / 2
  // columns).
  std::vector<uint8_t> y(size_t(c.m * c.f + 1) * dtype_size(c.ydt));
  const Compressed fused = fuse_gate_up(compress({gate.data(), c.wdt, c.f, c.k}),
                                        compress({up.data(), c.wdt, c.f, c.k}));
  poison(y);
  gemm_cpu(fused, x.data(), c.xdt, c.m, y.data(), c.ydt, ep);
  check(c, gate, up, x, bias, res, y, "sparse " + what);
  EXPECT_TRUE(std::isnan(load_as_float(y.data(), c.ydt, size_t(c.m * c.f))))
      << "sparse " << what << " wrote past y";
  if (also_dense) {
    std::vector<uint8_t> wd(size_t(2 * c.f * c.k) * dtype_size(c.wdt));
    fuse_gate_up({gate.data(), c.wdt, c.f, c.k}, {up.data(), c.wdt, c.f, c.k}, wd.data());
    poison(y);
    gemm_dense_cpu({wd.data(), c.wdt, 2 * c.f, c.k}, x.data(), c.xdt, c.m, y.data(), c.ydt, ep);
    check(c, gate, up, x, bias, res, y, "dense " + what);
    EXPECT_TRUE(std::isnan(load_as_float(y.data(), c.ydt, size_t(c.m * c.f))))
        << "dense " << what << " wrote past y";
  }
}

// M from the rows path (< 16) into the lanes path (several 64-lane slices, a 256-row chunk and a
// partial one), F odd (N = 2F not a multiple of 16: the last 16-row block holds a partial pair
// set) and K = 100 (not a multiple of 32), every dtype combination in rotation.
TEST(GatedCpu, SweepAgainstUnfusedFp64Reference) {
  std::mt19937 rng(424242);
  int combo = 0;
  for (DType wdt : kTypes)
    for (int64_t m : {1, 2, 7, 15, 16, 17, 64, 200, 300}) {
      for (int rep = 0; rep < 2; ++rep, ++combo) {
        Gated c{37,
                100,
                m,
                wdt,
                kTypes[combo % 3],
                kTypes[(combo / 3 + rep) % 3],
                kActs[combo % 5],
                combo % 2 == 0,
                combo % 3 != 1,
                kTypes[(combo + 1) % 3],
                kTypes[(combo + 2) % 3]};
        run_case(c, rng, true);
      }
    }
}

TEST(GatedCpu, EveryKernelFamilyThisCpuRuns) {
  std::mt19937 rng(7);
  const CpuIsa best = cpu_isa_supported();
  for (CpuIsa isa : {CpuIsa::Generic, CpuIsa::Avx2, CpuIsa::Avx512}) {
    if (int(isa) > int(best)) continue;
    set_cpu_isa(isa);
    int combo = 0;
    for (DType wdt : kTypes)
      for (int64_t m : {1, 5, 15, 16, 33, 130}) {
        Gated c{24,
                132,
                m,
                wdt,
                kTypes[combo % 3],
                kTypes[(combo + 1) % 3],
                kActs[(combo + 3) % 5],
                combo % 2 == 1,
                combo % 4 == 0};
        run_case(c, rng, true);
        ++combo;
      }
  }
  set_cpu_isa(CpuIsa::Auto);
}

// The Llama shape of one layer, scaled down: SiLU, no bias, bf16 weights, several K blocks.
TEST(GatedCpu, SwiGluShape) {
  std::mt19937 rng(11);
  for (int64_t m : {1, 8, 40})
    run_case(
        Gated{88, 512, m, DType::BF16, DType::BF16, DType::BF16, Activation::SiLU, false, false},
        rng, true);
}

TEST(GatedCpu, FusedCompressedIsTheCompressedFusedMatrix) {
  std::mt19937 rng(3);
  for (DType dt : kTypes)
    for (auto [f, k] : {std::pair<int64_t, int64_t>{1, 4}, {5, 36}, {8, 64}, {13, 100}, {40, 96}}) {
      const auto gate = random_24(f, k, dt, rng), up = random_24(f, k, dt, rng);
      std::vector<uint8_t> fused(size_t(2 * f * k) * dtype_size(dt));
      fuse_gate_up({gate.data(), dt, f, k}, {up.data(), dt, f, k}, fused.data());
      for (int64_t j = 0; j < f; ++j) {  // rows 2j, 2j + 1
        const size_t rb = size_t(k) * dtype_size(dt);
        EXPECT_EQ(std::memcmp(fused.data() + size_t(2 * j) * rb, gate.data() + size_t(j) * rb, rb),
                  0);
        EXPECT_EQ(
            std::memcmp(fused.data() + size_t(2 * j + 1) * rb, up.data() + size_t(j) * rb, rb), 0);
      }
      const Compressed a =
          fuse_gate_up(compress({gate.data(), dt, f, k}), compress({up.data(), dt, f, k}));
      const Compressed b = compress({fused.data(), dt, 2 * f, k});
      EXPECT_EQ(a.rows, 2 * f);
      EXPECT_EQ(a.rows_padded, b.rows_padded);
      EXPECT_EQ(a.cols_padded, b.cols_padded);
      EXPECT_TRUE(a.values == b.values) << dtype_name(dt) << " F=" << f << " K=" << k;
      EXPECT_TRUE(a.meta == b.meta) << dtype_name(dt) << " F=" << f << " K=" << k;
      EXPECT_FALSE(find_bad_metadata(a).has_value());
      std::vector<uint8_t> back(fused.size());
      decompress(a, back.data());
      EXPECT_TRUE(back == fused);
    }
}

TEST(GatedCpu, RejectsWhatItCannotFuseOrRun) {
  std::vector<float> w(3 * 32, 0.0f), x(64, 1.0f), y(64);
  const Compressed odd = compress({w.data(), DType::F32, 3, 32});
  Epilogue ep;
  ep.gated = true;
  try {
    gemm_cpu(odd, x.data(), DType::F32, 1, y.data(), DType::F32, ep);
    FAIL() << "a gated product over 3 rows ran";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("fuse_gate_up"), std::string::npos) << e.what();
  }
  EXPECT_THROW(gemm_dense_cpu({w.data(), DType::F32, 3, 32}, x.data(), DType::F32, 1, y.data(),
                              DType::F32, ep),
               Error);
  std::vector<float> out(4 * 32);
  EXPECT_THROW(
      fuse_gate_up({w.data(), DType::F32, 2, 32}, {w.data(), DType::F32, 3, 32}, out.data()),
      Error);
  EXPECT_THROW(
      fuse_gate_up({w.data(), DType::F32, 2, 32}, {w.data(), DType::F16, 2, 32}, out.data()),
      Error);
  const Compressed a = compress({w.data(), DType::F32, 2, 32}),
                   b = compress({w.data(), DType::F32, 2, 28});
  EXPECT_THROW(fuse_gate_up(a, b), Error);
}

}  // namespace
}  // namespace sf::s24
