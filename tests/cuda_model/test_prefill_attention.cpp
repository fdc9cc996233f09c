// GPU test of the fused prefill attention (src/kernels/cuda/model/prefill_attention.cu) against an
// fp64 reference of causal softmax attention: fp16 and bf16, head_dim 64, 80 and 128, prompt lengths
// that are not multiples of the 64-query / 64-key tiles (1, 63, 65, 200), with and without earlier
// tokens in the cache (past 0 and 37), for the second sequence of a two-sequence cache whose rows
// past the sequence's length hold NaN (a kernel that reads them unmasked fails). The output buffer
// is poisoned with NaN before each run, so an unwritten element shows. Skips when no GPU is present.
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
  a.hidden = H;
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

TEST(CudaPrefillAttention, SupportTable) {
  // fp32 activations and other head sizes keep the unfused path; no GPU needed for this.
  EXPECT_FALSE(fused_prefill_attention_supported(0, 128, 4096));
  EXPECT_FALSE(fused_prefill_attention_supported(1, 16, 64));
  EXPECT_TRUE(fused_prefill_attention_supported(1, 128, 4096));
  EXPECT_TRUE(fused_prefill_attention_supported(2, 80, 2560));
}

}  // namespace
}  // namespace sf::cuda::model
