// The CUDA backend's linear layer (backends.hpp CudaLinear), behind the C ABI's sf_cuda_*: a 2:4
// weight uploaded once in the kernels' layout (sf::cuda::upload_weight) and sf::cuda::SparseGemm
// run on the caller's stream. Compiled only with the CUDA backend.
#include "backend/cuda_linear.hpp"

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <utility>

#include "core/error.hpp"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/cuda_api.hpp"
#include "kernels/cuda/sparse_gemm.hpp"

namespace sf::backend {

namespace {

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

// A device pointer handed to the kernels must be memory that `device` can read: a host pointer
// would fault the kernel and poison the whole CUDA context, so it is refused here instead.
void need_device_memory(const char* fn, const void* p, const char* what, int device) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it so that the caller's next CUDA call is unaffected
    fail(Status::InvalidArgument, "{}: {} ({}) is not a CUDA pointer; pass device memory of GPU {}",
         fn, what, p, device);
  }
  if (a.type == cudaMemoryTypeManaged) return;
  if (a.type != cudaMemoryTypeDevice)
    fail(Status::InvalidArgument,
         "{}: {} ({}) is host memory; the GPU kernels need it in device memory of GPU {}", fn, what,
         p, device);
  if (a.device != device)
    fail(Status::InvalidArgument,
         "{}: {} is on GPU {}, but the weight is (or goes) on GPU {}; move it there first", fn,
         what, a.device, device);
}

// ---- one SparseGemm per (GPU, stream) -----------------------------------------------------------
// SparseGemm holds per-stream scratch (split-K partials, the dense fallback's decompressed weight,
// a cuBLAS handle) and is not thread-safe. One per stream, shared by every handle, keeps the
// scratch to one copy per stream (sized by the largest layer) rather than one per layer; its mutex
// lets one thread at a time enqueue on that stream. Entries are never erased (only their SparseGemm
// is released), so a reference stays valid after the map's lock is dropped.
struct StreamGemm {
  std::mutex mu;
  std::unique_ptr<cuda::SparseGemm> gemm;
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

class DeviceLinear final : public CudaLinear {
 public:
  DeviceLinear(cuda::DeviceWeight24 w, int device) : w_(std::move(w)), device_(device) {}
  ~DeviceLinear() override {
    try {
      DeviceGuard guard(device_);
      cuda::free_weight(w_);
    } catch (...) {
      cuda::free_weight(w_);  // the device could not be selected: free through UVA anyway
    }
  }
  DeviceLinear(const DeviceLinear&) = delete;
  DeviceLinear& operator=(const DeviceLinear&) = delete;

  int64_t rows() const override { return w_.n; }
  int64_t cols() const override { return w_.k; }
  DType dtype() const override { return w_.dtype; }
  int device() const override { return device_; }
  size_t device_bytes() const override { return w_.bytes(); }

  void forward(const char* fn, const void* x, int64_t m, void* y, DType y_dtype,
               const LinearEpilogue& ep, void* stream) const override {
    need_device_memory(fn, x, "x", device_);
    need_device_memory(fn, y, "y", device_);
    if (ep.bias) need_device_memory(fn, ep.bias, "bias", device_);
    if (ep.residual) need_device_memory(fn, ep.residual, "residual", device_);
    cuda::DeviceEpilogue dep;
    dep.act = ep.act;
    dep.bias = ep.bias;
    dep.bias_dtype = ep.bias_dtype;
    dep.residual = ep.residual;
    dep.residual_dtype = ep.residual_dtype;
    DeviceGuard guard(device_);
    StreamGemm& entry = gemm_cache().at(device_, as_stream(stream));
    std::lock_guard lock(entry.mu);
    if (!entry.gemm) entry.gemm = std::make_unique<cuda::SparseGemm>(as_stream(stream));
    entry.gemm->run(w_, x, m, y, y_dtype, dep);
  }

  void decompress(const char* fn, void* out, void* stream) const override {
    need_device_memory(fn, out, "out", device_);
    DeviceGuard guard(device_);
    cuda::decompress_on_device(w_, out, as_stream(stream));
  }

 private:
  cuda::DeviceWeight24 w_;  // [N, K] on device_, kernel layout
  int device_ = 0;
};

}  // namespace

int resolve_linear_device(const char* fn, int device) {
  if (const std::string why = cuda::unavailable_reason(); !why.empty())
    throw Error(Status::NoDevice, why);
  int count = 0;
  SF_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (device == -1) SF_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= count)
    fail(Status::InvalidArgument,
         "{}: device is {}; expected -1 (the current device) or 0 to {} ({} visible)", fn, device,
         count - 1, count);
  int major = 0, minor = 0;
  SF_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  SF_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  if (major < 8)
    fail(Status::NoDevice,
         "{}: GPU {} has compute capability {}.{}; the 2:4 kernels need sparse tensor cores "
         "(sm_80 or newer)",
         fn, device, major, minor);
  return device;
}

std::unique_ptr<CudaLinear> upload_linear(const char* fn, const s24::Compressed& c, int device,
                                          void* stream) {
  const int dev = resolve_linear_device(fn, device);
  DeviceGuard guard(dev);
  return std::make_unique<DeviceLinear>(cuda::upload_weight(c, as_stream(stream)), dev);
}

void download(const char* fn, const char* what, void* dst, const void* src, size_t bytes,
              int device, void* stream) {
  DeviceGuard guard(device);
  need_device_memory(fn, src, what, device);
  SF_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, as_stream(stream)));
  SF_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)));
}

void release_linear_workspaces() {
  gemm_cache().release_all();
}

}  // namespace sf::backend
