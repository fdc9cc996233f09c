// The GEMM benchmark and tuner of the CUDA backend. Plain C++ types only, so this header compiles
// without the CUDA toolkit; the functions exist only in builds with the CUDA backend, and code that
// builds either way calls them through backend::cuda() (src/backend/backends.hpp).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.hpp"

namespace sf::cuda {

// Empty when a device can run the 2:4 kernels (sm_80 or newer); otherwise a sentence a user can
// act on ("no CUDA device is visible", "the GPU has compute capability 7.x").
std::string unavailable_reason();

struct GemmBenchOptions {
  int64_t n = 4096, k = 4096;                       // W is [n, k]
  std::vector<int64_t> batches = {1, 2, 4, 8, 16, 32, 64, 256, 2048, 8192};  // M values
  DType dtype = DType::F16;
  int warmup = 10, iters = 100;
};

// Runs, in this process and per M: cuBLAS dense, cuSPARSELt (when built with it) and SparseFlow's
// 2:4 kernel on the same random inputs, after checking SparseFlow's output against cuBLAS on the
// pruned weights. Returns {"gpu": ..., "rows": [{"m":..,"dense_ms":..,...}, ...], ...}.
// Throws sf::Error(NoDevice) with unavailable_reason() when the GPU path cannot run.
nlohmann::json benchmark_gemm(const GemmBenchOptions& opts);

struct TuneOptions {
  std::vector<std::pair<int64_t, int64_t>> sizes = {{4096, 4096}};  // [N, K] of each weight
  std::vector<int64_t> batches = {1, 8, 16, 32, 64, 256, 2048};      // M values measured
  DType dtype = DType::F16;
  std::string output;  // empty: tune_cache_path() for this GPU
  int iters = 50;
};

// Measures, per size and M, every SparseFlow configuration (decode kernel warps x splits, the
// dense fallback), cuSPARSELt when built and cuBLAS dense; writes the winners to the tuning cache
// (merged with entries already there for other sizes) and returns {"path":..., "entries": [...],
// "measurements": [...]}. Throws sf::Error(NoDevice) when the GPU path cannot run.
nlohmann::json tune_gemm(const TuneOptions& opts);

}  // namespace sf::cuda
