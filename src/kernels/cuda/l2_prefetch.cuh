// Issuing an L2Prefetch (l2_prefetch.hpp) from a kernel: the first warp of every block takes its
// share of the ranges' 64 KiB pieces (cp.async.bulk.prefetch.L2, sm_90+; nothing on older targets).
#pragma once
#include <cstdint>

#include "kernels/cuda/l2_prefetch.hpp"
#include "kernels/cuda/ptx.cuh"

namespace sf::cuda {

// Lane `lane` of block `block` (of `blocks`) issues its pieces. Call with lane < 32 from one warp per block.
__device__ __forceinline__ void issue_l2_prefetch(const L2Prefetch& pf, unsigned block, unsigned blocks,
                                                  unsigned lane) {
  constexpr size_t kPiece = size_t(64) << 10;
  const size_t issuer = size_t(block) * 32 + lane, issuers = size_t(blocks) * 32;
#pragma unroll
  for (int r = 0; r < L2Prefetch::kRanges; ++r) {
    const size_t bytes = pf.bytes[r] & ~size_t(15);
    if (!pf.ptr[r] || bytes == 0) continue;
    const size_t pieces = (bytes + kPiece - 1) / kPiece;
    for (size_t i = issuer; i < pieces; i += issuers) {
      const size_t off = i * kPiece;
      ptx::cp_async_bulk_prefetch_l2(static_cast<const char*>(pf.ptr[r]) + off, uint32_t(min(kPiece, bytes - off)));
    }
  }
}

}  // namespace sf::cuda
