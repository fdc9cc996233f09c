// The one place that says which backends this build has.
#include "backend/backends.hpp"

#include <fmt/format.h>

#include "core/error.hpp"

namespace sf::backend {

#if SPARSEFLOW_WITH_CUDA
// Defined in cuda_backend.cpp, which only a build with the CUDA backend compiles.
const CudaBackend& cuda_backend();
#endif

const CudaBackend* cuda() {
#if SPARSEFLOW_WITH_CUDA
  return &cuda_backend();
#else
  return nullptr;
#endif
}

namespace {

constexpr const char* kNotBuilt =
    "this build of SparseFlow has no CUDA backend (it was configured with -DSPARSEFLOW_CUDA=OFF, "
    "or "
    "nvcc was not found at configure time); rebuild with the CUDA toolkit on PATH to use a GPU, or "
    "run on the CPU (--device cpu)";

}  // namespace

std::string cuda_unavailable_reason() {
  const CudaBackend* c = cuda();
  if (!c) return kNotBuilt;
  try {
    return c->unavailable_reason();
  } catch (const std::exception& e) {
    return e.what();
  }
}

const CudaBackend& require_cuda(std::string_view what) {
  const std::string why = cuda_unavailable_reason();
  if (!why.empty()) fail(Status::NoDevice, "{} needs a CUDA GPU: {}.", what, why);
  return *cuda();
}

std::vector<BackendInfo> backends() {
  return {BackendInfo{"cpu", true, ""},
          BackendInfo{"cuda", cuda() != nullptr, cuda_unavailable_reason()}};
}

std::optional<BackendInfo> find_backend(std::string_view name) {
  for (auto& b : backends())
    if (b.name == name) return b;
  return std::nullopt;
}

}  // namespace sf::backend
