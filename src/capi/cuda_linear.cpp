// The C ABI's GPU linear layer (sf_cuda_*): a 2:4 weight uploaded once in the kernels' layout
// (sf::cuda::upload_weight) and sf::cuda::SparseGemm run on the caller's stream. Built with the
// CUDA backend only; cuda_linear_none.cpp takes its place otherwise.
#include <cuda_runtime.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "capi/capi_internal.hpp"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/cuda_api.hpp"
#include "kernels/cuda/sparse_gemm.hpp"

struct sf_cuda_linear {
  sf::cuda::DeviceWeight24 w;  // [N, K] on `device`, kernel layout
  int device = 0;
};

namespace {

using sf::DType;
using sf::Error;
using sf::Status;
using sf::capi::float_dtype;
using sf::capi::matrix_bytes;
using sf::capi::need;
using sf::capi::overlaps;
using sf::capi::reject;

// Makes `device` the calling thread's current device while it lives. Callers such as PyTorch may
// have another device current, and CUDA allocations, launches and SparseGemm's device queries all
// follow the current device.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    SF_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) {
      SF_CUDA_CHECK(cudaSetDevice(device));
      restore_ = true;
    }
  }
  ~DeviceGuard() {
    if (restore_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool restore_ = false;
};

cudaStream_t as_stream(void* stream) {
  return static_cast<cudaStream_t>(stream);
}

// The GPU a handle is made on: `device`, or the current one for -1. Throws NoDevice with the
// backend's reason when no GPU can run the kernels.
int resolve_device(const char* fn, int device) {
  if (const std::string why = sf::cuda::unavailable_reason(); !why.empty())
    throw Error(Status::NoDevice, why);
  int count = 0;
  SF_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (device == -1) SF_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= count)
    reject(fn, "device is {}; expected -1 (the current device) or 0 to {} ({} visible)", device,
           count - 1, count);
  int major = 0, minor = 0;
  SF_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  SF_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  if (major < 8)
    sf::fail(Status::NoDevice,
             "{}: GPU {} has compute capability {}.{}; the 2:4 kernels need sparse tensor cores "
             "(sm_80 or newer)",
             fn, device, major, minor);
  return device;
}

// A device pointer handed to the kernels must be memory that `device` can read: a host pointer
// would fault the kernel and poison the whole CUDA context, so it is refused here instead.
void need_device_memory(const char* fn, const void* p, const char* what, int device) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it so that the caller's next CUDA call is unaffected
    reject(fn, "{} ({}) is not a CUDA pointer; pass device memory of GPU {}", what, p, device);
  }
  if (a.type == cudaMemoryTypeManaged) return;
  if (a.type != cudaMemoryTypeDevice)
    reject(fn, "{} ({}) is host memory; the GPU kernels need it in device memory of GPU {}", what,
           p, device);
  if (a.device != device)
    reject(fn, "{} is on GPU {}, but the weight is (or goes) on GPU {}; move it there first", what,
           a.device, device);
}

const sf_cuda_linear& linear(const char* fn, const sf_cuda_linear* h) {
  need(fn, h, "the sf_cuda_linear handle");
  return *h;
}

DType gpu_weight_dtype(const char* fn, sf_dtype d) {
  const DType t = float_dtype(fn, "w", d);
  if (t == DType::F32)
    sf::fail(Status::UnsupportedShape,
             "{}: w has dtype F32; the GPU kernels take F16 or BF16 weights: convert it first "
             "(bf16 keeps fp32's range, fp16 three more bits of precision)",
             fn);
  return t;
}

std::unique_ptr<sf_cuda_linear> upload(const char* fn, const sf::s24::Compressed& c, int device,
                                       void* stream) {
  const int dev = resolve_device(fn, device);
  DeviceGuard guard(dev);
  auto h = std::make_unique<sf_cuda_linear>();
  h->device = dev;
  h->w = sf::cuda::upload_weight(c, as_stream(stream));
  return h;
}

// ---- one SparseGemm per (GPU, stream) -----------------------------------------------------------
// SparseGemm holds per-stream scratch (split-K partials, the dense fallback's decompressed weight,
// a cuBLAS handle) and is not thread-safe. One per stream, shared by every handle, keeps the
// scratch to one copy per stream (sized by the largest layer) rather than one per layer; its mutex
// lets one thread at a time enqueue on that stream. Entries are never erased (only their SparseGemm
// is released), so a reference stays valid after the map's lock is dropped.
struct StreamGemm {
  std::mutex mu;
  std::unique_ptr<sf::cuda::SparseGemm> gemm;
};

class GemmCache {
 public:
  StreamGemm& at(int device, cudaStream_t stream) {
    std::lock_guard lock(mu_);
    auto& slot = entries_[{device, stream}];
    if (!slot) slot = std::make_unique<StreamGemm>();
    return *slot;
  }
  void release_all() noexcept {
    std::lock_guard lock(mu_);
    for (auto& [key, entry] : entries_) {
      std::lock_guard entry_lock(entry->mu);
      try {
        DeviceGuard guard(key.first);
        entry->gemm.reset();  // frees its buffers (cudaFree waits for the stream's work)
      } catch (...) {
        entry->gemm.reset();
      }
    }
  }

 private:
  std::mutex mu_;
  std::map<std::pair<int, cudaStream_t>, std::unique_ptr<StreamGemm>> entries_;
};

// Never destroyed: at process exit the CUDA runtime may already be torn down, and freeing device
// memory then fails or crashes; the driver reclaims it with the process.
GemmCache& gemm_cache() {
  static auto* cache = new GemmCache;
  return *cache;
}

}  // namespace

extern "C" {

SF_API sf_status sf_cuda_check(void) {
  static constexpr const char* fn = "sf_cuda_check";
  return sf::capi::guard(fn, [&] {
    if (const std::string why = sf::cuda::unavailable_reason(); !why.empty())
      throw Error(Status::NoDevice, why);
  });
}

SF_API sf_status sf_cuda_linear_create(const sf_sparse24* w, int device, void* stream,
                                       sf_cuda_linear** out) {
  static constexpr const char* fn = "sf_cuda_linear_create";
  if (out) *out = nullptr;
  return sf::capi::guard(fn, [&] {
    need(fn, out, "out");
    const auto& c = sf::capi::handle(fn, w).c;
    gpu_weight_dtype(fn, static_cast<sf_dtype>(c.dtype));
    *out = upload(fn, c, device, stream).release();
  });
}

SF_API sf_status sf_cuda_linear_create_dense(const void* w, sf_dtype dtype, int64_t rows,
                                             int64_t cols, int w_on_device, sf_prune_method method,
                                             const float* act_norms, int device, void* stream,
                                             sf_cuda_linear** out) {
  static constexpr const char* fn = "sf_cuda_linear_create_dense";
  if (out) *out = nullptr;
  return sf::capi::guard(fn, [&] {
    need(fn, out, "out");
    need(fn, w, "w");
    const DType t = gpu_weight_dtype(fn, dtype);
    const size_t bytes = matrix_bytes(fn, "w", rows, cols, t);
    if (w_on_device != 0 && w_on_device != 1)
      reject(fn, "w_on_device is {}; expected 0 (host memory) or 1 (device memory)", w_on_device);
    if (method != SF_PRUNE_MAGNITUDE && method != SF_PRUNE_WANDA)
      reject(fn, "method is {}; expected SF_PRUNE_MAGNITUDE (0) or SF_PRUNE_WANDA (1)",
             int(method));
    const int dev = resolve_device(fn, device);
    // Pruning and compression run on the host: one host copy of w, dropped on return.
    std::vector<uint8_t> host(bytes);
    if (w_on_device) {
      DeviceGuard guard(dev);
      need_device_memory(fn, w, "w", dev);
      SF_CUDA_CHECK(cudaMemcpyAsync(host.data(), w, bytes, cudaMemcpyDeviceToHost, as_stream(stream)));
      SF_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)));
    } else {
      std::memcpy(host.data(), w, bytes);
    }
    const sf::s24::MatrixView view{host.data(), t, rows, cols};
    const auto mask = sf::capi::prune_mask(fn, view, method, act_norms);
    sf::s24::apply_mask(host.data(), t, rows, cols, mask);
    const auto c = sf::s24::compress(view);
    *out = upload(fn, c, dev, stream).release();
  });
}

SF_API void sf_cuda_linear_free(sf_cuda_linear* h) {
  if (!h) return;
  try {
    DeviceGuard guard(h->device);
    sf::cuda::free_weight(h->w);
  } catch (...) {
    sf::cuda::free_weight(h->w);  // the device could not be selected: free through UVA anyway
  }
  delete h;
}

SF_API sf_status sf_cuda_linear_info(const sf_cuda_linear* h, int64_t* rows, int64_t* cols,
                                     sf_dtype* dtype, int* device, size_t* device_bytes) {
  static constexpr const char* fn = "sf_cuda_linear_info";
  return sf::capi::guard(fn, [&] {
    const auto& l = linear(fn, h);
    if (rows) *rows = l.w.n;
    if (cols) *cols = l.w.k;
    if (dtype) *dtype = static_cast<sf_dtype>(l.w.dtype);
    if (device) *device = l.device;
    if (device_bytes) *device_bytes = l.w.bytes();
  });
}

SF_API sf_status sf_cuda_linear_forward(const sf_cuda_linear* h, const void* x, sf_dtype x_dtype,
                                        int64_t m, void* y, sf_dtype y_dtype, const void* bias,
                                        sf_dtype bias_dtype, sf_activation act,
                                        const void* residual, sf_dtype residual_dtype,
                                        void* stream) {
  static constexpr const char* fn = "sf_cuda_linear_forward";
  return sf::capi::guard(fn, [&] {
    const auto& l = linear(fn, h);
    need(fn, x, "x");
    need(fn, y, "y");
    if (m < 0) reject(fn, "m is {}; expected the number of rows of x (>= 0)", m);
    const DType xt = float_dtype(fn, "x", x_dtype), yt = float_dtype(fn, "y", y_dtype);
    if (xt != l.w.dtype)
      reject(fn, "x has dtype {}, but the weight is {}; convert x to {} (the kernels multiply in "
             "the weight's type)", sf::dtype_name(xt), sf::dtype_name(l.w.dtype),
             sf::dtype_name(l.w.dtype));
    const size_t x_bytes = matrix_bytes(fn, "x", m, l.w.k, xt);
    const size_t y_bytes = matrix_bytes(fn, "y", m, l.w.n, yt);
    if (act < SF_ACT_NONE || act > SF_ACT_SILU)
      reject(fn, "act is {}; expected an sf_activation value (0 to 3)", int(act));
    sf::cuda::DeviceEpilogue ep;
    ep.act = static_cast<sf::s24::Activation>(act);
    if (bias) {
      ep.bias = bias;
      ep.bias_dtype = float_dtype(fn, "bias", bias_dtype);
    }
    if (residual) {
      ep.residual = residual;
      ep.residual_dtype = float_dtype(fn, "residual", residual_dtype);
      const size_t r_bytes = matrix_bytes(fn, "residual", m, l.w.n, ep.residual_dtype);
      if (overlaps(y, y_bytes, residual, r_bytes))
        reject(fn, "y overlaps residual; write y to a separate buffer");
    }
    if (overlaps(x, x_bytes, y, y_bytes)) reject(fn, "y overlaps x; write y to a separate buffer");
    if (m == 0) return;
    need_device_memory(fn, x, "x", l.device);
    need_device_memory(fn, y, "y", l.device);
    if (bias) need_device_memory(fn, bias, "bias", l.device);
    if (residual) need_device_memory(fn, residual, "residual", l.device);

    DeviceGuard guard(l.device);
    StreamGemm& entry = gemm_cache().at(l.device, as_stream(stream));
    std::lock_guard lock(entry.mu);
    if (!entry.gemm) entry.gemm = std::make_unique<sf::cuda::SparseGemm>(as_stream(stream));
    entry.gemm->run(l.w, x, m, y, yt, ep);
  });
}

SF_API sf_status sf_cuda_linear_decompress(const sf_cuda_linear* h, void* out, void* stream) {
  static constexpr const char* fn = "sf_cuda_linear_decompress";
  return sf::capi::guard(fn, [&] {
    const auto& l = linear(fn, h);
    need(fn, out, "out");
    need_device_memory(fn, out, "out", l.device);
    DeviceGuard guard(l.device);
    sf::cuda::decompress_on_device(l.w, out, as_stream(stream));
  });
}

SF_API void sf_cuda_release_workspaces(void) {
  gemm_cache().release_all();
}

}  // extern "C"
