// GPU test of the embedding kernels (src/kernels/cuda/model/embedding.cu): token rows plus learned
// positions at the table offset of the architecture (OPT 2, GPT-2 0), a prefill (seq = rows) and a
// batch decode (seq = 1), none for rotary models (no table); fp32 and 16-bit outputs, poisoned with
// a guard behind them. Sums of two table entries rounded once, so the comparison is exact. Skips
// when no GPU is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "kernel_test_util.hpp"
#include "kernels/cuda/cuda_api.hpp"
#include "kernels/cuda/model/model_kernels.hpp"

namespace sf::cuda::model {
namespace {

using test::Dev;

TEST(CudaEmbedding, TokensAndPositionsAtTheTableOffset) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t vocab = 50, dim = 24, table = 40, rows = 6, guard = 32;
  for (int emb_dt : {1, 2})
    for (int out_dt : {0, emb_dt})
      for (int64_t offset : {0, 2})
        for (bool positions : {true, false})
          for (int64_t seq : {rows, int64_t(1)}) {
            SCOPED_TRACE("emb_dt " + std::to_string(emb_dt) + " out_dt " + std::to_string(out_dt) +
                         " offset " + std::to_string(offset) +
                         (positions ? " positions" : " none") + " seq " + std::to_string(seq));
            const DType et = DType(emb_dt), ot = DType(out_dt);
            std::vector<uint16_t> tok(size_t(vocab * dim)), pos(size_t(table * dim));
            for (size_t i = 0; i < tok.size(); ++i) store_from_float(tok.data(), et, i, nd(rng));
            for (size_t i = 0; i < pos.size(); ++i) store_from_float(pos.data(), et, i, nd(rng));
            std::vector<int32_t> ids(static_cast<size_t>(rows));
            for (auto& t : ids) t = int32_t(rng() % uint64_t(vocab));
            const int p0 = 17;
            const size_t es = dtype_size(ot), out_bytes = size_t(rows * dim) * es;
            Dev dtok(tok.size() * 2), dpe(pos.size() * 2), dids(ids.size() * 4), dp(4),
                dout(out_bytes + guard);
            ASSERT_EQ(cudaMemcpy(dtok.p, tok.data(), tok.size() * 2, cudaMemcpyHostToDevice),
                      cudaSuccess);
            ASSERT_EQ(cudaMemcpy(dpe.p, pos.data(), pos.size() * 2, cudaMemcpyHostToDevice),
                      cudaSuccess);
            ASSERT_EQ(cudaMemcpy(dids.p, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice),
                      cudaSuccess);
            ASSERT_EQ(cudaMemcpy(dp.p, &p0, 4, cudaMemcpyHostToDevice), cudaSuccess);
            ASSERT_EQ(cudaMemset(dout.p, 0xff, out_bytes + guard), cudaSuccess);
            launch_embed(static_cast<const int32_t*>(dids.p), rows, seq, dtok.p,
                         positions ? dpe.p : nullptr, emb_dt, dim, static_cast<const int*>(dp.p),
                         dout.p, out_dt, nullptr, offset);
            ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
            std::vector<uint8_t> got(out_bytes + guard);
            ASSERT_EQ(cudaMemcpy(got.data(), dout.p, got.size(), cudaMemcpyDeviceToHost),
                      cudaSuccess);
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t j = 0; j < dim; ++j) {
                float want = load_as_float(tok.data(), et, size_t(ids[size_t(r)] * dim + j));
                if (positions)
                  want += load_as_float(pos.data(), et, size_t((p0 + r % seq + offset) * dim + j));
                uint8_t buf[8];
                store_from_float(buf, ot, 0, want);
                ASSERT_EQ(load_as_float(got.data(), ot, size_t(r * dim + j)),
                          load_as_float(buf, ot, 0))
                    << "row " << r << " element " << j;
              }
            for (int64_t i = 0; i < guard; ++i)
              ASSERT_EQ(got[out_bytes + size_t(i)], 0xff) << "written past the end";

            // add_positions: h += pos_emb[*pos + r % seq + offset] in fp32.
            if (!positions) continue;
            std::vector<float> h(size_t(rows * dim));
            for (auto& v : h) v = nd(rng);
            Dev dh(h.size() * 4);
            ASSERT_EQ(cudaMemcpy(dh.p, h.data(), h.size() * 4, cudaMemcpyHostToDevice),
                      cudaSuccess);
            launch_add_positions(dh.f(), rows, seq, dpe.p, emb_dt, dim,
                                 static_cast<const int*>(dp.p), nullptr, offset);
            ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
            std::vector<float> hg(h.size());
            ASSERT_EQ(cudaMemcpy(hg.data(), dh.p, h.size() * 4, cudaMemcpyDeviceToHost),
                      cudaSuccess);
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t j = 0; j < dim; ++j)
                ASSERT_EQ(
                    hg[size_t(r * dim + j)],
                    h[size_t(r * dim + j)] +
                        load_as_float(pos.data(), et, size_t((p0 + r % seq + offset) * dim + j)));
          }
}

}  // namespace
}  // namespace sf::cuda::model
