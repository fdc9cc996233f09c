// Small PTX wrappers, each named after its instruction, for the 2:4 kernels.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace sf::cuda::ptx {

// Weights are streamed once per product: a 16-byte load that does not allocate in L1 keeps L1 for
// the activations, which every block re-reads.
__device__ __forceinline__ uint4 ld_global_nc_na_v4(const uint4* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

// An asynchronous prefetch of `bytes` (a multiple of 16, from a 16-byte aligned address) into L2 by
// the copy engine of the SM (TMA), sm_90+; a no-op on older targets. A hint: nothing waits for it.
__device__ __forceinline__ void cp_async_bulk_prefetch_l2(const void* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#else
  (void)p;
  (void)bytes;
#endif
}

// mma.sp m16n8k32, A sparse 16 x 32 (16 x 16 stored), B dense 32 x 8, fp32 accumulate in place.
// ordered_metadata: our indices always satisfy i0 < i1, which is the form sm_90 runs at full rate.
// Sparsity selector 0: lanes 4g and 4g + 1 supply the metadata word (docs/SPARSE24.md).
template <typename T>
__device__ __forceinline__ void mma_sp_m16n8k32(float (&d)[4], const uint4& a, const uint32_t (&b)[4],
                                                uint32_t e);

template <>
__device__ __forceinline__ void mma_sp_m16n8k32<__half>(float (&d)[4], const uint4& a, const uint32_t (&b)[4],
                                                        uint32_t e) {
  asm volatile(
      "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
}

template <>
__device__ __forceinline__ void mma_sp_m16n8k32<__nv_bfloat16>(float (&d)[4], const uint4& a,
                                                               const uint32_t (&b)[4], uint32_t e) {
  asm volatile(
      "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
}

}  // namespace sf::cuda::ptx

namespace sf::cuda::ptx {

// 16-byte global -> shared copy that bypasses registers and L1 (.cg); src_bytes < 16 zero-fills the
// rest, so out-of-range rows and columns arrive as zeros without a branch.
__device__ __forceinline__ void cp_async_cg_16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit_group() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Four 8x8 b16 matrices from shared memory: with token rows and 8 consecutive k per row, register i
// of lane (g, t) is x[g][8 i + 2 t .. + 1], exactly the mma.sp m16n8k32 B fragment.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

}  // namespace sf::cuda::ptx
