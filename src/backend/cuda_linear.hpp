// The CUDA backend's linear layer for the C ABI (cuda_linear.cpp); cuda_backend.cpp exposes these
// through CudaBackend. CUDA builds only.
#pragma once
#include <memory>

#include "backend/backends.hpp"

namespace sf::backend {

int resolve_linear_device(const char* fn, int device);
std::unique_ptr<CudaLinear> upload_linear(const char* fn, const s24::Compressed& c, int device,
                                          void* stream);
void download(const char* fn, const char* what, void* dst, const void* src, size_t bytes,
              int device, void* stream);
void release_linear_workspaces();

}  // namespace sf::backend
