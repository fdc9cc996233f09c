// sf::pt::Checkpoint::from_memory on arbitrary bytes (zip directory, restricted unpickler, tensor
// extents), then every tensor's data is read in full, so that an extent past its storage or an
// entry past the buffer shows up as an ASan report.
#include <span>

#include "core/error.hpp"
#include "format/torch_checkpoint.hpp"
#include "harness.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto c = sf::pt::Checkpoint::from_memory(std::span<const uint8_t>(data, size));
    volatile uint8_t sink = 0;
    for (const auto& t : c.tensors()) {
      SF_FUZZ_CHECK(t.numel() >= 0);
      SF_FUZZ_CHECK(static_cast<uint64_t>(t.numel()) * sf::dtype_size(t.dtype) == t.data.size());
      SF_FUZZ_CHECK(c.find(t.name) != nullptr);
      sink = sink ^ sf_fuzz_touch(t.data.data(), t.data.size());
    }
    (void)sink;
  } catch (const sf::Error&) {
    // Refusing a malformed or malicious file is the expected outcome.
  }
  return 0;
}
