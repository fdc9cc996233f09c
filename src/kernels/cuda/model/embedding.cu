// Token + learned position embeddings (OPT's table starts position 0 at row 2, GPT-2's at row 0;
// rotary models have no table).
// Both kernels are on the decode path and launched with PDL (pdl.cuh); the rows they read depend
// on the token ids and *pos that the previous step's sampling wrote, so nothing runs before the
// wait.
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/epilogue.cuh"
#include "kernels/cuda/model/model_kernels.hpp"
#include "kernels/cuda/pdl.cuh"

namespace sf::cuda::model {
namespace {

// One block per row; the row's token and position are read once, then the columns in a strided
// loop. Reads and writes are coalesced along dim; nothing here is worth vectorising (one row/token).
__global__ void embed_kernel(const int32_t* __restrict__ tokens, int64_t seq,
                             const void* __restrict__ tok_emb, const void* __restrict__ pos_emb,
                             int emb_dt, int64_t dim, const int* __restrict__ pos,
                             void* __restrict__ out, int out_dt, int64_t pos_offset) {
  pdl_launch_dependents();
  pdl_wait();
  const int64_t r = blockIdx.x;
  const int64_t t = tokens[r];
  const int64_t p = int64_t(*pos) + r % seq + pos_offset;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
    float v = load_elem(tok_emb, emb_dt, t * dim + j);
    if (pos_emb) v += load_elem(pos_emb, emb_dt, p * dim + j);
    store_elem(out, out_dt, r * dim + j, v);
  }
}

__global__ void add_positions_kernel(float* __restrict__ h, int64_t seq,
                                     const void* __restrict__ pos_emb, int emb_dt, int64_t dim,
                                     const int* __restrict__ pos, int64_t pos_offset) {
  pdl_launch_dependents();
  pdl_wait();
  const int64_t r = blockIdx.x;
  const int64_t p = int64_t(*pos) + r % seq + pos_offset;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) h[r * dim + j] += load_elem(pos_emb, emb_dt, p * dim + j);
}

}  // namespace

void launch_embed(const int32_t* tokens, int64_t rows, int64_t seq, const void* tok_emb,
                  const void* pos_emb, int emb_dt, int64_t dim, const int* pos, void* out,
                  int out_dt, cudaStream_t stream, int64_t pos_offset) {
  if (rows == 0) return;
  launch_pdl(embed_kernel, unsigned(rows), 256, 0, stream, tokens, seq, tok_emb, pos_emb, emb_dt,
             dim, pos, out, out_dt, pos_offset);
  SF_CUDA_CHECK_LAUNCH();
}

void launch_add_positions(float* h, int64_t rows, int64_t seq, const void* pos_emb, int emb_dt,
                          int64_t dim, const int* pos, cudaStream_t stream, int64_t pos_offset) {
  if (rows == 0) return;
  launch_pdl(add_positions_kernel, unsigned(rows), 256, 0, stream, h, seq, pos_emb, emb_dt, dim,
             pos, pos_offset);
  SF_CUDA_CHECK_LAUNCH();
}

}  // namespace sf::cuda::model
