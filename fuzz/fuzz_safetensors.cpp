// sf::st::File::from_memory on arbitrary bytes, then every tensor's data is read in full, so that a
// header whose offsets point outside the buffer shows up as an ASan report.
#include <span>

#include "core/error.hpp"
#include "format/safetensors.hpp"
#include "harness.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto file = sf::st::File::from_memory(std::span<const uint8_t>(data, size));
    volatile uint8_t sink = 0;
    for (const auto& t : file.tensors()) {
      const auto bytes = file.data(t);
      SF_FUZZ_CHECK(bytes.size() == t.end - t.begin);
      SF_FUZZ_CHECK(t.numel() >= 0);
      SF_FUZZ_CHECK(static_cast<uint64_t>(t.numel()) * sf::dtype_size(t.dtype) == bytes.size());
      SF_FUZZ_CHECK(file.find(t.name) != nullptr);
      sink = sink ^ sf_fuzz_touch(bytes.data(), bytes.size());
    }
    for (const auto& [k, v] : file.metadata()) sink = sink ^ static_cast<uint8_t>(k.size() + v.size());
    (void)sink;
  } catch (const sf::Error&) {
    // Refusing a malformed file is the expected outcome.
  }
  return 0;
}
