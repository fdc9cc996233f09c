// Built without CUDA: calibrate --device cuda says why it cannot run.
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

}  // namespace sf::offload
