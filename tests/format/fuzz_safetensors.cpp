// libFuzzer target for the safetensors header parser (configure with -DSPARSEFLOW_FUZZ=ON and
// CC=clang CXX=clang++; run: tests/format/fuzz_safetensors -max_len=4096 CORPUS_DIR).
#include <cstddef>
#include <cstdint>

#include "core/error.hpp"
#include "format/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto f = sf::st::File::from_memory({data, size}, "fuzz");
    size_t sum = 0;
    for (const auto& t : f.tensors())
      for (uint8_t byte : f.data(t)) sum += byte;  // every span must be readable
    (void)sum;
  } catch (const sf::Error&) {
  }
  return 0;
}
