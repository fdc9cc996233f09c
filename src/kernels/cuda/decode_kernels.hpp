// Launchers of the kernels behind SparseGemm (host side; the kernels live in the .cu files).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dtype.hpp"
#include "kernels/cuda/epilogue.cuh"

namespace sf::cuda {

struct DecodeLaunch {
  const void* values = nullptr;  // DeviceWeight24::values
  const void* meta = nullptr;    // DeviceWeight24::meta
  const void* x = nullptr;       // [m, k]
  int m = 0, n = 0, k = 0;
  int k_tiles = 0, k_quads = 0;
  int row_blocks = 0;
  int splits = 1, quads_per_split = 0;
  EpilogueParams ep;
  float* partials = nullptr;  // [token_chunks * row_blocks * splits * mt * 8 * 16] when splits > 1
  int* counters = nullptr;    // [token_chunks * row_blocks], zero on entry, zero on exit
};

// mt: 8-token n-tiles per block (1, 2, 4 or 8); tokens beyond 8 * mt go to more blocks (grid.z).
// warps: 4 or 8 (shared_x: row warps). kgroups (shared_x only): 1, 2 or 4 k-groups of warps per
// block, at most 8 / mt. shared_x: the variant that stages x in shared memory once per block (needs
// k % 8 == 0 and x 16-byte aligned). Throws Error(Internal) for a combination not instantiated.
void launch_decode(DecodeLaunch p, DType dtype, int mt, int warps, int kgroups, bool shared_x, cudaStream_t stream);
inline constexpr int kDecodeMaxMt = 8;

// The instantiated configurations (STYLE.md: only what the table and the tuner use). Every row
// won at least one (shape, M) of the H200 tuning run of 2026-11-22 (bench/results/
// 2026-11-22-NVIDIA-H200-gemm.md); the others it measured never won and are not built, which keeps
// decode.cu's compile time (192 kernels over 4 architectures before) within what CI can afford.
struct DecodeConfig {
  int mt, warps, kgroups;
  bool shared_x;
};
inline constexpr DecodeConfig kDecodeConfigs[] = {
    {1, 4, 1, false}, {1, 8, 1, false},                   // M <= 8, one 16-row block per block
    {1, 4, 2, true},  {1, 4, 4, true},                    // M <= 8, x shared by 4 row warps
    {2, 4, 4, true},  {2, 8, 2, true},                    // M <= 16
    {4, 8, 2, true},                                      // M <= 32
    {8, 4, 1, true},                                      // M <= 64
};
inline constexpr bool decode_instantiated(int mt, int warps, int kgroups, bool shared_x) {
  for (const auto& c : kDecodeConfigs)
    if (c.mt == mt && c.warps == warps && c.shared_x == shared_x && (!shared_x || c.kgroups == kgroups)) return true;
  return false;
}
// The largest k-group count instantiated for this mt (the double-buffered x must fit shared memory).
inline int decode_max_kgroups(int mt) { return mt <= 2 ? 4 : mt == 4 ? 2 : 1; }
// Partial-sum floats launch_decode needs for this launch.
// (Row blocks rounded up to 8: the shared-x variant gives each block 4 or 8 of them.)
inline size_t decode_partial_floats(int m, int row_blocks, int splits, int mt) {
  const int chunks = (m + 8 * mt - 1) / (8 * mt);
  return splits > 1 ? size_t(chunks) * size_t((row_blocks + 7) / 8 * 8) * splits * mt * 8 * 16 : 0;
}
inline size_t decode_counter_count(int m, int row_blocks, int mt) {
  return size_t((m + 8 * mt - 1) / (8 * mt)) * row_blocks;
}

// Dense [n, k] row-major copy of W (for the dense fallback and the tests).
void launch_decompress(const void* values, const void* meta, int64_t n, int64_t k, int64_t k_tiles,
                       void* dense, cudaStream_t stream);
// y = epilogue(acc) elementwise, acc [m, n] fp32 (ep.gated: y [m, n / 2] from the row pairs).
void launch_epilogue(const float* acc, int64_t m, int64_t n, const EpilogueParams& ep, cudaStream_t stream);
// The same over acc in acc_dt (0 fp32, 1 fp16, 2 bf16): the gated epilogue after a library product
// (cuBLASLt, cuSPARSELt) that wrote the fused gate/up output [m, n] to a workspace, since neither
// library has an epilogue that combines two output columns.
void launch_epilogue(const void* acc, int acc_dt, int64_t m, int64_t n, const EpilogueParams& ep,
                     cudaStream_t stream);

}  // namespace sf::cuda
