// The sparse FFN over an active list: fc1 for the listed neurons, then fc2 summed over those with a
// non-zero output, reading each neuron's bundle from its cache slot (or from the backing source).
//
// Bytes, not FLOPs, bound it: 2 d sizeof(act) bytes per active neuron (16 KiB at d = 4096, fp16),
// about 8 MB per OPT-6.7B layer at 3% activity, against 134 MB of attention weights per layer.
//
// fc1: one warp per entry (the same per-row loop as the resident GEMV, see ffn_math.cuh), a
// grid-stride loop over the list so the launch does not depend on the count the GPU decided.
// fc2: one warp per tile of kTile outputs; lane L walks lane class L of the list in order (see
// offload_kernels.hpp), loading kVec 16-byte pieces of each fc2 column, eight entries in flight and
// the next eight entries' ids read meanwhile;
// a chunk's partial sum is added to the lane's accumulator when the chunk changes, exactly as the
// GEMV's dot16 + `acc +=` does; the butterfly and the epilogue (b2, then the residual) follow.
#include "kernels/cuda/check.hpp"
#include "offload/cuda/ffn_math.cuh"
#include "offload/cuda/offload_kernels.hpp"

namespace sf::offload::cuda {
namespace {

constexpr int kWarps = 8;     // fc1's block
constexpr int kFc2Warps = 2;  // fc2's block: its 256 tiles (d = 4096, fp16) spread over 128 SMs, not 32

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
    float v = warp_row_dot<T>(reinterpret_cast<const uint4*>(bundle), x, kv, lane);
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

// kVec 16-byte pieces per lane and entry: a tile of kVec * cw outputs per warp. A lane's entries go
// in groups of kAhead, software-pipelined: the next group's (h, id, slot) loads are issued with this
// group's column loads, so each group costs one memory round trip, not two. The order of the sums
// is the lane's list order either way.
template <typename T, int kVec>
__global__ void __launch_bounds__(kFc2Warps * 32) sparse_fc2_kernel(SparseFfnArgs a, ActiveList list) {
  constexpr int cw = kChunk<T>;
  constexpr int kTile = kVec * cw;
  constexpr int kAhead = 8;  // entries whose column loads are in flight together
  const int lane = threadIdx.x % 32;
  const int tile = blockIdx.x * kFc2Warps + threadIdx.x / 32;
  if (tile * kTile >= a.d) return;
  const int lo = list.head[kHeadClass + lane], hi = list.head[kHeadClass + lane + 1];
  const uint64_t col = a.pool.fc2_offset + uint64_t(tile) * kTile * sizeof(T);  // same offset in every source
  const uint64_t col_b = a.backing.fc2_offset + uint64_t(tile) * kTile * sizeof(T);
  float acc[kTile], s[kTile];
#pragma unroll
  for (int o = 0; o < kTile; ++o) acc[o] = s[o] = 0.0f;
  int cur = -1;  // the chunk whose partial sum is in s
  Fc2Entry e[kAhead];
  load_entries<T>(list, lo, hi, e);
  for (int p0 = lo; p0 < hi; p0 += kAhead) {
    uint4 w[kAhead][kVec];
#pragma unroll
    for (int q = 0; q < kAhead; ++q) {
      if (e[q].h != 0.0f) {
        const uint8_t* c = e[q].slot >= 0 ? a.pool.base + uint64_t(e[q].slot) * a.pool.stride + col
                                          : a.backing.base + uint64_t(e[q].j) * a.backing.stride + col_b;
#pragma unroll
        for (int v = 0; v < kVec; ++v) w[q][v] = ld_stream(c + 16 * v);
      } else {
#pragma unroll
        for (int v = 0; v < kVec; ++v) w[q][v] = make_uint4(0, 0, 0, 0);
      }
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
          for (int o = 0; o < kTile; ++o) acc[o] += s[o];
#pragma unroll
        for (int o = 0; o < kTile; ++o) s[o] = 0.0f;
        cur = chunk;
      }
#pragma unroll
      for (int v = 0; v < kVec; ++v)
#pragma unroll
        for (int x = 0; x < cw; ++x) s[v * cw + x] = fmaf(chunk_elem<T>(w[q][v], x), e[q].h, s[v * cw + x]);
    }
#pragma unroll
    for (int q = 0; q < kAhead; ++q) e[q] = next[q];
  }
  if (cur >= 0)
#pragma unroll
    for (int o = 0; o < kTile; ++o) acc[o] += s[o];
#pragma unroll
  for (int o = 0; o < kTile; ++o) {
    float v = warp_sum(acc[o]);
    if (lane == o % 32) {
      const int i = tile * kTile + o;
      v += a.b2[i];
      v += a.residual[i];
      if (a.extra) v += a.extra[i];
      a.y[i] = v;
    }
  }
}

template <typename T>
void fc2_launch(const SparseFfnArgs& a, ActiveList list, cudaStream_t stream) {
  constexpr int cw = kChunk<T>;
  // Two pieces per lane (32-byte sectors) when d allows, else one.
  if (a.d % (2 * cw) == 0) {
    const int tiles = int(a.d / (2 * cw));
    sparse_fc2_kernel<T, 2><<<(tiles + kFc2Warps - 1) / kFc2Warps, kFc2Warps * 32, 0, stream>>>(a, list);
  } else {
    const int tiles = int(a.d / cw);
    sparse_fc2_kernel<T, 1><<<(tiles + kFc2Warps - 1) / kFc2Warps, kFc2Warps * 32, 0, stream>>>(a, list);
  }
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
