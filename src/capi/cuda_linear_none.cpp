// The sf_cuda_* functions in a build without the CUDA backend: they link, and every call that
// returns a status says why the GPU path is unavailable (SF_ERR_NO_DEVICE). No handle can exist.
#include "capi/capi_internal.hpp"
#include "kernels/cuda/cuda_api.hpp"

struct sf_cuda_linear {};

namespace {

[[noreturn]] void no_backend() {
  throw sf::Error(sf::Status::NoDevice, sf::cuda::unavailable_reason());
}

}  // namespace

extern "C" {

SF_API sf_status sf_cuda_check(void) {
  return sf::capi::guard("sf_cuda_check", [] { no_backend(); });
}

SF_API sf_status sf_cuda_linear_create(const sf_sparse24*, int, void*, sf_cuda_linear** out) {
  if (out) *out = nullptr;
  return sf::capi::guard("sf_cuda_linear_create", [] { no_backend(); });
}

SF_API sf_status sf_cuda_linear_create_dense(const void*, sf_dtype, int64_t, int64_t, int,
                                             sf_prune_method, const float*, int, void*,
                                             sf_cuda_linear** out) {
  if (out) *out = nullptr;
  return sf::capi::guard("sf_cuda_linear_create_dense", [] { no_backend(); });
}

SF_API void sf_cuda_linear_free(sf_cuda_linear*) {}

SF_API sf_status sf_cuda_linear_info(const sf_cuda_linear*, int64_t*, int64_t*, sf_dtype*, int*,
                                     size_t*) {
  return sf::capi::guard("sf_cuda_linear_info", [] { no_backend(); });
}

SF_API sf_status sf_cuda_linear_forward(const sf_cuda_linear*, const void*, sf_dtype, int64_t,
                                        void*, sf_dtype, const void*, sf_dtype, sf_activation,
                                        const void*, sf_dtype, void*) {
  return sf::capi::guard("sf_cuda_linear_forward", [] { no_backend(); });
}

SF_API sf_status sf_cuda_linear_decompress(const sf_cuda_linear*, void*, void*) {
  return sf::capi::guard("sf_cuda_linear_decompress", [] { no_backend(); });
}

SF_API void sf_cuda_release_workspaces(void) {}

}  // extern "C"
