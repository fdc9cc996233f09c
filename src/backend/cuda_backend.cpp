// The CUDA backend's entry points (backends.hpp), over the engine, the offload runtime and the
// GEMM kernels. Compiled only in builds with the CUDA backend.
#include "backend/backends.hpp"
#include "backend/cuda_linear.hpp"

namespace sf::backend {

namespace {

class Cuda final : public CudaBackend {
 public:
  std::string unavailable_reason() const override { return model::cuda_unavailable_reason(); }
  std::string sparse_kernels_unavailable_reason() const override {
    return cuda::unavailable_reason();
  }

  std::unique_ptr<model::CudaEngine> open_model(const model::Model& model,
                                                const model::CudaOptions& options) const override {
    return model::make_cuda_engine(model, options);
  }
  std::unique_ptr<offload::OffloadedOpt> open_offloaded(
      const model::Model& model, const offload::OffloadOptions& options,
      const model::CudaOptions& cuda, const offload::OffloadTuning& tuning,
      std::optional<offload::Plan> plan) const override {
    return offload::make_offloaded_opt(model, options, cuda, tuning, std::move(plan));
  }
  offload::CollectedActivations collect_activations(const model::Model& model,
                                                    std::span<const int32_t> tokens,
                                                    const offload::PredictorFitOptions& options,
                                                    int device) const override {
    return offload::collect_activations_cuda(model, tokens, options, device);
  }
  std::map<std::string, model::PrunedWeight> sparsegpt_prune_model(
      const model::Model& model, std::span<const int32_t> tokens,
      const model::SparseGptModelOptions& options, const model::LayerProgress& progress,
      int device) const override {
    return model::sparsegpt_prune_model_cuda(model, tokens, options, progress, device);
  }
  std::unique_ptr<offload::ReducedRankSolver> reduced_rank(const double* ac, const double* zc,
                                                           int64_t t1, int64_t d,
                                                           int64_t ffn) const override {
    return offload::make_gpu_reduced_rank(ac, zc, t1, d, ffn);
  }
  nlohmann::json benchmark_gemm(const cuda::GemmBenchOptions& options) const override {
    return cuda::benchmark_gemm(options);
  }
  nlohmann::json tune_gemm(const cuda::TuneOptions& options) const override {
    return cuda::tune_gemm(options);
  }
  int resolve_device(const char* fn, int device) const override {
    return resolve_linear_device(fn, device);
  }
  std::unique_ptr<CudaLinear> upload_linear(const char* fn, const s24::Compressed& w, int device,
                                            void* stream) const override {
    return backend::upload_linear(fn, w, device, stream);
  }
  void download(const char* fn, const char* what, void* dst, const void* src, size_t bytes,
                int device, void* stream) const override {
    backend::download(fn, what, dst, src, bytes, device, stream);
  }
  void release_linear_workspaces() const override { backend::release_linear_workspaces(); }
};

}  // namespace

const CudaBackend& cuda_backend() {
  static const Cuda instance;
  return instance;
}

}  // namespace sf::backend
