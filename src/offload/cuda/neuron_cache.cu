// The neuron cache on the GPU: the per-layer lookup (active list, hits, misses, exact-LRU victims,
// map updates) in one block, and the fetch of missing bundles by a kernel reading mapped pinned
// host memory. No host round trip: a decode step with fetches is one CUDA graph.
//
// Lookup, one block of 1024 threads (32 warps) per layer and token:
//   1. active list in lane-class order (offload_kernels.hpp): warp w builds class w from the flags,
//      counting then writing, with warp scans (chunks of class w: w, w + 32, ...).
//   2. hits refresh their stamp; misses are compacted in list order (block scan).
//   3. victims: the evictable slots (LRU region, stamp != this step) with the m smallest keys
//      (stamp << bits(slot) | slot), found by an MSB-first radix select on 8-bit digits over the
//      key's used bits (4 passes at OPT-6.7B sizes); keys are unique, so exactly m slots have
//      key <= the m-th key. Victims are compacted in slot order and paired with misses in order.
//   4. map updates and the fetch list. Everything is a pure function of the state and the flags.
// host_lru.cpp is the same policy on the host, the reference the GPU tests compare against.
#include <cub/block/block_scan.cuh>

#include <algorithm>

#include "kernels/cuda/check.hpp"
#include "offload/cuda/offload_kernels.hpp"

namespace sf::offload::cuda {
namespace {

constexpr int kLookupThreads = 1024;
using BlockScan = cub::BlockScan<int, kLookupThreads>;

__device__ __forceinline__ int warp_inclusive_scan(int v, int lane) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += n;
  }
  return v;
}

__device__ __forceinline__ int bit_width(uint64_t v) { return v == 0 ? 0 : 64 - __clzll((long long)v); }

// The flags of chunk ch as a bit mask (bit e: flag ch * chunk + e is set), read as one 8- or 4-byte
// load when the chunk is 8 or 4 flags and the flags are aligned to it (every engine buffer), else
// byte by byte.
__device__ __forceinline__ unsigned chunk_mask(const uint8_t* flags, int ch, int chunk, bool wide) {
  unsigned m = 0;
  if (wide && chunk == 8) {
    const uint64_t v = *reinterpret_cast<const uint64_t*>(flags + int64_t(ch) * 8);
#pragma unroll
    for (int e = 0; e < 8; ++e) m |= ((v >> (8 * e)) & 0xffu) ? 1u << e : 0u;
  } else if (wide && chunk == 4) {
    const uint32_t v = *reinterpret_cast<const uint32_t*>(flags + int64_t(ch) * 4);
#pragma unroll
    for (int e = 0; e < 4; ++e) m |= ((v >> (8 * e)) & 0xffu) ? 1u << e : 0u;
  } else {
    for (int e = 0; e < chunk; ++e) m |= flags[int64_t(ch) * chunk + e] ? 1u << e : 0u;
  }
  return m;
}

struct LookupArgs {
  const uint8_t* flags;
  int ffn, chunk;
  CacheView cache;
  ActiveList list;
  FetchList fetch;
  uint32_t* step;
  bool allocate;
  int32_t* miss;    // [ffn] scratch: list positions of the misses
  int32_t* victim;  // [slots] scratch
  unsigned long long* stats;
};

__global__ void __launch_bounds__(kLookupThreads) lookup_kernel(LookupArgs a) {
  __shared__ int cls_count[32];
  __shared__ int cls_start[33];
  __shared__ unsigned hist[256];
  __shared__ typename BlockScan::TempStorage scan;
  __shared__ int s_total, s_digit, s_need;
  __shared__ unsigned long long s_maxkey;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int nchunks = a.ffn / a.chunk;
  const uint32_t now = *a.step + 1;
  CacheView& c = a.cache;

  // 1. The active list, class `warp` by this warp.
  const bool wide = (a.chunk == 8 || a.chunk == 4) && reinterpret_cast<uintptr_t>(a.flags) % a.chunk == 0;
  int count = 0;
  for (int g = warp; g < nchunks; g += 32 * 32) {
    const int ch = g + 32 * lane;
    const int k = ch < nchunks ? __popc(chunk_mask(a.flags, ch, a.chunk, wide)) : 0;
    count += __shfl_sync(0xffffffffu, warp_inclusive_scan(k, lane), 31);
  }
  if (lane == 0) cls_count[warp] = count;
  __syncthreads();
  if (tid == 0) {
    int s = 0;
    for (int w = 0; w < 32; ++w) {
      cls_start[w] = s;
      s += cls_count[w];
    }
    cls_start[32] = s;
    s_total = s;
  }
  __syncthreads();
  int out = cls_start[warp];
  for (int g = warp; g < nchunks; g += 32 * 32) {
    const int ch = g + 32 * lane;
    const unsigned mask = ch < nchunks ? chunk_mask(a.flags, ch, a.chunk, wide) : 0u;
    const int k = __popc(mask);
    const int incl = warp_inclusive_scan(k, lane);
    int pos = out + incl - k;
    for (int e = 0; e < a.chunk; ++e)
      if (mask >> e & 1u) a.list.ids[pos++] = ch * a.chunk + e;
    out += __shfl_sync(0xffffffffu, incl, 31);
  }
  __syncthreads();  // ids visible to the block
  const int n = s_total;

  // 2. Hits and misses; each thread a contiguous range of entries, so misses stay in list order.
  const int per = (n + kLookupThreads - 1) / kLookupThreads;
  const int lo = min(n, tid * per), hi = min(n, lo + per);
  int misses = 0;
  for (int p = lo; p < hi; ++p) {
    const int s = c.slot_of[a.list.ids[p]];
    if (s >= 0) {
      a.list.slot[p] = s;
      if (s >= c.pinned) c.stamp[s] = now;
    } else {
      ++misses;
    }
  }
  int miss_off = 0, total_misses = 0;
  BlockScan(scan).ExclusiveSum(misses, miss_off, total_misses);
  for (int p = lo; p < hi; ++p)
    if (c.slot_of[a.list.ids[p]] < 0) a.miss[miss_off++] = p;
  __syncthreads();  // stamps of hits and the miss list visible

  // 3. Victims among the LRU slots.
  const int lru = c.slots - c.pinned;
  int m = 0;
  if (a.allocate && total_misses > 0 && lru > 0) {
    const int sb = bit_width(uint64_t(lru - 1));
    const int sper = (lru + kLookupThreads - 1) / kLookupThreads;
    const int slo = min(lru, tid * sper), shi = min(lru, slo + sper);
    int evictable = 0;
    for (int r = slo; r < shi; ++r) evictable += c.stamp[c.pinned + r] != now;
    int ev_off = 0, ev_total = 0;
    BlockScan(scan).ExclusiveSum(evictable, ev_off, ev_total);
    __syncthreads();
    m = min(total_misses, ev_total);
    unsigned long long kth = ~0ull;  // every evictable key is <= this when m == ev_total
    if (m > 0 && m < ev_total) {
      if (tid == 0) {
        s_maxkey = (uint64_t(now) << sb) | uint64_t(lru - 1);
        s_need = m;
      }
      __syncthreads();
      const int bits = bit_width(s_maxkey);
      unsigned long long prefix = 0;
      for (int shift = ((bits - 1) / 8) * 8; shift >= 0; shift -= 8) {
        for (int b = tid; b < 256; b += kLookupThreads) hist[b] = 0;
        __syncthreads();
        const unsigned long long himask = shift + 8 >= 64 ? 0ull : ~((1ull << (shift + 8)) - 1);
        for (int r = slo; r < shi; ++r) {
          const uint32_t st = c.stamp[c.pinned + r];
          if (st == now) continue;
          const unsigned long long key = (uint64_t(st) << sb) | uint64_t(r);
          if ((key & himask) == (prefix & himask)) atomicAdd(&hist[(key >> shift) & 255], 1u);
        }
        __syncthreads();
        if (tid == 0) {
          int cum = 0, d = 255;
          for (int b = 0; b < 256; ++b) {
            if (cum + int(hist[b]) >= s_need) {
              d = b;
              break;
            }
            cum += int(hist[b]);
          }
          s_digit = d;
          s_need -= cum;
        }
        __syncthreads();
        prefix |= (unsigned long long)s_digit << shift;
        __syncthreads();  // s_digit is rewritten by the next pass
      }
      kth = prefix;
    }
    // Victims in slot order.
    int mine = 0;
    for (int r = slo; r < shi; ++r) {
      const uint32_t st = c.stamp[c.pinned + r];
      mine += st != now && ((uint64_t(st) << sb) | uint64_t(r)) <= kth;
    }
    int v_off = 0, v_total = 0;
    BlockScan(scan).ExclusiveSum(mine, v_off, v_total);
    for (int r = slo; r < shi; ++r) {
      const uint32_t st = c.stamp[c.pinned + r];
      if (st != now && ((uint64_t(st) << sb) | uint64_t(r)) <= kth) a.victim[v_off++] = c.pinned + r;
    }
    __syncthreads();  // victim list complete; every stamp read done before they change
    // 4. Reassign: a victim's old neuron is not in this step's list (its stamp would be `now`), so no
    // two threads touch the same slot_of entry.
    for (int k = tid; k < m; k += kLookupThreads) {
      const int p = a.miss[k];
      const int j = a.list.ids[p];
      const int v = a.victim[k];
      const int old = c.owner[v];
      if (old >= 0) c.slot_of[old] = -1;
      c.owner[v] = j;
      c.slot_of[j] = v;
      c.stamp[v] = now;
      a.list.slot[p] = v;
      a.fetch.ids[k] = j;
      a.fetch.slots[k] = v;
    }
  }
  for (int k = m + tid; k < total_misses; k += kLookupThreads) a.list.slot[a.miss[k]] = -1;
  if (tid == 0) {
    for (int w = 0; w <= 32; ++w) a.list.head[kHeadClass + w] = cls_start[w];
    a.list.head[kHeadCount] = n;
    a.list.head[kHeadMisses] = total_misses;
    a.list.head[kHeadFetch] = m;
    a.list.head[kHeadOverflow] = total_misses - m;
    *a.step = now;
    if (a.stats) {
      a.stats[kStatRows] += 1;
      a.stats[kStatActive] += (unsigned long long)n;
      a.stats[kStatHits] += (unsigned long long)(n - total_misses);
      a.stats[kStatFetched] += (unsigned long long)m;
      a.stats[kStatOverflow] += (unsigned long long)(total_misses - m);
    }
  }
}

// One warp per 4 KiB piece of a bundle: 8 loads of 16 bytes in flight per lane (PCIe round trips
// are ~1-2 us; ~1000 warps x 4 KiB keeps several MB in flight).
constexpr int kPiece = 4096;
constexpr int kPieceVecs = kPiece / 16;
constexpr int kFetchWarps = 8;

__device__ __forceinline__ void copy_piece(const uint4* __restrict__ src, uint4* __restrict__ dst, int vecs, int lane) {
  uint4 v[kPieceVecs / 32];
#pragma unroll
  for (int u = 0; u < kPieceVecs / 32; ++u) {
    const int i = lane + 32 * u;
    if (i < vecs) v[u] = __ldg(src + i);
  }
#pragma unroll
  for (int u = 0; u < kPieceVecs / 32; ++u) {
    const int i = lane + 32 * u;
    if (i < vecs) dst[i] = v[u];
  }
}

__global__ void __launch_bounds__(kFetchWarps * 32) fetch_kernel(const uint8_t* src, uint64_t src_stride,
                                                                 bool staged, CacheView cache, uint64_t pool_stride,
                                                                 uint64_t bytes, FetchList fetch, const int32_t* head) {
  const int m = head[kHeadFetch];
  const int pieces = int((bytes + kPiece - 1) / kPiece);
  const int lane = threadIdx.x % 32;
  const int64_t items = int64_t(m) * pieces;
  for (int64_t w = int64_t(blockIdx.x) * kFetchWarps + threadIdx.x / 32; w < items; w += int64_t(gridDim.x) * kFetchWarps) {
    const int k = int(w / pieces), piece = int(w % pieces);
    const int64_t from = staged ? k : fetch.ids[k];
    const uint64_t off = uint64_t(piece) * kPiece;
    const int vecs = int((bytes - off < uint64_t(kPiece) ? bytes - off : uint64_t(kPiece)) / 16);
    copy_piece(reinterpret_cast<const uint4*>(src + uint64_t(from) * src_stride + off),
               reinterpret_cast<uint4*>(cache.pool + uint64_t(fetch.slots[k]) * pool_stride + off), vecs, lane);
  }
}

__global__ void __launch_bounds__(kFetchWarps * 32) copy_kernel(const uint4* src, uint4* dst, uint64_t vecs) {
  const int lane = threadIdx.x % 32;
  const uint64_t pieces = (vecs + kPieceVecs - 1) / kPieceVecs;
  for (uint64_t w = uint64_t(blockIdx.x) * kFetchWarps + threadIdx.x / 32; w < pieces; w += uint64_t(gridDim.x) * kFetchWarps)
    copy_piece(src + w * kPieceVecs, dst + w * kPieceVecs, int(vecs - w * kPieceVecs < uint64_t(kPieceVecs) ? vecs - w * kPieceVecs : uint64_t(kPieceVecs)), lane);
}

int fetch_grid(int grid) {
  if (grid > 0) return grid;
  return 2 * sf::cuda::sm_count();  // 2 x 8 warps per SM: the loads in flight, not the SMs, are what PCIe needs
}

}  // namespace

size_t lookup_scratch_ints(int64_t ffn, int64_t slots) { return size_t(ffn + slots); }

void launch_lookup(const uint8_t* flags, int64_t ffn, int chunk, CacheView cache, ActiveList list, FetchList fetch,
                   uint32_t* step, bool allocate, int32_t* scratch, uint64_t* stats, cudaStream_t stream) {
  LookupArgs a;
  a.flags = flags;
  a.ffn = int(ffn);
  a.chunk = chunk;
  a.cache = cache;
  a.list = list;
  a.fetch = fetch;
  a.step = step;
  a.allocate = allocate;
  a.miss = scratch;
  a.victim = scratch + ffn;
  a.stats = reinterpret_cast<unsigned long long*>(stats);
  lookup_kernel<<<1, kLookupThreads, 0, stream>>>(a);
  SF_CUDA_CHECK_LAUNCH();
}

void launch_fetch(BundleSource backing, CacheView cache, uint64_t bundle_bytes, FetchList fetch, const int32_t* head,
                  int grid, cudaStream_t stream) {
  fetch_kernel<<<fetch_grid(grid), kFetchWarps * 32, 0, stream>>>(backing.base, backing.stride, false, cache,
                                                                   backing.stride, bundle_bytes, fetch, head);
  SF_CUDA_CHECK_LAUNCH();
}

void launch_fetch_staged(const uint8_t* staging, CacheView cache, uint64_t bundle_bytes, FetchList fetch,
                         const int32_t* head, int grid, cudaStream_t stream) {
  // Staged bundles are packed at the pool's stride (bundle_bytes rounded as the pool's).
  fetch_kernel<<<fetch_grid(grid), kFetchWarps * 32, 0, stream>>>(staging, bundle_bytes, true, cache, bundle_bytes,
                                                                   bundle_bytes, fetch, head);
  SF_CUDA_CHECK_LAUNCH();
}

void launch_copy_kernel(const void* src, void* dst, uint64_t bytes, int grid, cudaStream_t stream) {
  copy_kernel<<<fetch_grid(grid), kFetchWarps * 32, 0, stream>>>(static_cast<const uint4*>(src), static_cast<uint4*>(dst),
                                                                 bytes / 16);
  SF_CUDA_CHECK_LAUNCH();
}

}  // namespace sf::offload::cuda
