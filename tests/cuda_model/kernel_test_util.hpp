// Shared by the GPU kernel tests of tests/cuda_model (layer norm, prefill attention): the skip with
// the reason when no GPU is present, and a device buffer freed on scope exit.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <string>

#include "kernels/cuda/cuda_api.hpp"

#define SKIP_WITHOUT_GPU()                                                                             \
  do {                                                                                                 \
    if (const std::string why = ::sf::cuda::unavailable_reason(); !why.empty()) GTEST_SKIP() << why; \
  } while (0)

namespace sf::cuda::model::test {

struct Dev {
  void* p = nullptr;
  explicit Dev(size_t bytes) { EXPECT_EQ(cudaMalloc(&p, bytes ? bytes : 1), cudaSuccess); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  float* f() const { return static_cast<float*>(p); }
};

}  // namespace sf::cuda::model::test
