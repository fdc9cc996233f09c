// Launchers of the offloaded-FFN kernels (src/offload/cuda/*.cu): the activation predictor, the
// exact (oracle) active set, the GPU-side neuron cache (lookup + LRU victims + fetch), and the
// sparse FFN over cache slots. Host-side declarations only; every launcher checks its launch.
//
// Conventions:
//   - Neurons are *bundle positions* b in [0, ffn) of offload/neuron_store.hpp; a bundle is
//     [fc1 row d | fc2 column d | b1 | pad] at a fixed stride (a multiple of 128 bytes). Cache slots
//     hold whole bundles in the same layout, so a fetch is one contiguous copy per neuron.
//   - `act` is the element type code of the engine and the bundles (1 F16, 2 BF16, 0 F32).
//   - Counts that the GPU decides (active neurons, misses) stay on the GPU: kernels read them from
//     `ActiveList::head`, so one decode step needs no host round trip and is graph-capturable.
//   - Lane-class order. The resident engine's decode GEMV (kernels/cuda/model/gemv.cu) reduces a
//     row of K in 16-byte chunks of `cw` = 16 / sizeof(act) elements: lane L of a warp accumulates
//     chunks L, L + 32, L + 64, ... in ascending order, then the warp adds the 32 lane sums by a
//     butterfly. Active lists are therefore ordered by (class = (b / cw) % 32, then b): lane L of
//     the fc2 kernel walks class L in order, which reproduces the GEMV's summation exactly (adding
//     a zero product is exact), so an exact active set gives the resident result bit for bit.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace sf::offload::cuda {

// Where the bundles are: bundle (or slot) i starts at base + i * stride.
struct BundleSource {
  const uint8_t* base = nullptr;  // device pointer (device memory, or the device alias of mapped host memory)
  uint64_t stride = 0;            // bytes, a multiple of 16
  uint64_t fc2_offset = 0;        // bytes from a bundle's start to its fc2 column (fc1 row at 0)
};

// One layer's neuron cache on the GPU. Slots [0, pinned) hold hot neurons forever; slots
// [pinned, slots) are the LRU cache.
struct CacheView {
  uint8_t* pool = nullptr;     // [slots, stride] bundles
  int32_t* slot_of = nullptr;  // [ffn] bundle -> slot, -1: not on the GPU
  int32_t* owner = nullptr;    // [slots] slot -> bundle, -1: free
  uint32_t* stamp = nullptr;   // [slots] the layer's step of last use (0: never)
  int32_t pinned = 0, slots = 0;
};

// Layout of ActiveList::head (int32 words).
inline constexpr int kHeadCount = 0;       // entries in the list
inline constexpr int kHeadClass = 1;       // [33] start of each lane class, then the end
inline constexpr int kHeadMisses = 34;     // entries not on the GPU at lookup
inline constexpr int kHeadFetch = 35;      // of those, fetched into the cache (FetchList)
inline constexpr int kHeadOverflow = 36;   // misses read from the backing (no evictable slot left)
inline constexpr int kHeadInts = 40;

// A layer's active neurons in lane-class order (above).
struct ActiveList {
  int32_t* ids = nullptr;   // [ffn] bundle positions
  int32_t* slot = nullptr;  // [ffn] the entry's cache slot, or -1: read it from the backing source
  void* h = nullptr;        // [ffn] act: relu(x . fc1 + b1) per entry (the fc1 kernel's output)
  int32_t* head = nullptr;  // [kHeadInts]
};

// Misses the lookup assigned to slots: copy bundle ids[k] into slot slots[k], k < head[kHeadFetch].
struct FetchList {
  int32_t* ids = nullptr;    // [ffn]
  int32_t* slots = nullptr;  // [ffn]
};

// Per-layer cumulative counters (uint64), added by the kernels, read by --stats.
enum Stat : int {
  kStatRows = 0,      // lookups (tokens)
  kStatActive,        // entries in the active lists
  kStatHits,          // entries found on the GPU
  kStatFetched,       // bundles copied into the cache
  kStatOverflow,      // bundles read from the backing directly (cache too small for the step)
  kStatExactRows,     // rows checked against the exact active set
  kStatExactActive,   // neurons truly active over those rows
  kStatTruePos,       // predicted and active
  kStatFalsePos,      // predicted, not active
  kStatCount
};

// ---- predictor.cu ------------------------------------------------------------------------------
// The low-rank predictor of neuron_store.hpp: score = (a U) V, flag[b] = score[b] > threshold[b].
// a [d] act; U [d, rank] act; V [rank, ffn] act; threshold [ffn] fp32; flags [ffn] uint8.
// `scratch` needs predictor_scratch_floats(d, rank, ffn) floats, zero-filled once after allocation
// (it starts with stage 2's counters, which every launch leaves at zero again).
size_t predictor_scratch_floats(int64_t d, int64_t rank, int64_t ffn);
// Stage 1 (reads `a`, so it must run before `a` is overwritten): partial sums of t = a U.
void launch_predictor_t(const void* a, const void* u, int64_t d, int64_t rank, int64_t ffn, float* scratch, int act,
                        cudaStream_t stream);
// Stage 2: score = t V (t from stage 1's scratch), flags (one launch).
void launch_predictor_flags(const void* v, const float* threshold, int64_t d, int64_t rank, int64_t ffn,
                            float* scratch, uint8_t* flags, int act, cudaStream_t stream);

// ---- exact.cu ----------------------------------------------------------------------------------
// The oracle active set for `rows` rows of x [rows, d] (act; rows <= 8): flags[r * ffn + b] = 1 iff
// act(relu(x_r . fc1_b + b1_b)) != 0, computed exactly as the fc1 kernel does (so every neuron the
// FFN would give a non-zero output is flagged). fc1 rows are read from the slot when cached, else
// from `backing` (mapped host memory: slow, for tests and --stats only).
void launch_exact_flags(const void* x, int64_t rows, int64_t d, int64_t ffn, const float* b1, CacheView cache,
                        BundleSource backing, uint8_t* flags, int act, cudaStream_t stream);
// stats[kStatExactRows..kStatFalsePos] += comparison of predicted flags with exact flags [ffn].
void launch_count_recall(const uint8_t* predicted, const uint8_t* exact, int64_t ffn, uint64_t* stats,
                         cudaStream_t stream);

// ---- neuron_cache.cu ---------------------------------------------------------------------------
// One block: builds the lane-class active list from flags [ffn]; marks hits (stamp = ++step);
// with `allocate`, assigns the misses to free or least-recently-used slots (exact LRU by stamp,
// ties to the lower slot; never a slot used by this step; never a pinned slot), updates slot_of /
// owner / stamp and writes the FetchList; misses beyond the evictable slots (and every miss
// without `allocate`) get slot -1. `step` is the layer's device step counter, `scratch` needs
// lookup_scratch_ints(ffn, slots) int32s. Adds to stats (may be null).
size_t lookup_scratch_ints(int64_t ffn, int64_t slots);
void launch_lookup(const uint8_t* flags, int64_t ffn, int chunk, CacheView cache, ActiveList list, FetchList fetch,
                   uint32_t* step, bool allocate, int32_t* scratch, uint64_t* stats, cudaStream_t stream);
// Copies the FetchList's bundles from `backing` into their slots (`bundle_bytes` each, a multiple
// of 16) with 16-byte loads, many bundles in flight: reads mapped host memory directly, so the copy
// is a kernel node in the decode graph. `grid` blocks (0: a default for the device).
void launch_fetch(BundleSource backing, CacheView cache, uint64_t bundle_bytes, FetchList fetch,
                  const int32_t* head, int grid, cudaStream_t stream);
// Same, but source bundle k of the list is staging + k * stride (gathered there by the host).
void launch_fetch_staged(const uint8_t* staging, CacheView cache, uint64_t bundle_bytes, FetchList fetch,
                         const int32_t* head, int grid, cudaStream_t stream);
// A plain copy of `bytes` (multiple of 16) from mapped host memory by a kernel: the probe that
// compares zero-copy reads with the DMA engine (cudaMemcpyAsync).
void launch_copy_kernel(const void* src, void* dst, uint64_t bytes, int grid, cudaStream_t stream);

// ---- sparse_ffn.cu -----------------------------------------------------------------------------
struct SparseFfnArgs {
  const void* x = nullptr;       // [d] act: the FFN input (LN2 output)
  int64_t d = 0, ffn = 0;
  const float* b1 = nullptr;     // [ffn] fp32
  const float* b2 = nullptr;     // [d] fp32
  const float* residual = nullptr;  // [d] fp32
  float* y = nullptr;            // [d] fp32: residual + b2 + sum_j h_j fc2_j
  const float* extra = nullptr;  // [d] fp32 or null: added after the residual (the CPU's share)
  BundleSource pool;             // slot s of the list
  BundleSource backing;          // entries with slot -1 (mapped host memory or a whole-layer copy)
  bool skip_backing = false;     // entries with slot -1 are computed elsewhere (the CPU): h = 0
  void* x_save = nullptr;        // [d] act or null: a copy of x (for --stats' exact check)
  float* fc2_partial = nullptr;  // [fc2_partial_floats(d)] fp32 device scratch: fc2's per-lane-class sums
  int act = 1;
};
inline constexpr int64_t fc2_partial_floats(int64_t d) { return 32 * d; }
// h[p] = act(relu(x . fc1_{ids[p]} + b1)) for every entry of the list.
void launch_sparse_fc1(const SparseFfnArgs& a, ActiveList list, int grid, cudaStream_t stream);
// y = residual + b2 + sum over entries with h != 0 of h_p fc2_{ids[p]} (+ extra), in lane-class order
// (two launches through a.fc2_partial; launches sharing that scratch must be on one stream).
void launch_sparse_fc2(const SparseFfnArgs& a, ActiveList list, cudaStream_t stream);

}  // namespace sf::offload::cuda
