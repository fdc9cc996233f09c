// GPU test of the fused prefill attention (src/kernels/cuda/model/prefill_attention.cu) against an
// fp64 reference of causal softmax attention: fp16 and bf16, head_dim 64, 80 and 128, prompt lengths
// that are not multiples of the 64-query / 64-key tiles (1, 63, 65, 200), with and without earlier
// tokens in the cache (past 0 and 37), for the second sequence of a two-sequence cache whose rows
// past the sequence's length hold NaN (a kernel that reads them unmasked fails). The output buffer
// is poisoned with NaN before each run, so an unwritten element shows. Also the unfused path's causal
// softmax and qkv_to_cache. Skips when no GPU is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
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

struct Case {
  int act_dt;  // 1 fp16, 2 bf16
  int64_t head_dim, n, past;
};

void run_case(const Case& c, std::mt19937_64& rng) {
  const DType t = DType(c.act_dt);
  const int64_t heads = 3, H = heads * c.head_dim, batch = 2, seq = 1;
  const int64_t len = c.past + c.n, cap = len + 9;  // rows len..cap-1 of the sequence: NaN
  SCOPED_TRACE("act_dt " + std::to_string(c.act_dt) + " head_dim " + std::to_string(c.head_dim) + " n " +
               std::to_string(c.n) + " past " + std::to_string(c.past));
  ASSERT_TRUE(fused_prefill_attention_supported(c.act_dt, c.head_dim, H));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  // Cache [batch, cap, H] and q [n, H], stored in the activation type; the reference reads the
  // stored (rounded) values. q carries the head_dim^-0.5 scale, as launch_qkv_to_cache writes it;
  // a spread of 3 makes some rows peaked and some flat.
  const size_t cache_elems = size_t(batch * cap * H);
  std::vector<uint16_t> kc(cache_elems), vc(cache_elems), qh(size_t(c.n * H));
  const float nan = std::nanf("");
  for (size_t i = 0; i < cache_elems; ++i) {
    const int64_t row = int64_t(i / size_t(H)) % cap;
    const bool live = int64_t(i / size_t(H * cap)) == seq && row < len;
    store_from_float(kc.data(), t, i, live ? nd(rng) : nan);
    store_from_float(vc.data(), t, i, live ? nd(rng) : nan);
  }
  const float qscale = 3.0f / std::sqrt(float(c.head_dim));
  for (size_t i = 0; i < qh.size(); ++i) store_from_float(qh.data(), t, i, nd(rng) * qscale);

  Dev dk(cache_elems * 2), dv(cache_elems * 2), dq(qh.size() * 2), dout(qh.size() * 2);
  ASSERT_EQ(cudaMemcpy(dk.p, kc.data(), cache_elems * 2, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dv.p, vc.data(), cache_elems * 2, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dq.p, qh.data(), qh.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(dout.p, 0xff, qh.size() * 2), cudaSuccess);  // NaN in fp16 and bf16

  AttentionArgs a;
  a.k_cache = dk.p;
  a.v_cache = dv.p;
  a.out = dout.p;
  a.batch = batch;
  a.capacity = cap;
  a.kv_heads = heads;
  a.heads = heads;
  a.head_dim = c.head_dim;
  a.act_dt = c.act_dt;
  launch_prefill_attention(a, seq, c.n, c.past, dq.p, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint16_t> got(qh.size());
  ASSERT_EQ(cudaMemcpy(got.data(), dout.p, got.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);

  // Reference in fp64. The kernel rounds the probabilities to the activation type before P.V (as
  // the unfused path does) and the output once: tolerance a few units of that rounding, relative to
  // the row's largest |value|.
  const double tol = c.act_dt == 1 ? 4e-3 : 3e-2;
  double worst = 0;
  auto kv = [&](const std::vector<uint16_t>& m, int64_t row, int64_t col) {
    return double(load_as_float(m.data(), t, size_t((seq * cap + row) * H + col)));
  };
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < c.n; ++i) {
      const int64_t visible = c.past + i + 1;
      std::vector<double> s(static_cast<size_t>(visible));
      double mx = -INFINITY;
      for (int64_t j = 0; j < visible; ++j) {
        double d = 0;
        for (int64_t e = 0; e < c.head_dim; ++e)
          d += double(load_as_float(qh.data(), t, size_t(i * H + h * c.head_dim + e))) * kv(kc, j, h * c.head_dim + e);
        s[size_t(j)] = d;
        mx = std::max(mx, d);
      }
      double sum = 0;
      for (auto& v : s) sum += (v = std::exp(v - mx));
      std::vector<double> o(size_t(c.head_dim), 0.0);
      double scale = 0;
      for (int64_t e = 0; e < c.head_dim; ++e) {
        for (int64_t j = 0; j < visible; ++j) o[size_t(e)] += s[size_t(j)] / sum * kv(vc, j, h * c.head_dim + e);
        scale = std::max(scale, std::abs(o[size_t(e)]));
      }
      for (int64_t e = 0; e < c.head_dim; ++e) {
        const float g = load_as_float(got.data(), t, size_t(i * H + h * c.head_dim + e));
        ASSERT_TRUE(std::isfinite(g)) << "query " << i << " head " << h << " element " << e;
        const double err = std::abs(double(g) - o[size_t(e)]) / std::max(scale, 1e-3);
        worst = std::max(worst, err);
        ASSERT_LT(err, tol) << "query " << i << " head " << h << " element " << e << ": got " << g << ", want "
                            << o[size_t(e)];
      }
    }
  std::printf("act_dt %d head_dim %lld n %lld past %lld: max error %.2g of the row's largest value\n", c.act_dt,
              (long long)c.head_dim, (long long)c.n, (long long)c.past, worst);
}

TEST(CudaPrefillAttention, MatchesFp64Reference) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(20261203);
  for (int dt : {1, 2})
    for (int64_t d : {64, 80, 128})
      for (int64_t n : {1, 63, 65, 200})
        for (int64_t past : {0, 37}) run_case(Case{dt, d, n, past}, rng);
}

// The unfused path's causal softmax (attention.cu) against fp64: rows short enough for every
// register-held width (1..16 float4 per lane) and one longer (the three-pass kernel), chunks whose
// first query sees fewer keys than the chunk holds and ones capped at len; probabilities as fp32,
// fp16 and bf16. The output is poisoned with NaN; keys past a query's limit must come back 0.
TEST(CudaPrefillAttention, CausalSoftmaxMatchesFp64) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd(0.0f, 4.0f);
  for (int dt : {0, 1, 2})
    for (int64_t len : {1, 5, 127, 128, 129, 300, 513, 1024, 1500, 2048, 2100}) {
      const int64_t heads = 2, queries = 7, ld = (len + 3) / 4 * 4 + 4;
      for (int64_t first : {int64_t(1), std::max<int64_t>(1, len - queries + 1), len + 3}) {
        SCOPED_TRACE("dt " + std::to_string(dt) + " len " + std::to_string(len) + " first " + std::to_string(first));
        const size_t cells = size_t(heads * queries * ld), esz = dt == 0 ? 4 : 2;
        std::vector<float> sc(cells);
        for (auto& v : sc) v = nd(rng);
        Dev ds(cells * 4), dp(cells * esz);
        ASSERT_EQ(cudaMemcpy(ds.p, sc.data(), cells * 4, cudaMemcpyHostToDevice), cudaSuccess);
        ASSERT_EQ(cudaMemset(dp.p, 0xff, cells * esz), cudaSuccess);  // NaN in every type
        launch_causal_softmax(static_cast<const float*>(ds.p), heads, queries, len, ld, first, dp.p, dt, nullptr);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        std::vector<uint8_t> got(cells * esz);
        ASSERT_EQ(cudaMemcpy(got.data(), dp.p, got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
        const double tol = dt == 0 ? 1e-5 : dt == 1 ? 1e-3 : 8e-3;
        for (int64_t r = 0; r < heads * queries; ++r) {
          const int64_t visible = std::min(len, first + r % queries);
          double mx = -INFINITY, sum = 0;
          for (int64_t j = 0; j < visible; ++j) mx = std::max(mx, double(sc[size_t(r * ld + j)]));
          for (int64_t j = 0; j < visible; ++j) sum += std::exp(double(sc[size_t(r * ld + j)]) - mx);
          for (int64_t j = 0; j < len; ++j) {
            const double want = j < visible ? std::exp(double(sc[size_t(r * ld + j)]) - mx) / sum : 0.0;
            const float g = load_as_float(got.data(), DType(dt), size_t(r * ld + j));
            ASSERT_TRUE(std::isfinite(g)) << "row " << r << " key " << j;
            ASSERT_NEAR(g, want, tol * std::max(want, 1e-2)) << "row " << r << " key " << j;
          }
        }
      }
    }
}

// q/k/v rows into the cache and the scaled q: fp32 rows (decode-style) and 16-bit rows (the prefill's
// cuBLASLt output), the 4-wide kernel (hidden % 4 == 0) and the scalar one (hidden 6), at a position
// past 0 in the second sequence of the cache.
TEST(CudaPrefillAttention, QkvToCache) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int act : {1, 2})
    for (int qkv_dt : {0, act})
      for (int64_t H : {12, 6}) {
        SCOPED_TRACE("act " + std::to_string(act) + " qkv_dt " + std::to_string(qkv_dt) + " hidden " + std::to_string(H));
        const int64_t n = 5, cap = 16, batch = 2, seq = 1, pos = 3;
        const size_t qsz = qkv_dt == 0 ? 4 : 2;
        std::vector<uint8_t> rows(size_t(n * 3 * H) * qsz);
        for (size_t i = 0; i < size_t(n * 3 * H); ++i) store_from_float(rows.data(), DType(qkv_dt), i, nd(rng));
        const size_t cache_bytes = size_t(batch * cap * H) * 2, q_bytes = size_t(n * H) * 2;
        Dev dqkv(rows.size()), dk(cache_bytes), dv(cache_bytes), dq(q_bytes), dpos(sizeof(int));
        const int p32 = int(pos);
        ASSERT_EQ(cudaMemcpy(dqkv.p, rows.data(), rows.size(), cudaMemcpyHostToDevice), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(dpos.p, &p32, sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
        ASSERT_EQ(cudaMemset(dk.p, 0xff, cache_bytes), cudaSuccess);
        ASSERT_EQ(cudaMemset(dv.p, 0xff, cache_bytes), cudaSuccess);
        ASSERT_EQ(cudaMemset(dq.p, 0xff, q_bytes), cudaSuccess);
        AttentionArgs a;
        a.qkv = static_cast<const float*>(dqkv.p);
        a.k_cache = dk.p;
        a.v_cache = dv.p;
        a.pos = static_cast<const int*>(dpos.p);
        a.batch = batch;
        a.capacity = cap;
        a.kv_heads = 1;
        a.heads = 1;
        a.head_dim = H;
        a.scale = 0.25f;
        a.act_dt = act;
        launch_qkv_to_cache(a, seq, n, dq.p, nullptr, qkv_dt);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        std::vector<uint16_t> k(size_t(batch * cap * H)), v(k.size()), q(size_t(n * H));
        ASSERT_EQ(cudaMemcpy(k.data(), dk.p, k.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(v.data(), dv.p, v.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(q.data(), dq.p, q.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
        const double tol = act == 1 ? 2e-3 : 1.6e-2;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < H; ++j) {
            auto in = [&](int64_t part) { return load_as_float(rows.data(), DType(qkv_dt), size_t(i * 3 * H + part * H + j)); };
            const size_t c = size_t((seq * cap + pos + i) * H + j);
            EXPECT_NEAR(load_as_float(q.data(), DType(act), size_t(i * H + j)), in(0) * 0.25f, tol * (1 + std::abs(in(0))));
            EXPECT_NEAR(load_as_float(k.data(), DType(act), c), in(1), tol * (1 + std::abs(in(1))));
            EXPECT_NEAR(load_as_float(v.data(), DType(act), c), in(2), tol * (1 + std::abs(in(2))));
          }
      }
}

TEST(CudaPrefillAttention, SupportTable) {
  // fp32 activations and other head sizes keep the unfused path; no GPU needed for this.
  EXPECT_FALSE(fused_prefill_attention_supported(0, 128, 4096));
  EXPECT_FALSE(fused_prefill_attention_supported(1, 16, 64));
  EXPECT_TRUE(fused_prefill_attention_supported(1, 128, 4096));
  EXPECT_TRUE(fused_prefill_attention_supported(2, 80, 2560));
}

}  // namespace
}  // namespace sf::cuda::model
