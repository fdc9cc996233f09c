// The CUDA 2:4 sparse GEMM: y[M, N] = act(x[M, K] W^T + bias) + residual, W 2:4 along K.
//
// W is uploaded once from a host s24::Compressed into the kernel layout of docs/KERNELS.md (the
// only device copy SparseFlow keeps). x is [M, K] row-major in W's dtype (fp16 or bf16), y is
// [M, N] row-major fp32, fp16 or bf16; accumulation is fp32. Every failure throws sf::Error.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/dtype.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::cuda {

// W on the device. values: [row_blocks][k_tiles][32 lanes] x 16 bytes, each 16 bytes being the
// mma.sp A fragment of one lane for one 16 x 32 tile; meta: [row_blocks][k_tiles / 4][16 slots]
// x 16 bytes, slot s holding the metadata words of lane 4 (s / 2) + (s % 2) for 4 k-tiles.
struct DeviceWeight24 {
  DType dtype = DType::F16;
  int64_t n = 0, k = 0;          // logical shape of W
  int64_t row_blocks = 0;        // ceil(n / 16)
  int64_t k_tiles = 0;           // ceil(k / 32) rounded up to a multiple of 4 (zero padded)
  void* values = nullptr;
  uint32_t* meta = nullptr;

  int64_t k_quads() const { return k_tiles / 4; }
  size_t value_bytes() const { return size_t(row_blocks) * size_t(k_tiles) * 512; }
  size_t meta_bytes() const { return size_t(row_blocks) * size_t(k_tiles) * 64; }
  size_t bytes() const { return value_bytes() + meta_bytes(); }
};

// Copies c (fp16 or bf16) to the device in the kernel layout. Throws Error(UnsupportedShape) for
// other dtypes. Synchronous with respect to the host buffers (they may be freed on return).
DeviceWeight24 upload_weight(const s24::Compressed& c, cudaStream_t stream = nullptr);
void free_weight(DeviceWeight24& w);
// A second device copy with the same contents (benchmarks rotate copies to defeat the L2 cache).
DeviceWeight24 clone_weight(const DeviceWeight24& w, cudaStream_t stream = nullptr);

// Writes W back as a dense row-major [n, k] matrix of w.dtype on the device.
void decompress_on_device(const DeviceWeight24& w, void* dense, cudaStream_t stream);

struct DeviceEpilogue {
  const void* bias = nullptr;      // [N] on the device, optional
  DType bias_dtype = DType::F32;
  s24::Activation act = s24::Activation::None;
  const void* residual = nullptr;  // [M, N] ([M, N / 2] gated) on the device, optional; added after
                                   // the activation
  DType residual_dtype = DType::F32;
  // W is a fused gate/up weight (s24::fuse_gate_up: rows 2j, 2j + 1 = gate j, up j; N even) and y
  // is [M, N / 2] (SwiGLU with SiLU, GeGLU with GELU); every path runs it, in its own epilogue:
  //   y[m, j] = act(v[m, 2j] + bias[2j]) * (v[m, 2j + 1] + bias[2j + 1]) + residual[m, j].
  bool gated = false;
};

// How one product is computed; docs/KERNELS.md describes each path.
enum class GemmPath : int {
  Decode = 0,         // sparse tensor-core GEMV/GEMM for small M (mma.sp, split-K)
  DenseFallback = 1,  // decompress W into scratch, cuBLAS dense, epilogue kernel
  Prefill = 2,        // tiled sparse tensor-core GEMM for large M (mma.sp, cp.async ring)
  PrefillSm90 = 3,    // Hopper: wgmma.sp fed by TMA (sm_90a); elsewhere runs as Prefill
};
struct KernelChoice {
  GemmPath path = GemmPath::Decode;
  int warps = 4;   // warps per block, all on one 16-row block, splitting the block's K range
  int splits = 0;  // K splits over the grid (1 = none); 0 = decided from the shape and GPU
  bool shared_x = false;  // Decode only: the block's (row) warps own different 16-row blocks and share
                          // x through shared memory (else: one 16-row block per block)
  int kgroups = 1;  // shared_x only: k-groups of warps splitting each step range (1, 2, 4; at most
                    // 8 / mt, capped at launch), reduced in shared memory
  int tile_m = 128;  // Prefill: tokens per block (64 or 128; the stage count follows the GPU); PrefillSm90: rows of W per block (128 or 256)
  std::string name() const;
};

// Per-stream state: split-K workspace and counters, a cuBLAS handle and scratch for the dense
// fallback, the kernel table and the tuning cache. Not thread-safe; one per stream.
class SparseGemm {
 public:
  explicit SparseGemm(cudaStream_t stream = nullptr);
  ~SparseGemm();
  SparseGemm(const SparseGemm&) = delete;
  SparseGemm& operator=(const SparseGemm&) = delete;

  // y = act(x W^T + bias) + residual (or the gated form, DeviceEpilogue::gated). x, y, bias,
  // residual are device pointers; y must not alias x.
  void run(const DeviceWeight24& w, const void* x, int64_t m, void* y, DType y_dtype,
           const DeviceEpilogue& ep = {});
  // Same, with the path forced (the tuner and the benchmark use this).
  void run_with(const KernelChoice& choice, const DeviceWeight24& w, const void* x, int64_t m, void* y,
                DType y_dtype, const DeviceEpilogue& ep = {});

  // What run() would use: the tuning cache when it has this shape, else the built-in table.
  KernelChoice choose(const DeviceWeight24& w, int64_t m) const;
  // The split count a Decode choice with splits == 0 resolves to.
  int resolve_splits(const DeviceWeight24& w, int64_t m, int warps, bool shared_x, int kgroups = 1) const;

  cudaStream_t stream() const { return stream_; }
  int sm_count() const { return sm_count_; }
  int arch() const { return arch_; }  // 10 * major + minor
  const std::string& gpu_name() const { return gpu_name_; }

 private:
  void ensure_workspace(size_t floats, size_t counters);
  void ensure_scratch(size_t bytes);
  void run_decode(const KernelChoice& c, const DeviceWeight24& w, const void* x, int64_t m, void* y,
                  DType y_dtype, const DeviceEpilogue& ep);
  void run_dense(const DeviceWeight24& w, const void* x, int64_t m, void* y, DType y_dtype,
                 const DeviceEpilogue& ep);
  void run_prefill(const KernelChoice& c, const DeviceWeight24& w, const void* x, int64_t m, void* y,
                   DType y_dtype, const DeviceEpilogue& ep);

  cudaStream_t stream_ = nullptr;
  int sm_count_ = 0, arch_ = 0;
  size_t smem_optin_ = 0;  // largest dynamic shared memory a block may ask for
  std::string gpu_name_;
  float* partials_ = nullptr;
  size_t partial_floats_ = 0;
  int* counters_ = nullptr;  // zero between launches: the last block of a tile resets its counter
  size_t counter_count_ = 0;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  void* cublas_ = nullptr;  // cublasHandle_t, made on first use of the dense fallback
  struct Tuned;
  Tuned* tuned_ = nullptr;
};

// The tuning cache: where it lives ($SPARSEFLOW_TUNE_CACHE, else
// ${XDG_CACHE_HOME:-~/.cache}/sparseflow/tune-<gpu>.json) for the GPU of this name.
std::string tune_cache_path(const std::string& gpu_name);

}  // namespace sf::cuda
