// CPU benchmark of the 2:4 GEMM against OpenBLAS dense on the same pruned weights.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "core/dtype.hpp"

namespace sf::s24 {

// W is [n, k] random, magnitude-pruned to 2:4; x is [m, k] random, for each m in batches.
// Per m: OpenBLAS dense (cblas_sgemm on fp32 copies; cblas_sbgemm for BF16 when the library
// exports it), then SparseFlow gemm_cpu, median over `iters` timed runs after warmup, after
// checking SparseFlow's output against the dense library's (rel_err = ||y_s - y_d|| / ||y_d||).
// Returns {"device":"cpu","cpu":..,"threads":..,"isa":..,"dense_lib":..,"n":..,"k":..,
//          "dtype":..,"rows":[{"m","dense_ms","sparse_ms","speedup","dense_gbps","sparse_gbps",
//          "dense_gflops","sparse_gflops","rel_err"}]}.
// Throws Error(InvalidArgument) for a dtype other than F32/F16/BF16, n or k <= 0, k % 4 != 0,
// or iters < 1.
nlohmann::json benchmark_gemm_cpu(int64_t n, int64_t k, const std::vector<int64_t>& batches,
                                  DType dtype, int iters);

}  // namespace sf::s24
