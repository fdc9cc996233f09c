// Built without CUDA: calibrate --device cuda says why it cannot run, and the predictor fit stays on the CPU.
#include "core/error.hpp"
#include "model/opt_cuda.hpp"
#include "offload/predictor_fit.hpp"

namespace sf::offload {

CollectedActivations collect_activations_cuda(const model::Model&, std::span<const int32_t>,
                                              const PredictorFitOptions&, int) {
  throw Error(Status::NoDevice, model::cuda_unavailable_reason() +
                                    "; calibrate --device cuda needs the CUDA backend: rebuild with -DSPARSEFLOW_CUDA=ON, "
                                    "or use --device cpu");
}

struct GpuReducedRank::Impl {};
GpuReducedRank::GpuReducedRank(const double*, const double*, int64_t, int64_t, int64_t) {
  throw Error(Status::NoDevice, model::cuda_unavailable_reason() + "; the predictor fit runs on the CPU");
}
GpuReducedRank::~GpuReducedRank() = default;
std::vector<double> GpuReducedRank::gram() { return {}; }
std::vector<double> GpuReducedRank::whitened_covariance(const std::vector<double>&) { return {}; }
std::vector<double> GpuReducedRank::project(const std::vector<double>&, int64_t) { return {}; }

}  // namespace sf::offload
