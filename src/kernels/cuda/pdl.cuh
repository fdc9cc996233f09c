// Programmatic dependent launch (PDL, sm_90+): a kernel launched with the attribute
// cudaLaunchAttributeProgrammaticStreamSerialization may start while its predecessor in the stream
// is still running (once every block of the predecessor has called pdl_launch_dependents() or
// exited), so its launch latency and its first weight loads overlap the predecessor's tail. The
// decode step is ~230 short kernels per token, where those gaps and tails are a large part of
// the time (docs/KERNELS.md, "The decode step").
//
// The rules that keep it correct, for every kernel launched through launch_pdl():
//   1. Before pdl_wait() a kernel may only READ data that no earlier kernel writes (weights, 2:4
//      metadata, biases, layer-norm gamma/beta), and must WRITE nothing (global memory): the
//      predecessor may still be reading or writing anything else.
//   2. Every block calls pdl_wait() on every path, including early returns, before it touches
//      anything an earlier kernel writes. (griddepcontrol.wait returns once the predecessors have
//      completed and their writes are visible; a kernel completes only after all its blocks exit,
//      so a block that exits without waiting can let the NEXT kernel see this one as complete
//      while the one before is still running. Waiting on every path keeps the chain transitive.)
//   3. pdl_launch_dependents() early (at the start): it only lets the next kernel be scheduled; it
//      publishes nothing, and the next kernel still waits for this one's completion.
// A kernel launched without the attribute (a plain <<<>>>, cuBLAS, the offload runtime's kernels)
// waits for the full completion of its predecessor as always, so leaving a kernel unchanged is
// always safe; and a PDL kernel after such a kernel just starts when that one has finished.
//
// Off (plain launches; pdl_wait() then returns at once, the predecessor having completed) unless
// SPARSEFLOW_PDL=1 is set (read once per process), the device is sm_90+ and the kernels were compiled
// for it. Opt-in because it measured slower for dense decode on the H200 (docs/KERNELS.md). The wait and the trigger compile to
// nothing below sm_90.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda/check.hpp"

namespace sf::cuda {

#if defined(__CUDACC__)
// griddepcontrol.wait: block until every prerequisite grid has completed and its memory operations
// are visible to this grid. The "memory" clobber keeps the compiler from hoisting loads above it.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// griddepcontrol.launch_dependents: this block no longer holds back the launch of the next kernel.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
#endif

// Whether launch_pdl() sets the attribute on the current device: compute capability >= 9.0, the
// kernels' code built for sm_90+ (a PTX JIT from compute_80 would make pdl_wait() a no-op), and
// SPARSEFLOW_PDL=1. Cached per device after the first call.
bool pdl_enabled();

// kernel<<<grid, block, smem, stream>>>(args...), with programmatic stream serialization when
// pdl_enabled(). Only for kernels that follow the rules above. Checks the launch.
template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                Args&&... args) {
  cudaLaunchAttribute attr[1] = {};
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  SF_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

}  // namespace sf::cuda
