// GPU tests of the gated (SwiGLU / GeGLU) epilogue and of the SiLU and GELU-tanh activations, in
// every CUDA product family: the 2:4 decode kernels (plain, split-K, shared-x, persistent, bulk),
// the 2:4 prefill kernels (mma.sp, wgmma.sp), the dense fallback, the dense GEMV (CUDA-core,
// tensor-core, persistent, bulk), cuBLASLt (LtLinear) and the cuBLAS / cuSPARSELt baselines.
//
// The weight is a fused gate/up matrix (s24::fuse_gate_up: rows 2j, 2j + 1 = gate j, up j) and the
// reference is the unfused product in fp64 from the same rounded inputs: y[m, j] = act(x . gate_j +
// b[2j]) * (x . up_j + b[2j + 1]) + r[m, j]. Fresh random inputs, y poisoned (all-ones bytes: NaN
// in every float format) with a poisoned guard past its end that must stay untouched (a kernel
// writing N instead of N / 2 columns shows there), M in {1, 2, 7, 16, 17, 64, 200, 256, 1100}, F
// odd (N = 2F not a multiple of 16), K not a multiple of 32 (and not of 8, where the kernel
// allows), fp16 and bf16. Skips with the reason when no GPU is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels/cuda/baselines.hpp"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/cuda_api.hpp"
#include "kernels/cuda/lt_linear.hpp"
#include "kernels/cuda/model/model_kernels.hpp"
#include "kernels/cuda/prefill_kernels.hpp"
#include "kernels/cuda/sparse_gemm.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::cuda {
namespace {

using s24::Activation;

void ck(cudaError_t e) {
  ASSERT_EQ(e, cudaSuccess) << cudaGetErrorString(e);
}

struct Dev {
  void* p = nullptr;
  explicit Dev(size_t bytes) { EXPECT_EQ(cudaMalloc(&p, bytes ? bytes : 1), cudaSuccess); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
};

std::mt19937_64& rng() {
  static std::mt19937_64 r(20270105);
  return r;
}

std::vector<uint8_t> random_buf(size_t count, DType dt, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<uint8_t> b(count * dtype_size(dt));
  for (size_t i = 0; i < count; ++i) store_from_float(b.data(), dt, i, u(rng()));
  return b;
}

// A random 2:4 matrix [rows, cols] (magnitude-pruned), or a dense one.
std::vector<uint8_t> random_weight(int64_t rows, int64_t cols, DType dt, bool sparse) {
  auto w = random_buf(size_t(rows * cols), dt);
  if (sparse)
    s24::apply_mask(w.data(), dt, rows, cols, s24::magnitude_mask({w.data(), dt, rows, cols}));
  return w;
}

double act_ref(Activation a, double v) {
  switch (a) {
    case Activation::None:
      return v;
    case Activation::ReLU:
      return v > 0 ? v : 0;
    case Activation::GELU:
      return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
    case Activation::SiLU:
      return v / (1.0 + std::exp(-v));
    case Activation::GELUTanh:  // 0.5 v (1 + tanh(u)) without fp64's own cancellation for v < 0
      return v / (1.0 + std::exp(-2.0 * std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
  }
  return v;
}

// What computing act(g) in fp32 may cost: a few ulps of the result, times the argument of the
// exponential inside (its fp32 rounding is amplified by it: exp(a (1 + d)) = exp(a) (1 + a d));
// __expf (SiLU) stays within that. The erf form of GELU also cancels in 1 + erf(g / sqrt 2) for
// negative g: an ulp of 1 times |g|.
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

// One random problem: gate and up [F, K] (2:4 or dense), fused [2F, K], x [M, K], a fused bias
// [2F], a residual [M, 2F] (its first M x F elements serve the gated outputs), and the fp64
// products v = x W^T with sum |x w| per element (for the tolerance).
struct Problem {
  int64_t f = 0, k = 0, m = 0;
  DType dt = DType::F16;
  bool sparse = true;
  std::vector<uint8_t> gate, up, fused, x;
  std::vector<double> v, mag;  // [M, 2F]
  int64_t n() const { return 2 * f; }
};

Problem make_problem(int64_t f, int64_t k, int64_t m, DType dt, bool sparse) {
  Problem p;
  p.f = f, p.k = k, p.m = m, p.dt = dt, p.sparse = sparse;
  p.gate = random_weight(f, k, dt, sparse);
  p.up = random_weight(f, k, dt, sparse);
  p.fused.resize(size_t(2 * f * k) * dtype_size(dt));
  s24::fuse_gate_up({p.gate.data(), dt, f, k}, {p.up.data(), dt, f, k}, p.fused.data());
  p.x = random_buf(size_t(m * k), dt);
  const int64_t n = p.n();
  p.v.assign(size_t(m * n), 0.0);
  p.mag.assign(size_t(m * n), 0.0);
  std::vector<double> xd(size_t(m * k)), wd(size_t(n * k));
  for (size_t i = 0; i < xd.size(); ++i) xd[i] = load_as_float(p.x.data(), dt, i);
  for (size_t i = 0; i < wd.size(); ++i) wd[i] = load_as_float(p.fused.data(), dt, i);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0, mg = 0;
      const double* xr = xd.data() + size_t(i * k);
      const double* wr = wd.data() + size_t(j * k);
      for (int64_t kk = 0; kk < k; ++kk) {
        const double pr = xr[kk] * wr[kk];
        acc += pr;
        mg += std::fabs(pr);
      }
      p.v[size_t(i * n + j)] = acc;
      p.mag[size_t(i * n + j)] = mg;
    }
  return p;
}

// What one run computes.
struct Spec {
  Activation act = Activation::SiLU;
  bool gated = true;
  bool bias = false, residual = false;
  DType bias_dt = DType::F32, res_dt = DType::F32, y_dt = DType::F16;
  bool inter16 = false;  // the library path rounded v to the weight's dtype before the epilogue
  std::string name;      // the kernel, for messages
};

// The device side of a problem and spec: x, bias, residual, poisoned y with a poisoned guard.
struct Buffers {
  static constexpr size_t kGuard = 64;  // bytes past y
  std::vector<uint8_t> bias, res;
  std::unique_ptr<Dev> x, b, r, y;
  size_t y_bytes = 0;
};

int64_t out_cols(const Problem& p, const Spec& s) {
  return s.gated ? p.f : p.n();
}

Buffers make_buffers(const Problem& p, const Spec& s) {
  Buffers d;
  d.bias = random_buf(size_t(p.n()), s.bias_dt, -0.5f, 0.5f);
  d.res = random_buf(size_t(p.m * out_cols(p, s)), s.res_dt);
  d.x = std::make_unique<Dev>(p.x.size());
  d.b = std::make_unique<Dev>(d.bias.size());
  d.r = std::make_unique<Dev>(d.res.size());
  d.y_bytes = size_t(p.m * out_cols(p, s)) * dtype_size(s.y_dt);
  d.y = std::make_unique<Dev>(d.y_bytes + Buffers::kGuard);
  ck(cudaMemcpy(d.x->p, p.x.data(), p.x.size(), cudaMemcpyHostToDevice));
  ck(cudaMemcpy(d.b->p, d.bias.data(), d.bias.size(), cudaMemcpyHostToDevice));
  ck(cudaMemcpy(d.r->p, d.res.data(), d.res.size(), cudaMemcpyHostToDevice));
  ck(cudaMemset(d.y->p, 0xff, d.y_bytes + Buffers::kGuard));
  return d;
}

EpilogueParams params(const Problem& p, const Spec& s, const Buffers& d) {
  EpilogueParams ep;
  if (s.bias) ep.bias = d.b->p, ep.bias_dt = int(s.bias_dt);
  if (s.residual) ep.residual = d.r->p, ep.residual_dt = int(s.res_dt);
  ep.act = int(s.act);
  ep.gated = s.gated ? 1 : 0;
  ep.y = d.y->p;
  ep.y_dt = int(s.y_dt);
  ep.ldy = out_cols(p, s);
  return ep;
}

// y against the fp64 reference, element by element, and the guard untouched.
//
// Tolerance, from the dtype and K: the products of 16-bit inputs are exact in fp32, and any fp32
// summation order of K of them (the tensor cores' included, whose internal rounding need not be
// round-to-nearest) is off by at most 2 K eps32 sum |x w| (eps32 = 2^-24): dv. A library path that
// rounds v to 16 bits first adds half an ulp of that format, |v| u16. That error reaches y through
// the epilogue as 1.2 |up| dg + |act(g)| du (|act'| <= 1.13 for every activation here; the up
// factor is 1 when not gated); the activation itself costs act_error(g) (a few fp32 ulps of its
// value, times the argument of its exponential), the product, bias and residual additions an ulp
// each of what they touch; the output rounds to half an ulp of
// y's format, and fp16's subnormal step 2^-24 is the absolute floor.
void check(const Problem& p, const Spec& s, const Buffers& d) {
  SCOPED_TRACE(::testing::Message()
               << s.name << " F=" << p.f << " K=" << p.k << " M=" << p.m << " w "
               << dtype_name(p.dt) << (p.sparse ? " 2:4" : " dense") << " act " << int(s.act)
               << (s.gated ? " gated" : " plain") << " bias " << s.bias << " residual "
               << s.residual << " y " << dtype_name(s.y_dt));
  ck(cudaDeviceSynchronize());
  ck(cudaGetLastError());
  std::vector<uint8_t> y(d.y_bytes + Buffers::kGuard);
  ck(cudaMemcpy(y.data(), d.y->p, y.size(), cudaMemcpyDeviceToHost));
  const double eps32 = std::ldexp(1.0, -24);
  const double u16 = half_ulp(p.dt);
  const int64_t n = p.n(), cols = out_cols(p, s);
  int bad = 0;
  for (int64_t i = 0; i < p.m; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t ng = s.gated ? 2 * j : j;  // the fused row holding the (gate) value
      auto pre = [&](int64_t nr, double& val, double& err) {
        val = p.v[size_t(i * n + nr)];
        err = 2.0 * double(p.k) * eps32 * p.mag[size_t(i * n + nr)] +
              (s.inter16 ? u16 * std::fabs(val) : 0.0);
        if (s.bias) {
          const double b = load_as_float(d.bias.data(), s.bias_dt, size_t(nr));
          val += b;
          err += eps32 * std::fabs(val);
        }
      };
      double g, dg, u = 1.0, du = 0.0;
      pre(ng, g, dg);
      if (s.gated) pre(ng + 1, u, du);
      const double a = act_ref(s.act, g);
      const double r =
          s.residual ? load_as_float(d.res.data(), s.res_dt, size_t(i * cols + j)) : 0.0;
      const double ref = a * u + r;
      double tol = 1.2 * std::fabs(u) * dg + std::fabs(a) * du +
                   act_error(s.act, g) * std::fabs(u) +
                   2.0 * eps32 * (std::fabs(a * u) + std::fabs(r));
      tol += half_ulp(s.y_dt) * (std::fabs(ref) + tol) + (s.y_dt == DType::F16 ? eps32 : 1e-30);
      const double got = load_as_float(y.data(), s.y_dt, size_t(i * cols + j));
      if (!(std::fabs(got - ref) <= tol) && bad++ < 5)
        ADD_FAILURE() << "y[" << i << ", " << j << "] = " << got << ", expected " << ref << " (tol "
                      << tol << ")";
    }
  EXPECT_EQ(bad, 0) << bad << " of " << p.m * cols << " outputs wrong or unwritten";
  size_t touched = 0;
  for (size_t i = d.y_bytes; i < y.size(); ++i) touched += y[i] != 0xff;
  EXPECT_EQ(touched, 0u) << "bytes past y were written";
}

const int64_t kMs[] = {1, 2, 7, 16, 17, 64, 200, 256, 1100};
const Activation kGatedActs[] = {Activation::SiLU, Activation::GELUTanh, Activation::GELU,
                                 Activation::None, Activation::ReLU};

// The specs one product runs: gated with each activation in rotation (SiLU first: Llama), and the
// plain SiLU and GELU-tanh epilogues over the same fused weight; bias, residual and their dtypes,
// and the output dtype rotate with `i`.
std::vector<Spec> specs_for(int i, const std::string& name, bool with_bias = true) {
  const DType outs[] = {DType::F16, DType::BF16, DType::F32};
  std::vector<Spec> v;
  Spec g;
  g.name = name;
  g.act = kGatedActs[i % 5];
  g.bias = with_bias && i % 3 == 2;
  g.residual = i % 2 == 1;
  g.bias_dt = outs[(i + 1) % 3];
  g.res_dt = outs[(i + 2) % 3];
  g.y_dt = outs[i % 3];
  v.push_back(g);
  for (Activation a : {Activation::SiLU, Activation::GELUTanh}) {
    Spec s = g;
    s.gated = false;
    s.act = a;
    s.bias = with_bias && a == Activation::GELUTanh;
    s.y_dt = outs[(i + 1 + int(a)) % 3];
    v.push_back(s);
  }
  return v;
}

class GatedGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
    gemm_ = std::make_unique<SparseGemm>(nullptr);
  }
  void TearDown() override {
    set_persistent_kernels(-1);
    set_gemv_mma_min_m(-1);
  }

  // Every spec of specs_for on the fused 2:4 weight of p through `choice` (null: run()'s own).
  void sparse_case(const Problem& p, const KernelChoice* choice, int i, const std::string& name) {
    const s24::Compressed fused = s24::fuse_gate_up(s24::compress({p.gate.data(), p.dt, p.f, p.k}),
                                                    s24::compress({p.up.data(), p.dt, p.f, p.k}));
    DeviceWeight24 w = upload_weight(fused, gemm_->stream());
    for (const Spec& s : specs_for(i, name)) {
      Buffers d = make_buffers(p, s);
      DeviceEpilogue ep;
      if (s.bias) ep.bias = d.b->p, ep.bias_dtype = s.bias_dt;
      if (s.residual) ep.residual = d.r->p, ep.residual_dtype = s.res_dt;
      ep.act = s.act;
      ep.gated = s.gated;
      if (choice)
        gemm_->run_with(*choice, w, d.x->p, p.m, d.y->p, s.y_dt, ep);
      else
        gemm_->run(w, d.x->p, p.m, d.y->p, s.y_dt, ep);
      check(p, s, d);
    }
    free_weight(w);
  }

  // The 2:4 families: each choice over the M sweep, fp16 and bf16 alternating.
  void sweep_sparse(const std::vector<KernelChoice>& choices, int64_t f, int64_t k,
                    const std::vector<int64_t>& ms) {
    int i = 0;
    for (const auto& ch : choices)
      for (int64_t m : ms) {
        const Problem p = make_problem(f, k, m, i % 2 ? DType::BF16 : DType::F16, true);
        sparse_case(p, &ch, i, ch.name());
        ++i;
      }
  }

  std::unique_ptr<SparseGemm> gemm_;
};

std::vector<int64_t> all_ms() {
  return std::vector<int64_t>(std::begin(kMs), std::end(kMs));
}

// The decode kernels (plain and shared-x, one split and split-K) over every M: past 64 tokens they
// tile grid.z. K = 328: a multiple of 8 (the shared-x kernel runs) but not of 32.
TEST_F(GatedGpuTest, DecodeKernels) {
  std::vector<KernelChoice> choices = {
      {GemmPath::Decode, 4, 1},          {GemmPath::Decode, 8, 1},
      {GemmPath::Decode, 8, 3},          {GemmPath::Decode, 4, 1, true, 4},
      {GemmPath::Decode, 8, 1, true, 2}, {GemmPath::Decode, 4, 3, true, 2},
      {GemmPath::Decode, 8, 5, true, 1}};
  sweep_sparse(choices, 75, 328, all_ms());
}

// K = 100 is not a multiple of 8: the shared-x request runs the plain kernel.
TEST_F(GatedGpuTest, DecodeKernelsOddK) {
  sweep_sparse({{GemmPath::Decode, 8, 2}, {GemmPath::Decode, 4, 1, true, 4}}, 37, 100,
               {1, 7, 17, 64});
}

TEST_F(GatedGpuTest, PersistentAndBulkDecode) {
  set_persistent_kernels(kPersistentDecode);
  sweep_sparse({{GemmPath::Decode, 8, 1}, {GemmPath::Decode, 4, 1}}, 1100, 328, {1, 2, 7, 16, 17});
  // Bulk: M <= 8 on sm_90 (elsewhere the plain kernel runs and this checks that); F = 2122 gives
  // its persistent blocks several 16-row blocks each, K = 600 a partial last stage.
  set_persistent_kernels(kBulkDecode);
  sweep_sparse({{GemmPath::Decode, 8, 1}, {GemmPath::Decode, 4, 1}}, 2122, 600, {1, 2, 7});
}

TEST_F(GatedGpuTest, PrefillKernels) {
  std::vector<KernelChoice> choices;
  for (int tm : {64, 128}) {
    KernelChoice c{GemmPath::Prefill, 0, 0, false, 1};
    c.tile_m = tm;
    choices.push_back(c);
  }
  sweep_sparse(choices, 75, 328, all_ms());
}

TEST_F(GatedGpuTest, HopperPrefillKernel) {
  if (gemm_->arch() != 90)
    GTEST_SKIP() << "the wgmma.sp kernel runs on sm_90 only; this GPU is sm_" << gemm_->arch();
  ASSERT_TRUE(prefill_sm90_available(DType::F16) && prefill_sm90_available(DType::BF16))
      << "sm_90 GPU, but the wgmma.sp kernel is unavailable: built without sm_90a "
         "(SPARSEFLOW_CUDA_ARCHS=90a)?";
  std::vector<KernelChoice> choices;
  for (int rows : {128, 256}) {
    KernelChoice c{GemmPath::PrefillSm90, 0, 0};
    c.tile_m = rows;
    choices.push_back(c);
  }
  sweep_sparse(choices, 150, 328,
               all_ms());  // N = 300: past one 256-row tile, not a multiple of 16
}

TEST_F(GatedGpuTest, DenseFallbackAndAutomaticChoice) {
  sweep_sparse({{GemmPath::DenseFallback, 0, 0}}, 75, 100, all_ms());
  int i = 0;
  for (int64_t m : all_ms()) {  // run(): the kernel table's pick for each M
    const Problem p = make_problem(75, 328, m, i % 2 ? DType::F16 : DType::BF16, true);
    sparse_case(p, nullptr, i++, "auto");
  }
}

TEST_F(GatedGpuTest, SparseGemmRejectsAnOddGatedWeight) {
  std::vector<uint16_t> w(size_t(3 * 32), 0);
  DeviceWeight24 dw = upload_weight(s24::compress({w.data(), DType::F16, 3, 32}));
  Dev x(64 * 2), y(64 * 2);
  DeviceEpilogue ep;
  ep.gated = true;
  try {
    gemm_->run(dw, x.p, 1, y.p, DType::F16, ep);
    ADD_FAILURE() << "a gated product over 3 rows ran";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::InvalidArgument);
  }
  free_weight(dw);
}

// ---- dense ------------------------------------------------------------------------------------

// launch_gemv on the fused dense weight, M <= 8: the CUDA-core kernel (mma off), the tensor-core
// kernel (K a multiple of 32), the persistent and the bulk variants (rows a multiple of 512 bytes).
TEST_F(GatedGpuTest, DenseGemvVariants) {
  struct Variant {
    const char* name;
    int mma_min_m;  // set_gemv_mma_min_m: 0 never, 1 from M = 1
    int persistent;
  };
  const Variant variants[] = {{"gemv", 0, 0},
                              {"gemv_mma", 1, 0},
                              {"gemv_persistent", 0, kPersistentGemv},
                              {"gemv_bulk", 0, kBulkGemv}};
  int i = 0;
  for (const Variant& var : variants)
    for (auto [f, k] : {std::pair<int64_t, int64_t>{75, 328}, {1100, 512}, {37, 2048}})
      for (int64_t m : {1, 2, 7, 8}) {
        set_gemv_mma_min_m(var.mma_min_m);
        set_persistent_kernels(var.persistent);
        const Problem p = make_problem(f, k, m, i % 2 ? DType::BF16 : DType::F16, false);
        Dev w(p.fused.size());
        ck(cudaMemcpy(w.p, p.fused.data(), p.fused.size(), cudaMemcpyHostToDevice));
        for (const Spec& s : specs_for(i, var.name)) {
          Buffers d = make_buffers(p, s);
          ASSERT_TRUE(
              model::launch_gemv(w.p, int(p.dt), d.x->p, p.m, p.n(), p.k, params(p, s, d), nullptr))
              << var.name << " refused F=" << f << " K=" << k;
          check(p, s, d);
        }
        ++i;
      }
  // An fp32 weight takes the CUDA-core kernel.
  set_gemv_mma_min_m(-1);
  set_persistent_kernels(0);
  const int64_t f = 40, k = 260, m = 3;
  Problem p = make_problem(f, k, m, DType::F16, false);
  std::vector<float> w32(p.fused.size() / 2), x32(p.x.size() / 2);
  for (size_t j = 0; j < w32.size(); ++j) w32[j] = load_as_float(p.fused.data(), DType::F16, j);
  for (size_t j = 0; j < x32.size(); ++j) x32[j] = load_as_float(p.x.data(), DType::F16, j);
  Dev w(w32.size() * 4), x(x32.size() * 4);
  ck(cudaMemcpy(w.p, w32.data(), w32.size() * 4, cudaMemcpyHostToDevice));
  ck(cudaMemcpy(x.p, x32.data(), x32.size() * 4, cudaMemcpyHostToDevice));
  Spec s;
  s.name = "gemv fp32";
  s.y_dt = DType::F32;
  s.residual = true;
  Buffers d = make_buffers(p, s);
  ASSERT_TRUE(model::launch_gemv(w.p, 0, x.p, m, p.n(), k, params(p, s, d), nullptr));
  check(p, s, d);
  // Odd N: no gate/up pairs, refused (the caller keeps its own path).
  s.y_dt = DType::F16;
  EXPECT_FALSE(model::launch_gemv(w.p, 0, x.p, m, p.n() - 1, k, params(p, s, d), nullptr));
}

// cuBLASLt: the product (and its bias) into a [M, 2F] workspace, then the gated epilogue kernel;
// the workspace in fp32 and in the weight's 16-bit type.
TEST_F(GatedGpuTest, CublasLtGatedProduct) {
  LtLinear lt;
  Dev ws(LtLinear::kWorkspaceBytes);
  int i = 0;
  for (auto [f, k] : {std::pair<int64_t, int64_t>{64, 256}, {75, 328}})
    for (int64_t m : all_ms()) {
      const Problem p = make_problem(f, k, m, i % 2 ? DType::BF16 : DType::F16, false);
      Dev w(p.fused.size());
      ck(cudaMemcpy(w.p, p.fused.data(), p.fused.size(), cudaMemcpyHostToDevice));
      for (int inter16 : {0, 1}) {
        Spec s;
        s.name = inter16 ? "cublaslt (16-bit workspace)" : "cublaslt (fp32 workspace)";
        s.act = kGatedActs[i % 5];
        s.inter16 = inter16;
        s.bias = i % 2 == 0;
        s.bias_dt = inter16 ? p.dt : DType::F32;  // the bias types cuBLASLt takes for that output
        s.residual = i % 3 != 0;                  // fp32 only (LtProduct)
        s.y_dt = i % 3 == 1 ? DType::F32 : p.dt;
        Buffers d = make_buffers(p, s);
        Dev gu(size_t(m * p.n()) * (inter16 ? 2 : 4));
        LtProduct q;
        q.w = w.p;
        q.x = d.x->p;
        q.m = m;
        q.out = p.n();
        q.in = k;
        q.act_dt = int(p.dt);
        if (s.bias) q.bias = d.b->p, q.bias_dt = int(s.bias_dt);
        q.residual = s.residual ? static_cast<const float*>(d.r->p) : nullptr;
        q.y = d.y->p;
        q.y_dt = int(s.y_dt);
        q.gated = true;
        q.gated_act = int(s.act);
        q.gate_up = gu.p;
        q.gate_up_dt = inter16 ? int(p.dt) : 0;
        if (!lt.run(q, ws.p, LtLinear::kWorkspaceBytes, nullptr)) {
          // cuBLASLt may have no algorithm for an unaligned shape; the aligned one must run.
          EXPECT_NE(f, 64) << "cuBLASLt refused M=" << m << " out=" << p.n() << " in=" << k;
          continue;
        }
        check(p, s, d);
      }
      ++i;
    }
  LtProduct bad;
  bad.gated = true;
  bad.relu = true;
  bad.out = 4;
  EXPECT_THROW(lt.run(bad, ws.p, LtLinear::kWorkspaceBytes, nullptr), Error);
}

// The baselines: cuBLAS (DenseGemm) and cuSPARSELt (when built with it) into a [M, 2F] workspace in
// the weight's type, then the gated epilogue kernel.
TEST_F(GatedGpuTest, BaselineGatedProducts) {
  DenseGemm dense(nullptr);
  int i = 0;
  for (int64_t m : all_ms()) {
    for (bool sparse : {false, true}) {
      if (sparse && !CusparseLtGemm::available()) continue;
      const int64_t f = 64, k = 256;  // cuSPARSELt wants 16-aligned dimensions
      const Problem p = make_problem(f, k, m, i % 2 ? DType::BF16 : DType::F16, sparse);
      Dev w(p.fused.size());
      ck(cudaMemcpy(w.p, p.fused.data(), p.fused.size(), cudaMemcpyHostToDevice));
      Spec s;
      s.name = sparse ? "cusparselt" : "cublas";
      s.act = kGatedActs[i % 5];
      s.inter16 = true;
      s.residual = i % 2 == 1;
      s.res_dt = i % 3 == 0 ? DType::F32 : p.dt;
      s.y_dt = i % 3 == 1 ? DType::F32 : p.dt;
      if (!sparse) {
        Buffers d = make_buffers(p, s);
        Dev gu(size_t(m * p.n()) * 2);
        dense.run_gated(w.p, d.x->p, gu.p, m, p.n(), k, p.dt, params(p, s, d));
        check(p, s, d);
      } else {
        CusparseLtGemm sp(m, p.n(), k, p.dt, nullptr);
        void* wc = sp.compress(w.p);
        // x and the workspace with room for the padded M (cuSPARSELt's alignment); the padding rows
        // of x are zeros and their outputs are not stored.
        Buffers d = make_buffers(p, s);
        Dev xp(size_t(sp.padded_m() * k) * 2), gu(size_t(sp.padded_m() * p.n()) * 2);
        ck(cudaMemset(xp.p, 0, size_t(sp.padded_m() * k) * 2));
        ck(cudaMemcpy(xp.p, p.x.data(), p.x.size(), cudaMemcpyHostToDevice));
        sp.search(wc, xp.p, gu.p);
        sp.run_gated(wc, xp.p, gu.p, params(p, s, d));
        check(p, s, d);
        cudaFree(wc);
      }
      ++i;
    }
  }
}

}  // namespace
}  // namespace sf::cuda
