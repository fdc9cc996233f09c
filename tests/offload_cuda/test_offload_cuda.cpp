// The CUDA runtime of neuron-level offloading (src/offload/cuda/), on a GPU:
//   - kernels: the sparse FFN against the resident decode GEMV (bit for bit, exact active set) and
//     against an fp64 CPU reference (any active set, poisoned outputs); the lookup + fetch against
//     the host policy (lru_policy.hpp) step by step; the predictor against a CPU reference;
//   - the engine: oracle mode (exact active set) equals the resident engine bit for bit, token by
//     token through the decode graph, on a random model and the HF fixtures, with the whole FFN
//     resident, with a cache smaller than the active set (eviction + direct host reads), and with
//     an all-LRU cache; the stream policy equals it too; a predictor that predicts every neuron (so
//     the side-stream fetch during attention carries everything) equals it too; budget edges;
//   - attention weights in mapped host memory (a budget below all the attention): the engine with
//     every layer's attention on the host equals the all-resident one bit for bit (decode GEMV and
//     the cuBLAS prefill), and so does the offloaded engine in oracle mode under such a plan.
// Each test skips with the reason when no GPU is present.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <tuple>

#include "core/error.hpp"
#include "kernels/cuda/model/model_kernels.hpp"
#include "model/cuda_engine.hpp"
#include "offload/cuda/lru_policy.hpp"
#include "offload/cuda/offload_kernels.hpp"
#include "offload/neuron_store.hpp"
#include "offload/offloaded_opt.hpp"
#include "offload/planner.hpp"
#include "offload/predictor_fit.hpp"
#include "offload/profile.hpp"
#include "test_models.hpp"

namespace sf::offload {
namespace {

namespace k = sf::offload::cuda;

#define SKIP_WITHOUT_GPU()                                                      \
  do {                                                                          \
    if (const std::string why = model::cuda_unavailable_reason(); !why.empty()) \
      GTEST_SKIP() << why;                                                      \
  } while (0)

#define CK(x) ASSERT_EQ((x), cudaSuccess) << cudaGetErrorString(cudaGetLastError())

// A device buffer freed on scope exit.
struct Dev {
  void* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t bytes) : n(bytes) {
    if (cudaMalloc(&p, std::max<size_t>(bytes, 16)) != cudaSuccess)
      throw std::runtime_error("cudaMalloc");
  }
  ~Dev() { cudaFree(p); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
  void put(const void* src, size_t bytes) const {
    if (cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice) != cudaSuccess)
      throw std::runtime_error("upload");
  }
  void put(const void* src) const { put(src, n); }
  template <typename T>
  std::vector<T> get(size_t count) const {
    std::vector<T> v(count);
    if (cudaMemcpy(v.data(), p, count * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess)
      throw std::runtime_error("download");
    return v;
  }
};

// Mapped pinned host memory.
struct Pinned {
  void* p = nullptr;
  void* dev = nullptr;
  explicit Pinned(size_t bytes) {
    if (cudaHostAlloc(&p, bytes, cudaHostAllocMapped) != cudaSuccess)
      throw std::runtime_error("cudaHostAlloc");
    cudaHostGetDevicePointer(&dev, p, 0);
  }
  ~Pinned() { cudaFreeHost(p); }
};

std::vector<uint8_t> to_dtype(const std::vector<float>& v, DType t) {
  std::vector<uint8_t> out(v.size() * dtype_size(t));
  for (size_t i = 0; i < v.size(); ++i) store_from_float(out.data(), t, i, v[i]);
  return out;
}

std::vector<float> randn(size_t n, float scale, float shift, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = shift + scale * d(rng);
  return v;
}

int act_code(DType t) {
  return t == DType::F16 ? 1 : t == DType::BF16 ? 2 : 0;
}

// One random FFN layer: row-major weights for the resident GEMV and its bundles.
struct Layer {
  int64_t d, F;
  DType dt;
  std::vector<float> w1, b1, w2,
      b2;  // [F, d], [F], [d, F], [d] (values exactly representable in dt)
  std::vector<uint8_t> w1b, w2b, bundles;
  BundleLayout layout;
  Layer(int64_t d_, int64_t F_, DType t, uint64_t seed) : d(d_), F(F_), dt(t) {
    auto round = [&](std::vector<float> v) {
      for (auto& x : v) x = load_as_float(to_dtype({x}, dt).data(), dt, 0);
      return v;
    };
    w1 = round(randn(size_t(F * d), 1.0f / std::sqrt(float(d)), 0.0f, seed));
    b1 = round(randn(size_t(F), 0.5f, -0.6f, seed + 1));  // ~30% of neurons fire
    w2 = round(randn(size_t(d * F), 1.0f / std::sqrt(float(F)), 0.0f, seed + 2));
    b2 = round(randn(size_t(d), 0.1f, 0.0f, seed + 3));
    w1b = to_dtype(w1, dt);
    w2b = to_dtype(w2, dt);
    const auto b1b = to_dtype(b1, dt);
    layout = BundleLayout::make(d, dt);
    bundles.resize(size_t(F) * layout.stride);
    pack_bundles(layout, F, w1b.data(), b1b.data(), w2b.data(), {}, bundles.data());
  }
};

class OffloadKernels : public ::testing::TestWithParam<std::tuple<DType, int64_t, int64_t>> {
 protected:
  void SetUp() override { SKIP_WITHOUT_GPU(); }
};

// The resident engine's FFN for one token (the decode GEMV, fused epilogues): ff, then y.
void resident_ffn(const Layer& L, const Dev& w1, const Dev& w2, const Dev& b1, const Dev& b2,
                  const Dev& x, const Dev& res, const Dev& ff, const Dev& y) {
  sf::cuda::EpilogueParams e1;
  e1.bias = b1.p;
  e1.y = ff.p;
  e1.y_dt = act_code(L.dt);
  e1.act = 1;
  e1.ldy = L.F;
  ASSERT_TRUE(sf::cuda::model::launch_gemv(w1.p, act_code(L.dt), x.p, 1, L.F, L.d, e1, nullptr));
  sf::cuda::EpilogueParams e2;
  e2.bias = b2.p;
  e2.residual = res.p;
  e2.y = y.p;
  e2.y_dt = 0;
  e2.ldy = L.d;
  ASSERT_TRUE(sf::cuda::model::launch_gemv(w2.p, act_code(L.dt), ff.p, 1, L.d, L.F, e2, nullptr));
}

// Exact flags -> lookup -> (fetch) -> fc1 -> fc2 with `pinned` neurons in a shuffled pool and `lru`
// cache slots; the rest read from mapped host memory. Equal to the resident GEMV bit for bit.
TEST_P(OffloadKernels, SparseFfnWithExactSetEqualsResidentGemvBitForBit) {
  const auto [dt, d, F] = GetParam();
  const Layer L(d, F, dt, 11 + uint64_t(d + F));
  const size_t es = dtype_size(dt);
  const int cw = int(16 / es);
  Dev w1(L.w1b.size()), w2(L.w2b.size()), b1(size_t(F) * 4), b2(size_t(d) * 4), x(size_t(d) * es),
      res(size_t(d) * 4), ff(size_t(F) * es), yref(size_t(d) * 4), y(size_t(d) * 4);
  w1.put(L.w1b.data());
  w2.put(L.w2b.data());
  b1.put(L.b1.data());
  b2.put(L.b2.data());
  const auto xv = to_dtype(randn(size_t(d), 1.0f, 0.0f, 99), dt);
  x.put(xv.data());
  const auto rv = randn(size_t(d), 1.0f, 0.0f, 98);
  res.put(rv.data());
  resident_ffn(L, w1, w2, b1, b2, x, res, ff, yref);
  const auto ffv = ff.get<uint8_t>(size_t(F) * es);
  const auto want = yref.get<float>(size_t(d));

  Pinned host(L.bundles.size());
  std::memcpy(host.p, L.bundles.data(), L.bundles.size());
  for (const auto& [pinned, lru] :
       {std::pair<int64_t, int64_t>{F, 0}, {F / 2, 0}, {F / 4, F / 16}, {0, F}}) {
    // Pinned neurons: a random subset in shuffled slots.
    std::vector<int32_t> perm(static_cast<size_t>(F));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), std::mt19937(unsigned(pinned + lru)));
    perm.resize(static_cast<size_t>(pinned));
    LruState st = LruState::make(F, perm, int32_t(lru));
    Dev pool(size_t(std::max<int32_t>(st.slots, 1)) * L.layout.stride), slot_of(size_t(F) * 4),
        owner(size_t(std::max<int32_t>(st.slots, 1)) * 4),
        stamp(size_t(std::max<int32_t>(st.slots, 1)) * 4);
    for (int32_t s = 0; s < st.pinned; ++s)
      CK(cudaMemcpy(pool.as<uint8_t>() + size_t(s) * L.layout.stride,
                    L.bundles.data() + size_t(perm[size_t(s)]) * L.layout.stride, L.layout.stride,
                    cudaMemcpyHostToDevice));
    slot_of.put(st.slot_of.data());
    if (st.slots) {
      owner.put(st.owner.data(), size_t(st.slots) * 4);
      CK(cudaMemset(stamp.p, 0, size_t(st.slots) * 4));
    }
    k::CacheView cv{pool.as<uint8_t>(),  slot_of.as<int32_t>(),
                    owner.as<int32_t>(), stamp.as<uint32_t>(),
                    st.pinned,           st.slots};
    k::BundleSource backing{static_cast<const uint8_t*>(host.dev), L.layout.stride,
                            L.layout.fc2_offset};
    Dev flags(static_cast<size_t>(F)), ids(size_t(F) * 4), eslot(size_t(F) * 4), h(size_t(F) * es),
        head(k::kHeadInts * 4), fids(size_t(F) * 4), fslots(size_t(F) * 4),
        scratch(k::lookup_scratch_ints(F, st.slots) * 4), step(4);
    CK(cudaMemset(step.p, 0, 4));
    k::launch_exact_flags(x.p, 1, d, F, b1.as<float>(), cv, backing, flags.as<uint8_t>(),
                          act_code(dt), nullptr);
    const auto fl = flags.get<uint8_t>(size_t(F));
    int active = 0;
    for (int64_t j = 0; j < F; ++j) {
      const bool nz = load_as_float(ffv.data(), dt, size_t(j)) != 0.0f;
      EXPECT_EQ(fl[size_t(j)] != 0, nz) << "neuron " << j;
      active += nz;
    }
    k::ActiveList list{ids.as<int32_t>(), eslot.as<int32_t>(), h.p, head.as<int32_t>()};
    k::FetchList fetch{fids.as<int32_t>(), fslots.as<int32_t>()};
    k::launch_lookup(flags.as<uint8_t>(), F, cw, cv, list, fetch, step.as<uint32_t>(), lru > 0,
                     scratch.as<int32_t>(), nullptr, nullptr);
    if (lru > 0)
      k::launch_fetch(backing, cv, L.layout.stride, fetch, head.as<int32_t>(), 0, nullptr);
    k::SparseFfnArgs a;
    a.x = x.p;
    a.d = d;
    a.ffn = F;
    a.b1 = b1.as<float>();
    a.b2 = b2.as<float>();
    a.residual = res.as<float>();
    a.y = y.as<float>();
    a.pool = {pool.as<uint8_t>(), L.layout.stride, L.layout.fc2_offset};
    a.backing = backing;
    a.act = act_code(dt);
    CK(cudaMemset(y.p, 0xff, size_t(d) * 4));  // NaN: unwritten outputs show
    k::launch_sparse_fc1(a, list, 0, nullptr);
    EXPECT_THROW(k::launch_sparse_fc2(a, list, nullptr), Error);  // no scratch for the class sums
    Dev partial(size_t(k::fc2_partial_floats(d)) * 4);
    CK(cudaMemset(partial.p, 0xff, partial.n));  // NaN: a class sum not written shows
    a.fc2_partial = partial.as<float>();
    k::launch_sparse_fc2(a, list, nullptr);
    CK(cudaDeviceSynchronize());
    const auto got = y.get<float>(size_t(d));
    const auto hd = head.get<int32_t>(k::kHeadInts);
    EXPECT_EQ(hd[k::kHeadCount], active);
    const std::string what =
        fmt::format("{} d {} ffn {} pinned {} lru {}", dtype_name(dt), d, F, pinned, lru);
    if (dt != DType::F32) {
      EXPECT_EQ(0, std::memcmp(got.data(), want.data(), size_t(d) * 4))
          << what << ": y[0] " << got[0] << " vs " << want[0];
    } else {
      // fp32's dot16 is a plain expression that nvcc contracts into fmas differently in the two
      // kernels (measured on an H100: equal to ~1 ulp); fp16/bf16 use explicit fmaf and match
      // exactly.
      EXPECT_LT(test::rel_l2(got, want), 1e-6) << what;
    }
  }
}

// Any active set (here random, as a predictor gives) against fp64: h rounded to act as the kernel
// does.
TEST_P(OffloadKernels, SparseFfnMatchesFp64ReferenceForAnyActiveSet) {
  const auto [dt, d, F] = GetParam();
  const Layer L(d, F, dt, 7 + uint64_t(d * F));
  const size_t es = dtype_size(dt);
  const int cw = int(16 / es);
  Dev pool(L.bundles.size()), slot_of(size_t(F) * 4), owner(size_t(F) * 4), stamp(size_t(F) * 4),
      b1(size_t(F) * 4), b2(size_t(d) * 4), x(size_t(d) * es), res(size_t(d) * 4), y(size_t(d) * 4),
      flags(static_cast<size_t>(F)), ids(size_t(F) * 4), eslot(size_t(F) * 4), h(size_t(F) * es),
      head(k::kHeadInts * 4), scratch(k::lookup_scratch_ints(F, F) * 4), step(4);
  pool.put(L.bundles.data());
  std::vector<int32_t> ident(static_cast<size_t>(F));
  std::iota(ident.begin(), ident.end(), 0);
  slot_of.put(ident.data());
  owner.put(ident.data());
  CK(cudaMemset(step.p, 0, 4));
  b1.put(L.b1.data());
  b2.put(L.b2.data());
  for (int trial = 0; trial < 3; ++trial) {
    const auto xf = randn(size_t(d), 1.0f, 0.0f, 500 + uint64_t(trial));
    const auto xb = to_dtype(xf, dt);
    x.put(xb.data());
    const auto rv = randn(size_t(d), 1.0f, 0.0f, 600 + uint64_t(trial));
    res.put(rv.data());
    std::mt19937 rng{unsigned(trial)};
    std::vector<uint8_t> fl(static_cast<size_t>(F));
    for (auto& f : fl) f = rng() % 4 == 0;
    flags.put(fl.data());
    k::CacheView cv{pool.as<uint8_t>(),  slot_of.as<int32_t>(),
                    owner.as<int32_t>(), stamp.as<uint32_t>(),
                    int32_t(F),          int32_t(F)};
    k::ActiveList list{ids.as<int32_t>(), eslot.as<int32_t>(), h.p, head.as<int32_t>()};
    k::launch_lookup(flags.as<uint8_t>(), F, cw, cv, list, {nullptr, nullptr}, step.as<uint32_t>(),
                     false, scratch.as<int32_t>(), nullptr, nullptr);
    k::SparseFfnArgs a;
    a.x = x.p;
    a.d = d;
    a.ffn = F;
    a.b1 = b1.as<float>();
    a.b2 = b2.as<float>();
    a.residual = res.as<float>();
    a.y = y.as<float>();
    a.pool = {pool.as<uint8_t>(), L.layout.stride, L.layout.fc2_offset};
    a.backing = a.pool;
    a.act = act_code(dt);
    CK(cudaMemset(y.p, 0xff, size_t(d) * 4));
    Dev partial(size_t(k::fc2_partial_floats(d)) * 4);
    CK(cudaMemset(partial.p, 0xff, partial.n));
    a.fc2_partial = partial.as<float>();
    k::launch_sparse_fc1(a, list, 0, nullptr);
    k::launch_sparse_fc2(a, list, nullptr);
    CK(cudaDeviceSynchronize());
    const auto got = y.get<float>(size_t(d));
    std::vector<double> want(static_cast<size_t>(d));
    for (int64_t i = 0; i < d; ++i) want[size_t(i)] = double(rv[size_t(i)]) + L.b2[size_t(i)];
    for (int64_t j = 0; j < F; ++j) {
      if (!fl[size_t(j)]) continue;
      double z = L.b1[size_t(j)];
      for (int64_t i = 0; i < d; ++i)
        z += double(load_as_float(xb.data(), dt, size_t(i))) * L.w1[size_t(j * d + i)];
      const float hj = load_as_float(to_dtype({float(std::max(z, 0.0))}, dt).data(), dt, 0);
      for (int64_t i = 0; i < d; ++i) want[size_t(i)] += double(hj) * L.w2[size_t(i * F + j)];
    }
    double num = 0, den = 0;
    for (int64_t i = 0; i < d; ++i) {
      ASSERT_FALSE(std::isnan(got[size_t(i)])) << "output " << i << " not written";
      num += (got[size_t(i)] - want[size_t(i)]) * (got[size_t(i)] - want[size_t(i)]);
      den += want[size_t(i)] * want[size_t(i)];
    }
    // fp32 accumulation of ~F/4 terms against fp64; a neuron near zero may round h differently.
    EXPECT_LT(std::sqrt(num / den), dt == DType::BF16 ? 2e-2 : 2e-3)
        << dtype_name(dt) << " trial " << trial;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, OffloadKernels,
                         ::testing::Values(std::make_tuple(DType::F16, int64_t(64), int64_t(256)),
                                           std::make_tuple(DType::F16, int64_t(768), int64_t(3072)),
                                           std::make_tuple(DType::BF16, int64_t(256),
                                                           int64_t(1024)),
                                           std::make_tuple(DType::F32, int64_t(64), int64_t(256))));

// The GPU lookup + fetch step by step against the host policy: lists, maps, stamps, fetch lists,
// and the pool's bytes. A cache smaller than the active set forces evictions and overflow.
TEST(OffloadCache, LookupAndFetchFollowTheHostPolicyExactly) {
  SKIP_WITHOUT_GPU();
  const int64_t d = 64, F = 1024;
  const Layer L(d, F, DType::F16, 3);
  const int cw = 8;
  std::vector<int32_t> hot(32);
  std::iota(hot.begin(), hot.end(), 100);
  for (int32_t lru : {0, 40, 200}) {
    LruState st = LruState::make(F, hot, lru);
    Pinned host(L.bundles.size());
    std::memcpy(host.p, L.bundles.data(), L.bundles.size());
    Dev pool(size_t(st.slots) * L.layout.stride), slot_of(size_t(F) * 4),
        owner(size_t(st.slots) * 4), stamp(size_t(st.slots) * 4), flags(static_cast<size_t>(F)),
        ids(size_t(F) * 4), eslot(size_t(F) * 4), h(size_t(F) * 2), head(k::kHeadInts * 4),
        fids(size_t(F) * 4), fslots(size_t(F) * 4),
        scratch(k::lookup_scratch_ints(F, st.slots) * 4), step(4), stats(k::kStatCount * 8);
    for (int32_t s = 0; s < st.pinned; ++s)
      CK(cudaMemcpy(pool.as<uint8_t>() + size_t(s) * L.layout.stride,
                    L.bundles.data() + size_t(hot[size_t(s)]) * L.layout.stride, L.layout.stride,
                    cudaMemcpyHostToDevice));
    slot_of.put(st.slot_of.data());
    owner.put(st.owner.data());
    CK(cudaMemset(stamp.p, 0, stamp.n));
    CK(cudaMemset(step.p, 0, 4));
    CK(cudaMemset(stats.p, 0, stats.n));
    k::CacheView cv{pool.as<uint8_t>(),  slot_of.as<int32_t>(),
                    owner.as<int32_t>(), stamp.as<uint32_t>(),
                    st.pinned,           st.slots};
    k::ActiveList list{ids.as<int32_t>(), eslot.as<int32_t>(), h.p, head.as<int32_t>()};
    k::FetchList fetch{fids.as<int32_t>(), fslots.as<int32_t>()};
    k::BundleSource backing{static_cast<const uint8_t*>(host.dev), L.layout.stride,
                            L.layout.fc2_offset};
    std::mt19937 rng{unsigned(lru)};
    int64_t total_fetched = 0;
    for (int t = 0; t < 60; ++t) {
      // Correlated steps: a drifting window of likely neurons plus noise (~80 active).
      std::vector<uint8_t> fl(size_t(F), 0);
      for (int64_t j = 0; j < F; ++j) {
        const bool near = (j + 1024 - 13 * t) % 1024 < 200;
        fl[size_t(j)] = (near ? rng() % 4 == 0 : rng() % 64 == 0) || (j >= 100 && j < 110);
      }
      flags.put(fl.data());
      const LruLookup r = lru_lookup(st, fl, cw, true);
      k::launch_lookup(flags.as<uint8_t>(), F, cw, cv, list, fetch, step.as<uint32_t>(), true,
                       scratch.as<int32_t>(), stats.as<uint64_t>(), nullptr);
      k::launch_fetch(backing, cv, L.layout.stride, fetch, head.as<int32_t>(), 0, nullptr);
      CK(cudaDeviceSynchronize());
      const auto hd = head.get<int32_t>(k::kHeadInts);
      ASSERT_EQ(hd[k::kHeadCount], int32_t(r.ids.size())) << "step " << t;
      for (int i = 0; i <= 32; ++i)
        ASSERT_EQ(hd[size_t(k::kHeadClass + i)], r.class_start[size_t(i)]);
      ASSERT_EQ(hd[k::kHeadMisses], r.misses);
      ASSERT_EQ(hd[k::kHeadFetch], r.fetched);
      ASSERT_EQ(hd[k::kHeadOverflow], r.overflow);
      const size_t n = r.ids.size();
      ASSERT_EQ(ids.get<int32_t>(n), r.ids) << "step " << t;
      ASSERT_EQ(eslot.get<int32_t>(n), r.slot) << "step " << t;
      ASSERT_EQ(fids.get<int32_t>(size_t(r.fetched)), r.fetch_ids) << "step " << t;
      ASSERT_EQ(fslots.get<int32_t>(size_t(r.fetched)), r.fetch_slots) << "step " << t;
      ASSERT_EQ(slot_of.get<int32_t>(size_t(F)), st.slot_of) << "step " << t;
      ASSERT_EQ(owner.get<int32_t>(size_t(st.slots)), st.owner) << "step " << t;
      ASSERT_EQ(stamp.get<uint32_t>(size_t(st.slots)), st.stamp) << "step " << t;
      total_fetched += r.fetched;
    }
    // Every occupied slot holds its owner's bundle, byte for byte.
    const auto pool_bytes = pool.get<uint8_t>(size_t(st.slots) * L.layout.stride);
    for (int32_t s = 0; s < st.slots; ++s) {
      const int32_t o = st.owner[size_t(s)];
      if (o < 0) continue;
      ASSERT_EQ(0, std::memcmp(pool_bytes.data() + size_t(s) * L.layout.stride,
                               L.bundles.data() + size_t(o) * L.layout.stride, L.layout.stride))
          << "slot " << s << " (neuron " << o << ")";
    }
    const auto sv = stats.get<uint64_t>(k::kStatCount);
    EXPECT_EQ(int64_t(sv[k::kStatFetched]), total_fetched);
    EXPECT_EQ(sv[k::kStatRows], 60u);
    if (lru > 0) {
      EXPECT_GT(total_fetched, 0);
    }
  }
}

TEST(OffloadPredictor, FlagsMatchCpuReference) {
  SKIP_WITHOUT_GPU();
  for (const auto& [d, R, F] :
       {std::tuple<int64_t, int64_t, int64_t>{64, 16, 256}, {4096, 128, 16384}, {768, 64, 3072}}) {
    const auto a = randn(size_t(d), 1.0f, 0.0f, 1), u = randn(size_t(d * R), 0.05f, 0.0f, 2),
               v = randn(size_t(R * F), 0.1f, 0.0f, 3), thr = randn(size_t(F), 0.05f, 0.0f, 4);
    const auto ab = to_dtype(a, DType::F16), ub = to_dtype(u, DType::F16),
               vb = to_dtype(v, DType::F16);
    Dev da(ab.size()), du(ub.size()), dv(vb.size()), dthr(size_t(F) * 4),
        flags(static_cast<size_t>(F)), scratch(k::predictor_scratch_floats(d, R, F) * 4);
    da.put(ab.data());
    du.put(ub.data());
    dv.put(vb.data());
    dthr.put(thr.data());
    CK(cudaMemset(scratch.p, 0,
                  k::predictor_scratch_floats(d, R, F) * 4));  // the contract: zeroed once
    // Three launches on the same scratch: the stage-2 counters must come back to zero each time, so
    // every launch's flags are complete and equal.
    std::vector<uint8_t> fl;
    for (int rep = 0; rep < 3; ++rep) {
      CK(cudaMemset(flags.p, 0xAB, size_t(F)));  // poisoned
      k::launch_predictor_t(da.p, du.p, d, R, F, scratch.as<float>(), 1, nullptr);
      k::launch_predictor_flags(dv.p, dthr.as<float>(), d, R, F, scratch.as<float>(),
                                flags.as<uint8_t>(), 1, nullptr);
      CK(cudaDeviceSynchronize());
      const auto now = flags.get<uint8_t>(size_t(F));
      for (int64_t b = 0; b < F; ++b)
        ASSERT_LE(now[size_t(b)], 1) << "flag " << b << " not written, launch " << rep;
      if (rep > 0) {
        EXPECT_EQ(now, fl) << "launch " << rep;
      }
      fl = now;
    }
    std::vector<double> t(size_t(R), 0.0);
    for (int64_t i = 0; i < d; ++i)
      for (int64_t r = 0; r < R; ++r)
        t[size_t(r)] += double(load_as_float(ab.data(), DType::F16, size_t(i))) *
                        load_as_float(ub.data(), DType::F16, size_t(i * R + r));
    int checked = 0, on = 0;
    for (int64_t b = 0; b < F; ++b) {
      double s = 0;
      for (int64_t r = 0; r < R; ++r)
        s += t[size_t(r)] * load_as_float(vb.data(), DType::F16, size_t(r * F + b));
      if (std::abs(s - thr[size_t(b)]) < 1e-4) continue;  // too close to call at fp32
      EXPECT_EQ(fl[size_t(b)] != 0, s > thr[size_t(b)]) << "d " << d << " neuron " << b;
      ++checked;
      on += fl[size_t(b)];
    }
    EXPECT_GT(checked, F * 9 / 10);
    EXPECT_GT(on, 0);
  }
}

// ---- the engine ---------------------------------------------------------------------------------
Plan hand_plan(const model::Model& m, int64_t hot, int64_t lru) {
  const auto& c = m.config();
  Plan p;
  p.host = HostPlacement::Pinned;
  p.whole_model_resident = hot >= c.ffn_dim;
  p.layers.assign(size_t(c.num_hidden_layers), LayerPlan{std::min(hot, c.ffn_dim), lru, 0.0});
  return p;
}

// Logits of each token fed one at a time (the decode path, graph replays after the first).
// n token ids spread over the model's vocabulary (the prompts of the engine tests).
std::vector<int32_t> spread_tokens(const model::Model& m, int n) {
  std::vector<int32_t> toks;
  for (int i = 0; i < n; ++i) toks.push_back(int32_t((i * 37 + 2) % m.config().vocab_size));
  return toks;
}

std::vector<std::vector<float>> stepwise(model::CudaEngine& e, const std::vector<int32_t>& toks) {
  e.reset(int64_t(toks.size()) + 1);
  std::vector<std::vector<float>> out;
  for (int32_t t : toks) out.push_back(e.forward(std::span<const int32_t>(&t, 1)));
  return out;
}

// The tiny OPT widened to hidden 64 and FFN 256 (head_dim derived again: 16, with 4 heads).
test::RandomSpec wide_spec() {
  test::RandomSpec spec;
  spec.config = test::tiny_config();
  spec.config.hidden_size = 64;
  spec.config.word_embed_proj_dim = 64;
  spec.config.ffn_dim = 256;
  spec.config.head_dim = 0;
  arch::complete(spec.config);
  return spec;
}

std::unique_ptr<model::Model> tiny_random(DType dt, uint64_t seed) {
  test::RandomSpec spec = wide_spec();
  spec.dtype = dt;
  spec.seed = seed;
  return test::random_opt(spec);
}

void expect_same_logits(const std::vector<std::vector<float>>& got,
                        const std::vector<std::vector<float>>& want, const std::string& what,
                        bool exact) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].size(), want[i].size());
    if (exact) {
      EXPECT_EQ(0, std::memcmp(got[i].data(), want[i].data(), got[i].size() * 4))
          << what << ": token " << i;
    } else {
      EXPECT_LT(test::rel_l2(got[i], want[i]), 1e-5) << what << ": token " << i;
    }
  }
}

struct EngineCase {
  const char* name;  // "random" or an HF fixture directory
};

class OffloadEngine : public ::testing::TestWithParam<EngineCase> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    const std::string n = GetParam().name;
    model_ = n == "random" ? tiny_random(DType::F16, 5)
                           : model::Model::open(std::string(SF_TEST_DATA_DIR) + "/opt/" + n);
    toks_ = spread_tokens(*model_, 14);
    auto ref_engine = model::make_cuda_engine(*model_);
    auto& ref = *ref_engine;
    want_ = stepwise(ref, toks_);
    ref_ids_ = ref.generate(std::span<const int32_t>(toks_.data(), 3), 10, {}).ids;
  }
  bool exact() const {
    return model_->dtype() != DType::F32;
  }  // fp32: fma contraction may differ in the last bit
  std::unique_ptr<model::Model> model_;
  std::vector<int32_t> toks_, ref_ids_;
  std::vector<std::vector<float>> want_;
};

TEST_P(OffloadEngine, OracleModeEqualsResidentBitForBit) {
  const int64_t F = model_->config().ffn_dim;
  OffloadOptions opt;
  opt.predictor = PredictorMode::Exact;
  for (const auto& [hot, lru] :
       {std::pair<int64_t, int64_t>{F, 0}, {16, 48}, {0, F / 2}, {F / 4, 8}}) {
    auto off_engine = make_offloaded_opt(*model_, opt, {}, {}, hand_plan(*model_, hot, lru));
    auto& off = *off_engine;
    const auto got = stepwise(off.engine(), toks_);
    expect_same_logits(got, want_, fmt::format("{} hot {} lru {}", GetParam().name, hot, lru),
                       exact());
    const auto res = off.generate(std::span<const int32_t>(toks_.data(), 3), 10, {});
    if (exact()) {
      EXPECT_EQ(res.ids, ref_ids_) << "hot " << hot << " lru " << lru;
    }
  }
}

TEST_P(OffloadEngine, StreamPolicyEqualsResidentBitForBit) {
  OffloadOptions opt;
  opt.policy = OffloadPolicy::Stream;
  Plan p = hand_plan(*model_, 0, 0);
  const NeuronStore st = NeuronStore::from_model(*model_);
  p.ffn_budget =
      2 * uint64_t(st.ffn()) * st.layout().stride;  // one layer resident, the rest streamed
  auto off_engine = make_offloaded_opt(*model_, opt, {}, {}, p);
  auto& off = *off_engine;
  EXPECT_NE(off.describe().find("streamed"), std::string::npos) << off.describe();
  expect_same_logits(stepwise(off.engine(), toks_), want_, "stream", exact());
}

INSTANTIATE_TEST_SUITE_P(Models, OffloadEngine,
                         ::testing::Values(EngineCase{"random"}, EngineCase{"pre_ln"},
                                           EngineCase{"post_ln"}, EngineCase{"proj"},
                                           EngineCase{"untied"}),
                         [](const auto& i) { return std::string(i.param.name); });

// A model with predictor tensors: rank-R predictors whose threshold decides what they predict.
std::unique_ptr<model::Model> with_predictors(float threshold, int64_t rank, uint64_t seed) {
  test::RandomSpec spec = wide_spec();
  spec.dtype = DType::F16;
  spec.seed = 5;
  auto m = test::random_opt(spec);
  const auto& c = m->config();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    m->add_dense(predictor_name(l, "u"), DType::F16, {c.hidden_size, rank},
                 randn(size_t(c.hidden_size * rank), 0.1f, 0.0f, seed + uint64_t(l)));
    m->add_dense(predictor_name(l, "v"), DType::F16, {rank, c.ffn_dim},
                 randn(size_t(rank * c.ffn_dim), 0.1f, 0.0f, seed + 100 + uint64_t(l)));
    m->add_dense(predictor_name(l, "threshold"), DType::F32, {c.ffn_dim},
                 std::vector<float>(size_t(c.ffn_dim), threshold));
  }
  return m;
}

// A predictor that flags every neuron: the active set is a superset of the true one, so the output
// is the resident one bit for bit while every bundle goes through the side stream's lookup and
// fetch during attention (cache smaller than the layer: evictions and direct host reads each step).
TEST(OffloadConcurrent, PredictEverythingEqualsResidentWhileFetchesOverlapAttention) {
  SKIP_WITHOUT_GPU();
  auto m = with_predictors(-1e30f, 8, 9);
  const std::vector<int32_t> toks = spread_tokens(*m, 14);
  auto ref_engine = model::make_cuda_engine(*m);
  auto& ref = *ref_engine;
  const auto want = stepwise(ref, toks);
  for (const auto& [hot, lru] : {std::pair<int64_t, int64_t>{16, 64}, {0, 256}, {32, 224}}) {
    OffloadOptions opt;
    opt.stats = true;
    OffloadTuning tune;
    tune.recall_every = 1;
    auto off_engine = make_offloaded_opt(*m, opt, {}, tune, hand_plan(*m, hot, lru));
    auto& off = *off_engine;
    expect_same_logits(stepwise(off.engine(), toks), want,
                       fmt::format("predict-all hot {} lru {}", hot, lru), true);
    const auto res = off.generate(std::span<const int32_t>(toks.data(), 3), 8, {});
    const OffloadStats s = off.stats();
    EXPECT_EQ(s.tokens, res.decode_steps);
    EXPECT_DOUBLE_EQ(s.hits + s.fetched + s.overflow, s.active);
    EXPECT_DOUBLE_EQ(s.active, double(s.tokens) * 2 * 256);
    EXPECT_DOUBLE_EQ(s.recall(), 1.0);
    EXPECT_GT(s.exact_rows, 0);
    EXPECT_LT(s.precision(), 1.0);
    if (hot + lru < 256) {
      EXPECT_GT(s.pcie_bytes,
                0);  // the cache cannot hold the layer: every step reads from the host
    } else {
      EXPECT_EQ(s.pcie_bytes, 0);  // warmed by the stepwise run: every neuron is cached
    }
    std::printf("predict-all hot %ld lru %ld: %s\n", long(hot), long(lru),
                s.to_json().dump().c_str());
  }
}

TEST(OffloadPredictorMode, RandomPredictorRunsAndReportsConsistentStats) {
  SKIP_WITHOUT_GPU();
  auto m = with_predictors(0.0f, 16, 21);
  OffloadOptions opt;
  opt.stats = true;
  OffloadTuning tune;
  tune.recall_every = 1;
  auto off_engine = make_offloaded_opt(*m, opt, {}, tune, hand_plan(*m, 32, 48));
  auto& off = *off_engine;
  std::vector<int32_t> prompt = {2, 17, 33};
  const auto res = off.generate(prompt, 16, {});
  EXPECT_EQ(res.ids.size(), 16u);
  const OffloadStats s = off.stats();
  EXPECT_EQ(s.tokens, 15);
  EXPECT_DOUBLE_EQ(s.hits + s.fetched + s.overflow, s.active);
  EXPECT_GE(s.recall(), 0.0);
  EXPECT_LE(s.recall(), 1.0);
  EXPECT_EQ(s.exact_rows, 15 * 2);
  const double stride = double(off.store().layout().stride);
  EXPECT_DOUBLE_EQ(s.pcie_bytes, s.fetched * stride + s.overflow * 2 * 64 * 2);
  EXPECT_GT(s.step_ms, 0);
  std::printf("random predictor: %s\n%s", s.to_json().dump().c_str(), off.describe().c_str());
  const auto logits = off.engine().forward(std::vector<int32_t>{5});
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

// How the two streams split the work changes when kernels run, not what they compute: with the side
// stream at the highest priority (SPARSEFLOW_SIDE_PRIORITY=1), the same ids, logits and counters as
// by default.
class OffloadStreams : public ::testing::TestWithParam<const char*> {};

TEST_P(OffloadStreams, ChangeNothingButTiming) {
  SKIP_WITHOUT_GPU();
  auto m = with_predictors(0.0f, 16, 29);
  const std::vector<int32_t> toks = spread_tokens(*m, 12);
  auto run = [&](const char* env) {
    if (env) setenv(env, "1", 1);
    OffloadOptions opt;
    opt.stats = true;
    auto off_engine = make_offloaded_opt(*m, opt, {}, OffloadTuning{}, hand_plan(*m, 16, 48));
    auto& off = *off_engine;
    if (env) unsetenv(env);
    auto logits = stepwise(off.engine(), toks);
    const auto res = off.generate(std::span<const int32_t>(toks.data(), 3), 8, {});
    return std::make_tuple(logits, res.ids, off.stats().active, off.stats().fetched);
  };
  const auto base = run(nullptr), other = run(GetParam());
  expect_same_logits(std::get<0>(other), std::get<0>(base), GetParam(), true);
  EXPECT_EQ(std::get<1>(other), std::get<1>(base));
  EXPECT_EQ(std::get<2>(other), std::get<2>(base));
  EXPECT_EQ(std::get<3>(other), std::get<3>(base));
}

INSTANTIATE_TEST_SUITE_P(Env, OffloadStreams, ::testing::Values("SPARSEFLOW_SIDE_PRIORITY"));

// benchmark --profile on the offloaded engine: the eager decode step by stage, the FFN split by the
// runtime into the wait for the side stream before fc1, fc1 and fc2 (one of each per layer and
// step); the marker is dropped after the pass (a later graph step runs without it).
TEST(OffloadProfile, DecodeStagesSplitTheOffloadedFfn) {
  SKIP_WITHOUT_GPU();
  auto m = with_predictors(0.0f, 16, 23);
  auto off_engine =
      make_offloaded_opt(*m, OffloadOptions{}, {}, OffloadTuning{}, hand_plan(*m, 32, 48));
  auto& off = *off_engine;
  const int64_t steps = 3, layers = m->config().num_hidden_layers;
  const auto stages = off.engine().profile_decode(4, steps);
  auto find = [&](const char* name) {
    return std::find_if(stages.begin(), stages.end(),
                        [&](const model::StageProfile& st) { return st.stage == name; });
  };
  for (const char* name : {"ffn_predict", "ffn_wait", "ffn_fc1", "ffn_fc2", "qkv", "attention"}) {
    const auto it = find(name);
    ASSERT_NE(it, stages.end()) << "no stage " << name;
    EXPECT_EQ(it->launches, layers) << name;  // per step
    EXPECT_GE(it->ms, 0.0) << name;
  }
  EXPECT_EQ(find("ffn_predict_wait"), stages.end());
  EXPECT_GT(find("ffn_fc1")->ms + find("ffn_fc2")->ms, 0.0);
  // The same stages inside the replayed decode graph (the side stream's events are graph nodes
  // too).
  const auto graph = off.engine().profile_decode_graph(4, steps);
  for (const auto& e : stages) {
    const auto g = std::find_if(graph.begin(), graph.end(),
                                [&](const model::StageProfile& s) { return s.stage == e.stage; });
    ASSERT_NE(g, graph.end()) << e.stage;
    EXPECT_EQ(g->launches, e.launches) << e.stage;
  }
  const auto res = off.generate(std::vector<int32_t>{2, 17, 33}, 6, {});
  EXPECT_EQ(res.ids.size(), 6u);
}

// Budget edges through the planner: too small is refused (naming the minimum), the minimum runs,
// a budget holding everything keeps every layer resident; all three equal the resident output in
// oracle mode.
TEST(OffloadBudget, TooSmallExactlyEnoughAndEverything) {
  SKIP_WITHOUT_GPU();
  auto m = tiny_random(DType::F16, 5);
  std::vector<int32_t> toks = {2, 9, 14, 27, 3, 50};
  auto ref_engine = model::make_cuda_engine(*m);
  auto& ref = *ref_engine;
  const auto want = stepwise(ref, toks);
  const NeuronStore st = NeuronStore::from_model(*m);
  OffloadOptions opt;
  opt.predictor = PredictorMode::Exact;
  OffloadTuning tune;
  tune.context_tokens = 64;
  const PlannerInput in0 = planner_input(*m, st, tune.context_tokens, opt);
  PlannerInput tiny = in0;
  tiny.gpu_budget = 1024;
  EXPECT_THROW(plan_placement(tiny), Error);
  PlannerInput all = in0;
  all.gpu_budget = uint64_t(1) << 34;
  const Plan pall = plan_placement(all);
  EXPECT_TRUE(pall.whole_model_resident);
  PlannerInput edge = in0;
  edge.gpu_budget = pall.min_gpu_bytes;
  const Plan pmin = plan_placement(edge);
  for (const Plan& p : {pmin, pall}) {
    opt.gpu_memory = SizeSpec{double(p.gpu_budget), false, "test"};
    auto off_engine = make_offloaded_opt(*m, opt, {}, tune, p);
    auto& off = *off_engine;
    expect_same_logits(stepwise(off.engine(), toks), want, fmt::format("budget {}", p.gpu_budget),
                       true);
  }
  // Through the constructor: a budget below the minimum is an InvalidArgument with the minimum in
  // it.
  opt.gpu_memory = SizeSpec{1024, false, "1024"};
  try {
    auto off_engine = make_offloaded_opt(*m, opt, {}, tune);
    auto& off = *off_engine;
    ADD_FAILURE() << "a 1 KiB budget was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::InvalidArgument) << e.what();
  }
}

// ---- attention weights on the host (CudaOptions::attention_host_layers)
// ---------------------------
std::unique_ptr<model::Model> four_layers(bool sparse24) {
  test::RandomSpec spec = wide_spec();
  spec.config.num_hidden_layers = 4;
  spec.dtype = DType::F16;
  spec.sparse24 = sparse24;
  spec.seed = 17;
  return test::random_opt(spec);
}

// The same bytes read through the mapped pointer by the same kernels: identical logits, decode
// (GEMV) and a 14-token prefill (cuBLAS), and identical greedy ids through the decode graph.
TEST(AttentionOnHost, EngineEqualsAllResidentBitForBit) {
  SKIP_WITHOUT_GPU();
  auto m = four_layers(false);
  const auto& c = m->config();
  const std::vector<int32_t> toks = spread_tokens(*m, 14);
  auto ref_engine = model::make_cuda_engine(*m);
  auto& ref = *ref_engine;
  const auto want = stepwise(ref, toks);
  ref.reset(int64_t(toks.size()));
  const auto want_prefill = ref.forward(toks, /*all_logits=*/true);
  const auto want_ids = ref.generate(std::span<const int32_t>(toks.data(), 3), 10, {}).ids;
  const size_t per_layer = 4 * size_t(c.hidden_size) * size_t(c.hidden_size) * 2;
  for (int64_t k : {c.num_hidden_layers, int64_t(1)}) {
    model::CudaOptions o;
    o.attention_host_layers = k;
    auto e_engine = model::make_cuda_engine(*m, o);
    auto& e = *e_engine;
    EXPECT_EQ(e.memory().host_weights, size_t(k) * per_layer);
    EXPECT_EQ(e.memory().weights + e.memory().host_weights, ref.memory().weights);
    expect_same_logits(stepwise(e, toks), want,
                       fmt::format("attention on the host, last {} layers", k), true);
    e.reset(int64_t(toks.size()));
    const auto got_prefill = e.forward(toks, /*all_logits=*/true);
    ASSERT_EQ(got_prefill.size(), want_prefill.size());
    EXPECT_EQ(0, std::memcmp(got_prefill.data(), want_prefill.data(), got_prefill.size() * 4))
        << "prefill, k " << k;
    EXPECT_EQ(e.generate(std::span<const int32_t>(toks.data(), 3), 10, {}).ids, want_ids)
        << "k " << k;
  }
  model::CudaOptions bad;
  bad.attention_host_layers = c.num_hidden_layers + 1;
  try {
    auto e_engine = model::make_cuda_engine(*m, bad);
    auto& e = *e_engine;
    ADD_FAILURE() << "attention_host_layers beyond the model's layers was accepted";
  } catch (const Error& err) {
    EXPECT_EQ(err.status(), Status::InvalidArgument) << err.what();
  }
}

// 2:4 attention is read by the 2:4 kernels from device memory only: refused with a reason.
TEST(AttentionOnHost, SparseAttentionIsRefusedWithAReason) {
  SKIP_WITHOUT_GPU();
  auto m = four_layers(true);
  model::CudaOptions o;
  o.attention_host_layers = 1;
  try {
    auto e_engine = model::make_cuda_engine(*m, o);
    auto& e = *e_engine;
    ADD_FAILURE() << "2:4 attention on the host was accepted";
  } catch (const Error& err) {
    EXPECT_EQ(err.status(), Status::UnsupportedShape) << err.what();
    EXPECT_NE(std::string(err.what()).find("2:4"), std::string::npos) << err.what();
  }
}

// A budget below the all-resident minimum: the planner moves the last layers' attention to the
// host, and the offloaded engine in oracle mode still equals the resident one bit for bit; --stats
// counts the attention bytes as PCIe traffic.
TEST(AttentionOnHost, OffloadedPlanWithHostAttentionEqualsResidentBitForBit) {
  SKIP_WITHOUT_GPU();
  auto m = four_layers(false);
  const auto& c = m->config();
  const std::vector<int32_t> toks = spread_tokens(*m, 14);
  auto ref_engine = model::make_cuda_engine(*m);
  auto& ref = *ref_engine;
  const auto want = stepwise(ref, toks);
  const auto want_ids = ref.generate(std::span<const int32_t>(toks.data(), 3), 10, {}).ids;
  const NeuronStore st = NeuronStore::from_model(*m);
  OffloadOptions opt;
  opt.predictor = PredictorMode::Exact;
  opt.stats = true;
  OffloadTuning tune;
  tune.context_tokens = 64;
  PlannerInput in = planner_input(*m, st, tune.context_tokens, opt);
  ASSERT_EQ(int64_t(in.attention_weight_bytes.size()), c.num_hidden_layers);
  const uint64_t layer_bytes = in.attention_weight_bytes[0];
  in.gpu_budget = uint64_t(1) << 34;
  const uint64_t min = plan_placement(in).min_gpu_bytes;  // every layer's attention on the host
  for (const auto& [budget, k] : {std::pair<uint64_t, int64_t>{min, c.num_hidden_layers},
                                  {min + 2 * layer_bytes, c.num_hidden_layers - 2}}) {
    in.gpu_budget = budget;
    const Plan p = plan_placement(in);
    ASSERT_EQ(p.attention_host_layers, k) << p.table();
    ASSERT_GT(p.attention_host_layers, 0);
    opt.gpu_memory = SizeSpec{double(budget), false, "test"};
    auto off_engine = make_offloaded_opt(*m, opt, {}, tune, p);
    auto& off = *off_engine;
    EXPECT_EQ(off.engine().memory().host_weights, p.attention_host_bytes);
    EXPECT_NE(off.describe().find("mapped host memory"), std::string::npos) << off.describe();
    expect_same_logits(stepwise(off.engine(), toks), want,
                       fmt::format("host attention, {} layers", k), true);
    const auto res = off.generate(std::span<const int32_t>(toks.data(), 3), 10, {});
    EXPECT_EQ(res.ids, want_ids) << "host attention, " << k << " layers";
    const OffloadStats s = off.stats();
    EXPECT_GE(s.pcie_bytes, double(s.tokens) * double(p.attention_host_bytes));
    EXPECT_GT(s.tokens, 0);
  }
}

}  // namespace
}  // namespace sf::offload

namespace sf::offload {
namespace {

// The cpu policy: pinned neurons on the GPU, the rest computed by the CPU from the host bundles in
// a host node of the decode graph. The CPU sums in another order: equal to the resident output
// within fp32 rounding (not bit for bit).
TEST(OffloadCpuPolicy, OracleCpuShareMatchesResident) {
  SKIP_WITHOUT_GPU();
  auto m = tiny_random(DType::F16, 5);
  const std::vector<int32_t> toks = spread_tokens(*m, 10);
  auto ref_engine = model::make_cuda_engine(*m);
  auto& ref = *ref_engine;
  const auto want = stepwise(ref, toks);
  for (PredictorMode pm : {PredictorMode::Exact, PredictorMode::Model}) {
    auto pm_model = pm == PredictorMode::Exact
                        ? nullptr
                        : with_predictors(-1e30f, 8, 9);  // predicts everything
    const model::Model& mm = pm_model ? *pm_model : *m;
    OffloadOptions opt;
    opt.policy = OffloadPolicy::Cpu;
    opt.predictor = pm;
    auto off_engine = make_offloaded_opt(mm, opt, {}, {}, hand_plan(mm, 48, 16));
    auto& off = *off_engine;
    EXPECT_NE(off.describe().find("cpu"), std::string::npos) << off.describe();
    const auto got = stepwise(off.engine(), toks);
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_LT(test::rel_l2(got[i], want[i]), 2e-3)
          << "token " << i << (pm_model ? " (predict-all)" : " (exact)");
    const auto res = off.generate(std::span<const int32_t>(toks.data(), 3), 6, {});
    EXPECT_GT(off.stats().cpu_neurons, 0);
    EXPECT_EQ(off.stats().fetched, 0);
  }
}

TEST(OffloadAutoPolicy, ChoosesPerLayerAndRuns) {
  SKIP_WITHOUT_GPU();
  auto m = with_predictors(0.0f, 16, 21);
  OffloadOptions opt;
  opt.policy = OffloadPolicy::Auto;
  auto off_engine = make_offloaded_opt(*m, opt, {}, {}, hand_plan(*m, 32, 48));
  auto& off = *off_engine;
  std::printf("%s", off.describe().c_str());
  const auto res = off.generate(std::vector<int32_t>{2, 17, 33}, 8, {});
  EXPECT_EQ(res.ids.size(), 8u);
}

// A host-memory limit below the non-resident bundles asks for reading them from the .sf mmap, which
// this runtime does not implement: refused with a message (never a crash).
TEST(OffloadHostLimit, BelowTheBundlesIsRefusedWithAReason) {
  SKIP_WITHOUT_GPU();
  auto m = tiny_random(DType::F16, 5);
  Plan p = hand_plan(*m, 16, 16);
  p.host = HostPlacement::Mmap;
  OffloadOptions opt;
  opt.predictor = PredictorMode::Exact;
  try {
    auto off_engine = make_offloaded_opt(*m, opt, {}, {}, p);
    auto& off = *off_engine;
    ADD_FAILURE() << "mmap host placement was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::UnsupportedShape) << e.what();
  }
}

}  // namespace
// calibrate --device cuda: the GPU engine collects the pairs the CPU backend collects (fp16
// activations against the CPU's fp32, so within a few rounding units), in the same token order
// across windows; a one-token last window is dropped rather than run as a decode step; the fit
// takes the GPU's pairs like the CPU's.
TEST(OffloadCalibrate, GpuCollectsTheCpuPairs) {
  SKIP_WITHOUT_GPU();
  auto m = tiny_random(DType::F16, 7);
  const auto& c = m->config();
  std::vector<int32_t> toks;
  for (int i = 0; i < 41; ++i) toks.push_back(int32_t((i * 53 + 3) % c.vocab_size));
  PredictorFitOptions po;
  po.window = 16;  // windows of 16, 16 and 9 tokens
  po.rank = 8;
  const CollectedActivations cpu = collect_activations_cpu(*m, toks, po);
  CollectedActivations gpu = collect_activations_cuda(*m, toks, po);
  ASSERT_EQ(gpu.tokens, cpu.tokens);
  ASSERT_EQ(gpu.layers, cpu.layers);
  for (int64_t l : cpu.layers) {
    const double ea = test::rel_l2(gpu.a[size_t(l)], cpu.a[size_t(l)]);
    const double ez = test::rel_l2(gpu.z[size_t(l)], cpu.z[size_t(l)]);
    std::printf("layer %lld: attention input rel L2 %.3g, pre-activation rel L2 %.3g\n",
                (long long)l, ea, ez);
    EXPECT_LT(ea, 1e-2) << "layer " << l;
    EXPECT_LT(ez, 1e-2) << "layer " << l;
  }
  // The profile of the GPU's pre-activations (profile --device cuda): fp16 rounding flips only
  // pre-activations near zero, so the rates differ by little.
  // Without the attention inputs (profile --device cuda): no a, the same z.
  PredictorFitOptions z_only = po;
  z_only.attention_inputs = false;
  const CollectedActivations gz = collect_activations_cuda(*m, toks, z_only);
  for (int64_t l : cpu.layers) {
    EXPECT_TRUE(gz.a[size_t(l)].empty()) << "layer " << l;
    EXPECT_EQ(gz.z[size_t(l)], gpu.z[size_t(l)]) << "layer " << l;
  }
  const ProfileResult pc = profile_collected(cpu), pg = profile_collected(gpu);
  ASSERT_EQ(pg.layers.size(), pc.layers.size());
  for (size_t l = 0; l < pc.layers.size(); ++l) {
    double worst = 0, mean = 0;
    const size_t F = pc.layers[l].firing_rate.size();
    for (size_t j = 0; j < F; ++j) {
      const double d = std::abs(pg.layers[l].firing_rate[j] - pc.layers[l].firing_rate[j]);
      worst = std::max(worst, d);
      mean += d / double(F);
    }
    EXPECT_LT(mean, 0.01) << "layer " << l;
    EXPECT_LE(worst, 0.1) << "layer " << l;
    EXPECT_NEAR(pg.layers[l].sparsity, pc.layers[l].sparsity, 0.01) << "layer " << l;
  }
  const CalibrationReport r = fit_collected(gpu, po);
  EXPECT_EQ(r.layers.size(), cpu.layers.size());
  EXPECT_GT(r.recall, 0.5);
  toks.resize(33);  // windows of 16, 16 and 1
  EXPECT_EQ(collect_activations_cuda(*m, toks, po).tokens, 32);
}

// The fit's large products on the GPU (calibrate on a GPU machine) give the CPU's predictor: the
// same thresholds, recall, precision and product U V up to rounding (eigenvector signs may differ;
// U and V flip together).
TEST(OffloadCalibrate, GpuFitMatchesCpuFit) {
  SKIP_WITHOUT_GPU();
  const int64_t T = 300, heldout = 60, d = 64, F = 256;
  std::mt19937_64 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> a(size_t(T * d)), w(size_t(d * F)), z(size_t(T * F));
  for (auto& x : a) x = nd(rng);
  for (auto& x : w) x = 0.2f * nd(rng);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < F; ++j) {
      float s = -1.0f + 0.3f * nd(rng);
      for (int64_t i = 0; i < d; ++i) s += a[size_t(t * d + i)] * w[size_t(i * F + j)];
      z[size_t(t * F + j)] = s;
    }
  PredictorFitOptions cpu_opt;
  cpu_opt.rank = 16;
  PredictorFitOptions gpu_opt = cpu_opt;
  gpu_opt.gpu_solver = make_gpu_reduced_rank;
  const FittedPredictor pc = fit_layer(a.data(), z.data(), T, heldout, d, F, cpu_opt);
  const FittedPredictor pg = fit_layer(a.data(), z.data(), T, heldout, d, F, gpu_opt);
  ASSERT_TRUE(pg.fitted_on_gpu) << "the GPU path fell back to the CPU";
  EXPECT_FALSE(pc.fitted_on_gpu);
  EXPECT_NEAR(pg.kappa, pc.kappa, 1e-3 * (1 + std::abs(pc.kappa)));
  EXPECT_NEAR(pg.recall, pc.recall, 2e-3);
  EXPECT_NEAR(pg.precision, pc.precision, 2e-3);
  double worst = 0;
  for (int64_t j = 0; j < F; ++j)
    worst = std::max(worst, double(std::abs(pg.threshold[size_t(j)] - pc.threshold[size_t(j)])) /
                                (1.0 + std::abs(pc.threshold[size_t(j)])));
  EXPECT_LT(worst, 1e-3);
  // (a_t U) V for a few tokens, from the fp16 factors of each fit.
  auto scores = [&](const FittedPredictor& p, int64_t t) {
    std::vector<float> proj(static_cast<size_t>(p.rank), 0.0f), out(static_cast<size_t>(F), 0.0f);
    for (int64_t r = 0; r < p.rank; ++r)
      for (int64_t i = 0; i < d; ++i)
        proj[size_t(r)] += a[size_t(t * d + i)] * half_to_float(p.u[size_t(i * p.rank + r)]);
    for (int64_t j = 0; j < F; ++j)
      for (int64_t r = 0; r < p.rank; ++r)
        out[size_t(j)] += proj[size_t(r)] * half_to_float(p.v[size_t(r * F + j)]);
    return out;
  };
  for (int64_t t : {0, 7, 299})
    EXPECT_LT(test::rel_l2(scores(pg, t), scores(pc, t)), 1e-2) << "token " << t;
}

}  // namespace sf::offload
