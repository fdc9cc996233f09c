// Which compute backends this build has, and the one way into the CUDA backend.
//
// The host side (the CLI, the C ABI and so Python, the session) never names a CUDA
// implementation: it asks cuda() for the backend's entry points. A build without CUDA compiles
// no CUDA file and no stand-in for one: cuda() returns null and require_cuda() throws
// Error(NoDevice) with the reason. An entry point added here is therefore either implemented by
// the backend (backend/cuda_backend.cpp) or the CUDA build fails; there is no second file to keep
// in step by hand.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.hpp"
#include "kernels/cuda/cuda_api.hpp"
#include "model/cuda_engine.hpp"
#include "model/sparsegpt_model.hpp"
#include "offload/offloaded_opt.hpp"
#include "offload/predictor_fit.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::backend {

struct BackendInfo {
  std::string name;         // "cpu", "cuda"
  bool compiled = false;    // part of this build
  std::string unavailable;  // "" when it can run on this machine now, else why not
};

// Every backend SparseFlow knows, in the order `--device auto` prefers them last to first.
std::vector<BackendInfo> backends();
// The entry for `name`, or nullopt for a name SparseFlow does not know.
std::optional<BackendInfo> find_backend(std::string_view name);

// What a linear layer adds after the product: act(x W' + bias) + residual. Device pointers.
struct LinearEpilogue {
  const void* bias = nullptr;  // [N], optional
  DType bias_dtype = DType::F32;
  s24::Activation act = s24::Activation::None;
  const void* residual = nullptr;  // [M, N], optional; added after the activation
  DType residual_dtype = DType::F32;
};

// A 2:4 weight uploaded once to one GPU in the kernels' layout (the C ABI's sf_cuda_linear). The
// caller has checked shapes, dtypes and overlaps; the backend checks that pointers are device
// memory of the weight's GPU (a host pointer would fault the kernel and poison the context).
class CudaLinear {
 public:
  virtual ~CudaLinear() = default;
  virtual int64_t rows() const = 0;  // N outputs
  virtual int64_t cols() const = 0;  // K inputs
  virtual DType dtype() const = 0;
  virtual int device() const = 0;
  virtual size_t device_bytes() const = 0;
  // y [m, N] (y_dtype) = epilogue(x [m, K] W'), enqueued on `stream` (a cudaStream_t).
  virtual void forward(const char* fn, const void* x, int64_t m, void* y, DType y_dtype,
                       const LinearEpilogue& ep, void* stream) const = 0;
  // The dense [N, K] weight into `out` (device memory of the weight's GPU).
  virtual void decompress(const char* fn, void* out, void* stream) const = 0;
};

// What the CUDA backend offers the host side. Plain C++ types only (no CUDA headers).
class CudaBackend {
 public:
  virtual ~CudaBackend() = default;
  // "" when a CUDA device is usable for the model engine, else a sentence a user can act on.
  virtual std::string unavailable_reason() const = 0;
  // "" when the 2:4 kernels can run (a device of sm_80 or newer), else why not.
  virtual std::string sparse_kernels_unavailable_reason() const = 0;

  // The engine on one GPU, every architecture of arch::ModelDesc (model must outlive it). Throws
  // like make_cuda_engine.
  virtual std::unique_ptr<model::CudaEngine> open_model(
      const model::Model& model, const model::CudaOptions& options) const = 0;
  // The engine with neuron-level offloading of the FFN under a GPU memory budget.
  virtual std::unique_ptr<offload::OffloadedOpt> open_offloaded(
      const model::Model& model, const offload::OffloadOptions& options,
      const model::CudaOptions& cuda, const offload::OffloadTuning& tuning,
      std::optional<offload::Plan> plan) const = 0;
  // The calibration forward passes on the GPU (offload/predictor_fit.hpp).
  virtual offload::CollectedActivations collect_activations(
      const model::Model& model, std::span<const int32_t> tokens,
      const offload::PredictorFitOptions& options, int device) const = 0;
  // SparseGPT over a model on the GPU (model/sparsegpt_model.hpp).
  virtual std::map<std::string, model::PrunedWeight> sparsegpt_prune_model(
      const model::Model& model, std::span<const int32_t> tokens,
      const model::SparseGptModelOptions& options, const model::LayerProgress& progress,
      int device) const = 0;
  // The predictor fit's large fp64 products on the GPU.
  virtual std::unique_ptr<offload::ReducedRankSolver> reduced_rank(const double* ac,
                                                                   const double* zc, int64_t t1,
                                                                   int64_t d,
                                                                   int64_t ffn) const = 0;
  // The GEMM benchmark and the tuner (kernels/cuda/cuda_api.hpp).
  virtual nlohmann::json benchmark_gemm(const cuda::GemmBenchOptions& options) const = 0;
  virtual nlohmann::json tune_gemm(const cuda::TuneOptions& options) const = 0;

  // The GPU a weight goes on: `device`, or the current one for -1; throws InvalidArgument naming
  // `fn` for one that does not exist and NoDevice for one without sparse tensor cores.
  virtual int resolve_device(const char* fn, int device) const = 0;
  virtual std::unique_ptr<CudaLinear> upload_linear(const char* fn, const s24::Compressed& w,
                                                    int device, void* stream) const = 0;
  // `bytes` of device memory `src` (checked to be on `device`) into host memory `dst`, waiting.
  virtual void download(const char* fn, const char* what, void* dst, const void* src, size_t bytes,
                        int device, void* stream) const = 0;
  // Frees the per-(GPU, stream) scratch that CudaLinear::forward keeps.
  virtual void release_linear_workspaces() const = 0;
};

// The CUDA backend, or null when this build has none.
const CudaBackend* cuda();
// "" when the CUDA backend is built and a device is usable, else why not (never throws).
std::string cuda_unavailable_reason();
// The CUDA backend, usable now, for `what` ("generate --device cuda"); otherwise throws
// Error(NoDevice) naming `what`, why it cannot run, and what to do instead.
const CudaBackend& require_cuda(std::string_view what);

}  // namespace sf::backend
