// Weight ranges a kernel asks the GPU to prefetch into L2 while HBM would otherwise idle (decode:
// a layer norm, attention, the tail of a GEMV), so the next product's weights arrive meanwhile and
// are read from L2 (cp.async.bulk.prefetch.L2, sm_90+; nothing on older GPUs; l2_prefetch.cuh). A
// hint: results never depend on it. Addresses 16-byte aligned; sizes are rounded down to 16 bytes.
#pragma once
#include <cstddef>

namespace sf::cuda {

struct L2Prefetch {
  static constexpr int kRanges = 3;
  const void* ptr[kRanges] = {};
  size_t bytes[kRanges] = {};
};

}  // namespace sf::cuda
