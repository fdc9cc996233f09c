// Built only when SparseFlow is configured without CUDA.
#include "core/error.hpp"
#include "kernels/cuda/cuda_api.hpp"

namespace sf::cuda {

std::string unavailable_reason() {
  return "this build of SparseFlow has no CUDA backend (nvcc was not found at configure time, or "
         "-DSPARSEFLOW_CUDA=OFF was given); rebuild with the CUDA toolkit on PATH to use a GPU";
}

nlohmann::json benchmark_gemm(const GemmBenchOptions&) {
  throw Error(Status::NoDevice, unavailable_reason());
}

nlohmann::json tune_gemm(const TuneOptions&) { throw Error(Status::NoDevice, unavailable_reason()); }

}  // namespace sf::cuda
