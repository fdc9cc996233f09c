// Measured memory ceilings for the benchmarks' roofline fractions.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

namespace sf::cuda {

// HBM read bandwidth in TB/s: a kernel streaming `bytes` (well beyond L2) with 16-byte loads.
double measure_read_tbps(size_t bytes = size_t(1) << 30, cudaStream_t stream = nullptr);

}  // namespace sf::cuda
