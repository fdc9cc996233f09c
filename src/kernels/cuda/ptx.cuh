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

// Barrier `id` (1..15) for `threads` threads of the block (a multiple of 32): a subset of the warps.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// Hopper's bulk copies and transaction barriers (sm_90+; the callers compile them for sm_90+ only).
// An mbarrier is a 64-bit word in shared memory, given here by its shared-window address.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(arrivals) : "memory");
}
// Makes the initialised barriers visible to the bulk-copy (async) proxy.
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
// One arrival that also announces `bytes` of transactions the phase must see complete.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
// Waits until the phase of parity `parity` has completed (a fresh barrier is in phase 0).
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
// `bytes` (a multiple of 16, both addresses 16-byte aligned) from global to shared memory by the SM's
// copy engine (TMA), completing as transactions on `bar`.
__device__ __forceinline__ void cp_async_bulk_g2s(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}
#endif

// Hopper's warpgroup MMA (sm_90a only: the callers compile it under __CUDA_ARCH_FEAT_SM90_ALL).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// A 2D tile of a tensor map (TMA) into shared memory, completing as transactions on `bar`; c0 is the
// innermost coordinate. Out-of-range elements arrive as zeros (and count as transferred bytes).
__device__ __forceinline__ void cp_async_bulk_tensor_2d_g2s(uint32_t dst, const void* tmap, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(dst),
      "l"(tmap), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit_group() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait_group() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Warp-specialised register split (whole warpgroup, sm_90a): a producer gives registers back, the
// consumers take them, so consumers can hold more than the launch's even share.
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(N));
}

// wgmma.mma_async.sp m64n128k32, fp32 accumulate in place: A (64 x 32, 2:4, 64 x 16 stored) from
// registers, per warp w of the warpgroup its rows 16 w .. 16 w + 15 in the mma.sp m16n8k32 A fragment
// layout; B (32 x 128) from shared memory through the matrix descriptor `b_desc`; `e` the metadata
// word, sparsity selector 0 (lanes 4 g and 4 g + 1). Accumulator d[4 j + v]: row 16 w + g + 8 (v / 2),
// column 8 j + 2 t + v % 2.
#define SF_WGMMA_D64 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define SF_WGMMA_SP_M64N128K32(T, PTX_T)                                                                  \
  template <>                                                                                             \
  __device__ __forceinline__ void wgmma_sp_m64n128k32<T>(float(&d)[64], const uint4& a, uint64_t b_desc, \
                                                         uint32_t e) {                                    \
    asm volatile("wgmma.mma_async.sp.sync.aligned.m64n128k32.f32." PTX_T "." PTX_T " {" SF_WGMMA_D64      \
                 "}, {%64, %65, %66, %67}, %68, %69, 0, 1, 1, 1, 0;"                                      \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
                   "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
                   "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
                   "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
                   "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])                                                                                   \
                 : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "l"(b_desc), "r"(e));                          \
  }
template <typename T>
__device__ __forceinline__ void wgmma_sp_m64n128k32(float (&d)[64], const uint4& a, uint64_t b_desc, uint32_t e);
SF_WGMMA_SP_M64N128K32(__half, "f16")
SF_WGMMA_SP_M64N128K32(__nv_bfloat16, "bf16")
#undef SF_WGMMA_SP_M64N128K32
#undef SF_WGMMA_D64
#endif

}  // namespace sf::cuda::ptx
