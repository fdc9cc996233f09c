// Launcher of the prefill-family 2:4 kernel behind SparseGemm (host side; the kernel is in prefill.cu).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "core/dtype.hpp"
#include "kernels/cuda/epilogue.cuh"

namespace sf::cuda {

struct PrefillLaunch {
  const void* values = nullptr;  // DeviceWeight24::values
  const void* meta = nullptr;    // DeviceWeight24::meta
  const void* x = nullptr;       // [m, k], rows 16-byte aligned (k % 8 == 0, x 16-byte aligned)
  int m = 0, n = 0, k = 0;
  int k_tiles = 0, k_quads = 0, row_blocks = 0;
  EpilogueParams ep;
};

// (tile_m, stages): tokens per block and cp.async ring depth, one of (128, 3), (64, 2).
// Throws Error(Internal) for a pair not instantiated.
void launch_prefill(const PrefillLaunch& p, DType dtype, int tile_m, int stages, cudaStream_t stream);
// Dynamic shared memory a launch asks for; the caller checks it against the device's per-block
// opt-in limit (sm_86/89 allow 99 KB: only (64, 2) fits there).
size_t prefill_smem_bytes(int tile_m, int stages);

// The Hopper kernel (prefill_sm90.cu: wgmma.sp fed by TMA, `rows` = 128 or 256 rows of W x 128
// tokens per block), same launch parameters and conditions. Available only where it was built for
// sm_90a and runs on sm_90.
bool prefill_sm90_available(DType dtype);
size_t prefill_sm90_smem_bytes(int rows);
void launch_prefill_sm90(const PrefillLaunch& p, DType dtype, int rows, cudaStream_t stream);

}  // namespace sf::cuda
