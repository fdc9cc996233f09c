// GPU tests of the 2:4 sparse GEMM against an fp64 reference on the decompressed (pruned) weight.
// Fresh random inputs per case, output poisoned (all-ones bytes: NaN in every float format) before
// each run, M swept over 1..300 including non-multiples of 8, 16 and the tiles, every epilogue,
// fp16 and bf16, awkward N and K, and every path forced. Skips with the reason when no GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <tuple>
#include <vector>

#include "core/error.hpp"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/cuda_api.hpp"
#include "kernels/cuda/prefill_kernels.hpp"
#include "kernels/cuda/sparse_gemm.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::cuda {
namespace {

#define SKIP_WITHOUT_GPU()                                                   \
  do {                                                                       \
    if (const std::string why = unavailable_reason(); !why.empty()) GTEST_SKIP() << why; \
  } while (0)

void ck(cudaError_t e) { ASSERT_EQ(e, cudaSuccess) << cudaGetErrorString(e); }

struct Dev {
  void* p = nullptr;
  explicit Dev(size_t bytes) { EXPECT_EQ(cudaMalloc(&p, bytes ? bytes : 1), cudaSuccess); }
  ~Dev() { cudaFree(p); }
};

std::mt19937_64& rng() {
  static std::mt19937_64 r(20261122);
  return r;
}

// Random values of dtype dt (stored as raw bits), uniform in [-scale, scale].
std::vector<uint16_t> random16(size_t count, DType dt, float scale = 1.0f) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<uint16_t> v(count);
  for (auto& e : v) e = dt == DType::BF16 ? float_to_bf16(u(rng())) : float_to_half(u(rng()));
  return v;
}

std::vector<float> random_f32(size_t count) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (auto& e : v) e = u(rng());
  return v;
}

// A 2:4 matrix: per group of 4, keep a random pair (sometimes just one, or none: compress pads).
std::vector<uint16_t> random_24(int64_t n, int64_t k, DType dt) {
  auto w = random16(size_t(n * k), dt);
  static constexpr int kPairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
  for (int64_t r = 0; r < n; ++r)
    for (int64_t g = 0; g < k / 4; ++g) {
      const int* keep = kPairs[rng()() % 6];
      const int extra_zero = int(rng()() % 16);  // 1 in 16 groups loses a kept value too
      for (int i = 0; i < 4; ++i)
        if ((i != keep[0] && i != keep[1]) || (extra_zero == 0 && i == keep[0])) w[size_t(r * k + 4 * g + i)] = 0;
    }
  return w;
}

double act_ref(s24::Activation a, double v) {
  switch (a) {
    case s24::Activation::ReLU: return v > 0 ? v : 0;
    case s24::Activation::GELU: return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
    case s24::Activation::SiLU: return v / (1.0 + std::exp(-v));
    case s24::Activation::GELUTanh:  // 0.5 v (1 + tanh(u)), without 1 + tanh's cancellation
      return v / (1.0 + std::exp(-2.0 * std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    default: return v;
  }
}

double unit_roundoff(DType t) { return t == DType::F16 ? 1.0 / 2048 : t == DType::BF16 ? 1.0 / 256 : 1e-7; }

struct Case {
  int64_t n, k, m;
  DType dt;                 // W and x
  DType y_dt = DType::F16;
  bool bias = false, residual = false;
  DType bias_dt = DType::F32, res_dt = DType::F32;
  s24::Activation act = s24::Activation::None;
  const KernelChoice* force = nullptr;
  int x_offset_elems = 0;   // misalign x to exercise the fallback
};

// Runs one case on the GPU and checks every element against the fp64 reference.
void check_case(SparseGemm& gemm, const Case& c) {
  SCOPED_TRACE(::testing::Message() << "N=" << c.n << " K=" << c.k << " M=" << c.m << " dtype=" << dtype_name(c.dt)
                                    << " y=" << dtype_name(c.y_dt) << " bias=" << c.bias << " res=" << c.residual
                                    << " act=" << int(c.act)
                                    << " kernel=" << (c.force ? c.force->name() : "auto"));
  const auto w = random_24(c.n, c.k, c.dt);
  const s24::Compressed comp = s24::compress(s24::MatrixView{w.data(), c.dt, c.n, c.k});
  DeviceWeight24 dw = upload_weight(comp, gemm.stream());
  const auto x = random16(size_t(c.m * c.k), c.dt);
  std::vector<float> bias32 = random_f32(size_t(c.n)), res32 = random_f32(size_t(c.m * c.n));
  // Bias and residual in their dtypes (rounded, then read back exactly for the reference).
  auto to_bytes = [](const std::vector<float>& v, DType t) {
    std::vector<uint8_t> out(v.size() * dtype_size(t));
    for (size_t i = 0; i < v.size(); ++i) store_from_float(out.data(), t, i, v[i]);
    return out;
  };
  const auto bias_b = to_bytes(bias32, c.bias_dt), res_b = to_bytes(res32, c.res_dt);

  const size_t ysz = size_t(c.m * c.n) * dtype_size(c.y_dt);
  Dev dx(x.size() * 2 + 16), dy(ysz), dbias(bias_b.size()), dres(res_b.size());
  uint16_t* xp = static_cast<uint16_t*>(dx.p) + c.x_offset_elems;
  ck(cudaMemcpy(xp, x.data(), x.size() * 2, cudaMemcpyHostToDevice));
  ck(cudaMemcpy(dbias.p, bias_b.data(), bias_b.size(), cudaMemcpyHostToDevice));
  ck(cudaMemcpy(dres.p, res_b.data(), res_b.size(), cudaMemcpyHostToDevice));
  ck(cudaMemset(dy.p, 0xff, ysz));  // poison

  DeviceEpilogue ep;
  if (c.bias) { ep.bias = dbias.p; ep.bias_dtype = c.bias_dt; }
  if (c.residual) { ep.residual = dres.p; ep.residual_dtype = c.res_dt; }
  ep.act = c.act;
  if (c.force) gemm.run_with(*c.force, dw, xp, c.m, dy.p, c.y_dt, ep);
  else gemm.run(dw, xp, c.m, dy.p, c.y_dt, ep);
  ck(cudaStreamSynchronize(gemm.stream()));
  ck(cudaGetLastError());
  std::vector<uint8_t> y(ysz);
  ck(cudaMemcpy(y.data(), dy.p, ysz, cudaMemcpyDeviceToHost));
  free_weight(dw);

  // fp64 reference on the pruned dense weight.
  std::vector<double> ref(size_t(c.m * c.n));
  double sumsq = 0;
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < c.n; ++j) {
      double acc = 0;
      for (int64_t kk = 0; kk < c.k; ++kk)
        acc += double(load_as_float(x.data(), c.dt, size_t(i * c.k + kk))) *
               double(load_as_float(w.data(), c.dt, size_t(j * c.k + kk)));
      if (c.bias) acc += load_as_float(bias_b.data(), c.bias_dt, size_t(j));
      acc = act_ref(c.act, acc);
      if (c.residual) acc += load_as_float(res_b.data(), c.res_dt, size_t(i * c.n + j));
      ref[size_t(i * c.n + j)] = acc;
      sumsq += acc * acc;
    }
  const double rms = std::sqrt(sumsq / double(std::max<size_t>(ref.size(), 1)));
  // fp32 accumulation of K products is far below the output rounding; allow 2 units of that plus
  // a little absolute slack for cancellation near zero.
  const double u = unit_roundoff(c.y_dt);
  int bad = 0;
  for (size_t i = 0; i < ref.size() && bad < 5; ++i) {
    const double got = load_as_float(y.data(), c.y_dt, i);
    const double tol = 2 * u * std::fabs(ref[i]) + 1e-4 * rms + 1e-5;
    if (!(std::fabs(got - ref[i]) <= tol)) {
      ++bad;
      ADD_FAILURE() << "y[" << i / size_t(c.n) << ", " << i % size_t(c.n) << "] = " << got << ", expected " << ref[i]
                    << " (tol " << tol << ")";
    }
  }
}

class SparseGemmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
    gemm_ = std::make_unique<SparseGemm>(nullptr);
  }
  std::unique_ptr<SparseGemm> gemm_;
};

// The metadata words of docs/SPARSE24.md go to mma.sp unchanged: one 16 x 32 tile, one mma.
TEST_F(SparseGemmTest, HostMetadataFeedsMmaSp) {
  for (DType dt : {DType::F16, DType::BF16}) {
    Case c{16, 32, 8, dt, DType::F32};
    check_case(*gemm_, c);
  }
  if (HasFailure())
    ADD_FAILURE() << "the metadata words compress() writes (docs/SPARSE24.md) are not what mma.sp m16n8k32 "
                     "reads: the layout or the bit order in each word is wrong";
}

TEST_F(SparseGemmTest, SweepMAllEpilogues) {
  const s24::Activation acts[] = {s24::Activation::None, s24::Activation::ReLU,
                                  s24::Activation::GELU, s24::Activation::SiLU,
                                  s24::Activation::GELUTanh};
  const DType outs[] = {DType::F16, DType::BF16, DType::F32};
  const std::vector<int64_t> ms = {1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 24, 31, 32, 33, 47, 63, 64, 65, 100, 129, 300};
  int i = 0;
  for (DType dt : {DType::F16, DType::BF16})
    for (const int64_t m : ms) {
      Case c{136, 320, m, dt, outs[i % 3]};
      c.act = acts[(i / 3) % 5];
      c.bias = (i % 2) == 0;
      c.residual = (i % 5) < 2;
      c.bias_dt = outs[(i + 1) % 3];
      c.res_dt = outs[(i + 2) % 3];
      check_case(*gemm_, c);
      ++i;
    }
}

// N not a multiple of 16, K a multiple of 4 but not of 32 (the padding of both).
TEST_F(SparseGemmTest, AwkwardShapes) {
  for (DType dt : {DType::F16, DType::BF16})
    for (auto [n, k] : {std::pair<int64_t, int64_t>{77, 68}, {1, 4}, {33, 100}, {250, 1028}, {129, 72}, {40, 2056}})
      for (int64_t m : {1, 6, 19, 70}) {
        Case c{n, k, m, dt, dt};
        c.bias = true;
        c.act = s24::Activation::GELU;
        check_case(*gemm_, c);
      }
}

// Every decode configuration (warps x splits) and the dense fallback give the same answer.
TEST_F(SparseGemmTest, EveryPathForced) {
  std::vector<KernelChoice> choices;
  for (int warps : {4, 8})
    for (int splits : {1, 2, 3, 5, 16})
      for (bool sx : {false, true}) choices.push_back({GemmPath::Decode, warps, splits, sx});
  // Shared-x with k-groups (capped at 8 / mt: M = 40, 64, 90 run fewer k-groups than asked).
  for (auto [warps, kg] : {std::pair{4, 2}, {8, 2}, {4, 4}})
    for (int splits : {1, 3, 16}) choices.push_back({GemmPath::Decode, warps, splits, true, kg});
  choices.push_back({GemmPath::DenseFallback, 0, 0});
  for (int tm : {64, 128}) {
    KernelChoice p{GemmPath::Prefill, 0, 0, false, 1};
    p.tile_m = tm;
    choices.push_back(p);
  }
  for (const auto& ch : choices)
    for (int64_t m : {1, 12, 40, 64, 90}) {
      Case c{300, 2080, m, DType::F16, DType::F16};
      c.force = &ch;
      c.residual = true;
      c.act = s24::Activation::SiLU;
      check_case(*gemm_, c);
    }
}

// The prefill kernel over more token tiles than one swizzle group (8), with a partial last group,
// row tiles past the last row block and K not a multiple of the 128-wide stage.
TEST_F(SparseGemmTest, PrefillManyTiles) {
  for (int tm : {64, 128}) {
    KernelChoice p{GemmPath::Prefill, 0, 0, false, 1};
    p.tile_m = tm;
    for (auto [n, k, m] : {std::tuple<int64_t, int64_t, int64_t>{200, 264, 1100}, {136, 520, 1500}, {16, 8, 777}}) {
      Case c{n, k, m, DType::F16, DType::F32};
      c.force = &p;
      c.bias = true;
      c.act = s24::Activation::ReLU;
      check_case(*gemm_, c);
      Case b{n, k, m, DType::BF16, DType::BF16};
      b.force = &p;
      b.residual = true;
      check_case(*gemm_, b);
    }
  }
}

// The Hopper kernel (wgmma.sp fed by TMA): M across one and several 128-token tiles and swizzle
// groups, N past the last 16-row block and the 128-row tile, K not a multiple of the 128-wide stage
// (TMA zero-fills x past K), every epilogue, both dtypes. On Hopper it must be the kernel that runs.
TEST_F(SparseGemmTest, HopperPrefillMatchesTheReference) {
  if (gemm_->arch() != 90) GTEST_SKIP() << "the wgmma.sp kernel runs on sm_90 only; this GPU is sm_" << gemm_->arch();
  ASSERT_TRUE(prefill_sm90_available(DType::F16) && prefill_sm90_available(DType::BF16))
      << "sm_90 GPU, but the wgmma.sp kernel is unavailable: built without sm_90a (SPARSEFLOW_CUDA_ARCHS=90a)?";
  for (int rows : {128, 256}) {
    KernelChoice h{GemmPath::PrefillSm90, 0, 0};
    h.tile_m = rows;
    SCOPED_TRACE(testing::Message() << "rows per block " << rows);
    const s24::Activation acts[] = {s24::Activation::None, s24::Activation::ReLU,
                                    s24::Activation::GELU, s24::Activation::SiLU,
                                    s24::Activation::GELUTanh};
    const DType outs[] = {DType::F16, DType::BF16, DType::F32};
    int i = 0;
    for (DType dt : {DType::F16, DType::BF16})
      for (auto [n, k, m] : {std::tuple<int64_t, int64_t, int64_t>{128, 128, 128}, {300, 2080, 1}, {300, 2080, 129},
                             {136, 520, 300}, {16, 8, 777}, {250, 1028, 65}, {200, 264, 1100}, {1, 4, 200}}) {
        Case c{n, k, m, dt, outs[i % 3]};
        c.force = &h;
        c.act = acts[i % 5];
        c.bias = i % 2 == 0;
        c.residual = i % 3 != 1;
        c.bias_dt = outs[(i + 1) % 3];
        c.res_dt = outs[(i + 2) % 3];
        check_case(*gemm_, c);
        ++i;
      }
  }
  if (HasFailure())
    ADD_FAILURE() << "wgmma.sp disagrees with the reference: check the A-register fragment, the metadata word per "
                     "lane and the swizzled x descriptor (docs/KERNELS.md, prefill_wgmma)";
}

// Shapes a kernel cannot take fall back to a path that can: x only 4-byte aligned -> the plain
// decode kernel instead of the shared-x one; x 2-byte aligned -> dense fallback.
TEST_F(SparseGemmTest, MisalignedInputFallsBack) {
  const KernelChoice sx{GemmPath::Decode, 8, 2, true};
  for (int offset : {1, 2})
    for (int64_t m : {1, 9}) {
      Case c{64, 256, m, DType::BF16, DType::F32};
      c.x_offset_elems = offset;
      c.force = &sx;
      check_case(*gemm_, c);
    }
}

TEST_F(SparseGemmTest, RejectsFp32Weights) {
  std::vector<float> w(16 * 32, 0.0f);
  const auto comp = s24::compress(s24::MatrixView{w.data(), DType::F32, 16, 32});
  try {
    upload_weight(comp);
    FAIL() << "fp32 weights were accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::UnsupportedShape);
  }
}

// The persistent 2:4 decode kernel (SPARSEFLOW_PERSISTENT=decode, check.hpp) against the plain one it
// replaces for one split: bit for bit, on shapes that give its blocks several 16-row blocks each (a
// partial last one too), a K shorter than one step per warp, two token chunks (M = 12), and on the
// fp64 reference with every epilogue.
TEST_F(SparseGemmTest, PersistentDecodeIsBitIdenticalToThePlainKernel) {
  struct Restore {
    ~Restore() { set_persistent_kernels(-1); }
  } restore;
  for (const KernelChoice ch : {KernelChoice{GemmPath::Decode, 8, 1}, KernelChoice{GemmPath::Decode, 4, 1}})
    for (auto [n, k] : {std::pair<int64_t, int64_t>{11200, 4096}, {4245, 1028}, {5000, 72}, {300, 16384}})
      for (int64_t m : {1, 3, 8, 12}) {
        SCOPED_TRACE(::testing::Message() << ch.name() << " N=" << n << " K=" << k << " M=" << m);
        const auto w = random_24(n, k, DType::F16);
        auto dw = upload_weight(s24::compress(s24::MatrixView{w.data(), DType::F16, n, k}));
        const auto x = random16(size_t(m * k), DType::F16);
        const auto bias = random_f32(size_t(n));
        Dev dx(x.size() * 2), dy(size_t(m * n) * 4), db(size_t(n) * 4);
        ck(cudaMemcpy(dx.p, x.data(), x.size() * 2, cudaMemcpyHostToDevice));
        ck(cudaMemcpy(db.p, bias.data(), bias.size() * 4, cudaMemcpyHostToDevice));
        DeviceEpilogue ep;
        ep.bias = db.p;
        ep.bias_dtype = DType::F32;
        ep.act = s24::Activation::ReLU;
        std::vector<float> plain(size_t(m * n)), persistent(size_t(m * n));
        for (int mask : {0, kPersistentDecode}) {
          set_persistent_kernels(mask);
          ck(cudaMemset(dy.p, 0xff, size_t(m * n) * 4));
          gemm_->run_with(ch, dw, dx.p, m, dy.p, DType::F32, ep);
          ck(cudaStreamSynchronize(gemm_->stream()));
          ck(cudaMemcpy(mask ? persistent.data() : plain.data(), dy.p, size_t(m * n) * 4, cudaMemcpyDeviceToHost));
        }
        free_weight(dw);
        size_t diff = 0, nan = 0;
        for (size_t i = 0; i < plain.size(); ++i) {
          diff += std::memcmp(&plain[i], &persistent[i], 4) != 0;
          nan += std::isnan(persistent[i]);
        }
        EXPECT_EQ(diff, 0u) << "of " << plain.size();
        EXPECT_EQ(nan, 0u) << "outputs left poisoned";
      }
  set_persistent_kernels(kPersistentDecode);
  for (auto [n, k] : {std::pair<int64_t, int64_t>{77, 68}, {250, 1028}, {40, 2056}})
    for (int64_t m : {1, 6, 19}) {
      Case c{n, k, m, DType::BF16, DType::BF16};
      c.bias = true;
      c.residual = true;
      c.act = s24::Activation::GELU;
      check_case(*gemm_, c);
    }
}

// The bulk-copy 2:4 decode kernel (SPARSEFLOW_PERSISTENT=bulk, sm_90+; elsewhere the plain kernel
// runs and this checks that) against the fp64 reference: M = 1..8, partial last stages (K not a
// multiple of 16 k-tiles), K shorter than one stage, several 16-row blocks per block (N = 4245 and
// 11200 on fewer resident blocks), every epilogue; and the same bits on a re-run.
TEST_F(SparseGemmTest, BulkDecodeMatchesTheReference) {
  struct Restore {
    ~Restore() { set_persistent_kernels(-1); }
  } restore;
  set_persistent_kernels(kBulkDecode);
  for (const KernelChoice ch : {KernelChoice{GemmPath::Decode, 8, 1}, KernelChoice{GemmPath::Decode, 4, 1}})
    for (auto [n, k] : {std::pair<int64_t, int64_t>{77, 68}, {250, 1028}, {40, 2056}, {4245, 600}, {11200, 160}})
      for (int64_t m : {1, 3, 8}) {
        Case c{n, k, m, m == 3 ? DType::BF16 : DType::F16, m == 8 ? DType::F32 : DType::F16};
        c.force = &ch;
        c.bias = true;
        c.residual = m != 1;
        c.act = m == 1 ? s24::Activation::ReLU : s24::Activation::GELU;
        check_case(*gemm_, c);
      }
  const int64_t n = 3000, k = 4096, m = 2;
  const auto w = random_24(n, k, DType::F16);
  auto dw = upload_weight(s24::compress(s24::MatrixView{w.data(), DType::F16, n, k}));
  const auto x = random16(size_t(m * k), DType::F16);
  Dev dx(x.size() * 2), dy(size_t(m * n) * 4);
  ck(cudaMemcpy(dx.p, x.data(), x.size() * 2, cudaMemcpyHostToDevice));
  std::vector<float> first(size_t(m * n)), again(size_t(m * n));
  for (int rep = 0; rep < 2; ++rep) {
    ck(cudaMemset(dy.p, 0xff, size_t(m * n) * 4));
    gemm_->run_with(KernelChoice{GemmPath::Decode, 8, 1}, dw, dx.p, m, dy.p, DType::F32);
    ck(cudaMemcpy(rep == 0 ? first.data() : again.data(), dy.p, size_t(m * n) * 4, cudaMemcpyDeviceToHost));
  }
  free_weight(dw);
  EXPECT_EQ(0, std::memcmp(first.data(), again.data(), first.size() * 4));
}

// The split-K counters are left at zero: the same workspace gives the same bits on a re-run.
TEST_F(SparseGemmTest, DeterministicAcrossRuns) {
  const int64_t n = 512, k = 4096, m = 4;
  const auto w = random_24(n, k, DType::F16);
  auto dw = upload_weight(s24::compress(s24::MatrixView{w.data(), DType::F16, n, k}));
  const auto x = random16(size_t(m * k), DType::F16);
  Dev dx(x.size() * 2), dy(size_t(m * n) * 4);
  ck(cudaMemcpy(dx.p, x.data(), x.size() * 2, cudaMemcpyHostToDevice));
  std::vector<float> first(size_t(m * n)), again(size_t(m * n));
  for (const KernelChoice ch : {KernelChoice{GemmPath::Decode, 4, 8}, KernelChoice{GemmPath::Decode, 4, 4, true, 4}}) {
    for (int rep = 0; rep < 3; ++rep) {
      ck(cudaMemset(dy.p, 0xff, size_t(m * n) * 4));
      gemm_->run_with(ch, dw, dx.p, m, dy.p, DType::F32);
      ck(cudaMemcpy(rep == 0 ? first.data() : again.data(), dy.p, size_t(m * n) * 4, cudaMemcpyDeviceToHost));
      if (rep > 0) {
        EXPECT_EQ(0, std::memcmp(first.data(), again.data(), first.size() * 4)) << ch.name();
      }
    }
  }
  free_weight(dw);
}

}  // namespace
}  // namespace sf::cuda
