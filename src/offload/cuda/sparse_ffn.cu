// The sparse FFN over an active list: fc1 for the listed neurons, then fc2 summed over those with a
// non-zero output, reading each neuron's bundle from its cache slot (or from the backing source).
//
// Bytes, not FLOPs, bound it: 2 d sizeof(act) bytes per active neuron (16 KiB at d = 4096, fp16),
// about 8 MB per OPT-6.7B layer at 3% activity, against 134 MB of attention weights per layer.
//
// fc1: one warp per entry (the same per-row loop as the resident GEMV, see ffn_math.cuh; all 16 of a
// lane's loads of a 4096-wide fp16 row in flight at once), a grid-stride loop over the list so the
// launch does not depend on the count the GPU decided.
// fc2, two launches. First one warp per (lane class c, tile of 32 cw outputs): lane l owns the
// tile's 16-byte piece l and walks class c of the list in order (offload_kernels.hpp), so each
// entry's fc2 column is read 512 contiguous bytes per warp (an earlier kernel had each lane walk
// its own class over a 32-byte piece: random 32-byte reads, about 0.2 TB/s on the H200); the
// column loads of kAhead entries are in flight together with the next entries' ids. The sums
// are the GEMV's lane c exactly (a chunk's partial sum added to the accumulator when the chunk
// changes, as dot16 + `acc +=` does) and go to partial[o][c]. Then one warp per output adds the 32
// class sums by the GEMV's butterfly, and the epilogue (b2, the residual, the extra share) follows.
#include "kernels/cuda/check.hpp"
#include "offload/cuda/ffn_math.cuh"
#include "offload/cuda/offload_kernels.hpp"

namespace sf::offload::cuda {
namespace {

constexpr int kWarps = 8;     // fc1's block
constexpr int kFc2Warps = 4;  // fc2's class-sum block: 512 warps (d = 4096, fp16) over 128 blocks

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) sparse_fc1_kernel(SparseFfnArgs a, ActiveList list) {
  const int lane = threadIdx.x % 32;
  const int kv = int(a.d) / kChunk<T>;
  const auto* x = static_cast<const uint4*>(a.x);
  if (a.x_save && blockIdx.x == 0)
    for (int i = threadIdx.x; i < kv; i += blockDim.x) static_cast<uint4*>(a.x_save)[i] = x[i];
  const int n = list.head[kHeadCount];
  const int warps = gridDim.x * kWarps;
  for (int p = blockIdx.x * kWarps + threadIdx.x / 32; p < n; p += warps) {
    const int j = list.ids[p];
    const int s = list.slot[p];
    T* h = static_cast<T*>(list.h);
    if (s < 0 && a.skip_backing) {
      if (lane == 0) h[p] = from_float<T>(0.0f);
      continue;
    }
    const float bias = a.b1[j];
    const uint8_t* bundle = s >= 0 ? a.pool.base + uint64_t(s) * a.pool.stride : a.backing.base + uint64_t(j) * a.backing.stride;
    float v = warp_row_dot<T, 16>(reinterpret_cast<const uint4*>(bundle), x, kv, lane);
    // epilogue.cuh's order: bias, then ReLU (fmaxf), then the rounding to act.
    v += bias;
    v = fmaxf(v, 0.0f);
    if (lane == 0) h[p] = from_float<T>(v);
  }
}

// One list entry as fc2 needs it: h (0 when the entry is past the lane's range or did not fire),
// the neuron and its slot.
struct Fc2Entry {
  float h;
  int j, slot;
};

// The entries p0 .. p0 + N - 1 of a lane's range [.., hi).
template <typename T, int N>
__device__ __forceinline__ void load_entries(const ActiveList& list, int p0, int hi, Fc2Entry (&e)[N]) {
  const T* h = static_cast<const T*>(list.h);
#pragma unroll
  for (int q = 0; q < N; ++q) {
    const int p = p0 + q;
    e[q] = p < hi ? Fc2Entry{to_float(h[p]), list.ids[p], list.slot[p]} : Fc2Entry{0.0f, 0, -1};
  }
}

// Phase 1 of fc2: the sums of lane class c for the cw outputs of lane l's piece, to partial[o][c].
template <typename T>
__global__ void __launch_bounds__(kFc2Warps * 32) sparse_fc2_class_kernel(SparseFfnArgs a, ActiveList list) {
  constexpr int cw = kChunk<T>;
  constexpr int kAhead = 16;  // entries whose column loads are in flight together
  const int lane = threadIdx.x % 32;
  const int tiles = int((a.d + 32 * cw - 1) / (32 * cw));
  const int warp = blockIdx.x * kFc2Warps + threadIdx.x / 32;
  const int c = warp / tiles, tile = warp % tiles;  // a class's tiles side by side: one column, nearby reads
  if (c >= 32) return;
  const int64_t o0 = (int64_t(tile) * 32 + lane) * cw;
  const bool mine = o0 < a.d;  // d is a multiple of cw
  const int lo = list.head[kHeadClass + c], hi = list.head[kHeadClass + c + 1];
  const uint64_t col = a.pool.fc2_offset + uint64_t(o0) * sizeof(T);  // same offset in every slot
  const uint64_t col_b = a.backing.fc2_offset + uint64_t(o0) * sizeof(T);
  float acc[cw], s[cw];
#pragma unroll
  for (int x = 0; x < cw; ++x) acc[x] = s[x] = 0.0f;
  int cur = -1;  // the chunk whose partial sum is in s
  Fc2Entry e[kAhead];
  load_entries<T>(list, lo, hi, e);
  for (int p0 = lo; p0 < hi; p0 += kAhead) {
    uint4 w[kAhead];
#pragma unroll
    for (int q = 0; q < kAhead; ++q) {
      w[q] = make_uint4(0, 0, 0, 0);
      if (mine && e[q].h != 0.0f)
        w[q] = ld_stream(e[q].slot >= 0 ? a.pool.base + uint64_t(e[q].slot) * a.pool.stride + col
                                        : a.backing.base + uint64_t(e[q].j) * a.backing.stride + col_b);
    }
    Fc2Entry next[kAhead];
    load_entries<T>(list, p0 + kAhead, hi, next);
#pragma unroll
    for (int q = 0; q < kAhead; ++q) {
      if (e[q].h == 0.0f) continue;  // the GEMV adds fma(w, 0, s) = s here: skipping is exact
      const int chunk = e[q].j / cw;
      if (chunk != cur) {
        if (cur >= 0)
#pragma unroll
          for (int x = 0; x < cw; ++x) acc[x] += s[x];
#pragma unroll
        for (int x = 0; x < cw; ++x) s[x] = 0.0f;
        cur = chunk;
      }
#pragma unroll
      for (int x = 0; x < cw; ++x) s[x] = fmaf(chunk_elem<T>(w[q], x), e[q].h, s[x]);
    }
#pragma unroll
    for (int q = 0; q < kAhead; ++q) e[q] = next[q];
  }
  if (cur >= 0)
#pragma unroll
    for (int x = 0; x < cw; ++x) acc[x] += s[x];
  if (mine)
#pragma unroll
    for (int x = 0; x < cw; ++x) a.fc2_partial[(o0 + x) * 32 + c] = acc[x];
}

// Phase 2 of fc2: kOut outputs per warp, lane c holding class c's sum; the butterfly leaves the
// same total in every lane, and lane k writes output k of the warp's group.
constexpr int kCombineWarps = 8, kCombineOut = 4;
__global__ void __launch_bounds__(kCombineWarps * 32) sparse_fc2_combine_kernel(SparseFfnArgs a) {
  const int lane = threadIdx.x % 32;
  const int64_t o0 = (int64_t(blockIdx.x) * kCombineWarps + threadIdx.x / 32) * kCombineOut;
  float v[kCombineOut];
#pragma unroll
  for (int k = 0; k < kCombineOut; ++k) v[k] = o0 + k < a.d ? a.fc2_partial[(o0 + k) * 32 + lane] : 0.0f;
#pragma unroll
  for (int k = 0; k < kCombineOut; ++k) v[k] = warp_sum(v[k]);
  float r = v[0];
#pragma unroll
  for (int k = 1; k < kCombineOut; ++k)
    if (lane == k) r = v[k];
  const int64_t i = o0 + lane;
  if (lane < kCombineOut && i < a.d) {
    r += a.b2[i];
    r += a.residual[i];
    if (a.extra) r += a.extra[i];
    a.y[i] = r;
  }
}

template <typename T>
void fc2_launch(const SparseFfnArgs& a, ActiveList list, cudaStream_t stream) {
  if (!a.fc2_partial)
    sf::cuda::detail::throw_status(1 /* InvalidArgument */, "launch_sparse_fc2: SparseFfnArgs::fc2_partial is null (it needs "
                         "fc2_partial_floats(d) floats of device memory)");
  constexpr int cw = kChunk<T>;
  const int64_t warps = 32 * ((a.d + 32 * cw - 1) / (32 * cw));
  sparse_fc2_class_kernel<T><<<unsigned((warps + kFc2Warps - 1) / kFc2Warps), kFc2Warps * 32, 0, stream>>>(a, list);
  SF_CUDA_CHECK_LAUNCH();
  const int64_t per_block = int64_t(kCombineWarps) * kCombineOut;
  sparse_fc2_combine_kernel<<<unsigned((a.d + per_block - 1) / per_block), kCombineWarps * 32, 0, stream>>>(a);
  SF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_sparse_fc1(const SparseFfnArgs& a, ActiveList list, int grid, cudaStream_t stream) {
  // 4 blocks per SM: 32 warps resident per SM, enough entries in flight for ~500 active neurons.
  if (grid <= 0) grid = 4 * sf::cuda::sm_count();
  grid = int(std::min<int64_t>(grid, (a.ffn + kWarps - 1) / kWarps));
  if (a.act == 1) sparse_fc1_kernel<__half><<<grid, kWarps * 32, 0, stream>>>(a, list);
  else if (a.act == 2) sparse_fc1_kernel<__nv_bfloat16><<<grid, kWarps * 32, 0, stream>>>(a, list);
  else sparse_fc1_kernel<float><<<grid, kWarps * 32, 0, stream>>>(a, list);
  SF_CUDA_CHECK_LAUNCH();
}

void launch_sparse_fc2(const SparseFfnArgs& a, ActiveList list, cudaStream_t stream) {
  if (a.act == 1) fc2_launch<__half>(a, list, stream);
  else if (a.act == 2) fc2_launch<__nv_bfloat16>(a, list, stream);
  else fc2_launch<float>(a, list, stream);
}

}  // namespace sf::offload::cuda
