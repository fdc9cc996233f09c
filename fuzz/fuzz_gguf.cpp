// sf::format::parse_gguf on arbitrary bytes, then every metadata accessor and every tensor read
// in full and dequantized, so that a lying offset or length shows up as an ASan report.
#include <span>
#include <vector>

#include "core/error.hpp"
#include "format/gguf.hpp"
#include "harness.hpp"

namespace {

// Calls every accessor: each either returns or throws sf::Error for a value of another kind.
template <typename F>
void try_access(F&& f) {
  try {
    f();
  } catch (const sf::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sf::format;
  try {
    const GgufFile file = parse_gguf(std::span<const uint8_t>(data, size), "<fuzz>");
    volatile size_t sink = 0;
    for (const GgufValue& v : file.metadata()) {
      SF_FUZZ_CHECK(file.find(v.key()) == &v);
      try_access([&] { sink = sink + size_t(v.as_int()); });
      try_access([&] { sink = sink + size_t(v.as_float() != 0); });
      try_access([&] { sink = sink + v.as_bool(); });
      try_access([&] { sink = sink + v.as_string().size(); });
      try_access([&] { sink = sink + v.as_string_array().size(); });
      try_access([&] { sink = sink + v.as_int_array().size(); });
      try_access([&] { sink = sink + v.as_float_array().size(); });
    }
    try_access([&] { sink = sink + file.architecture().size(); });
    SF_FUZZ_CHECK(file.data_start() % file.alignment() == 0);
    std::vector<float> out;
    for (const GgufTensorInfo& t : file.tensors()) {
      const GgufTypeInfo& info = gguf_type_info(t.type);
      SF_FUZZ_CHECK(file.find_tensor(t.name) == &t);
      SF_FUZZ_CHECK(t.offset % file.alignment() == 0);
      SF_FUZZ_CHECK(t.numel % info.block_size == 0);
      const auto bytes = file.tensor_bytes(t);
      SF_FUZZ_CHECK(bytes.size() == uint64_t(t.numel / info.block_size * info.block_bytes));
      sink = sink ^ sf_fuzz_touch(bytes.data(), bytes.size());
      // Every weight takes at least 9/16 byte of the file (Q4_0) and tensors do not overlap, so
      // all outputs together stay within a few times the input size.
      out.assign(size_t(t.numel), 0.0f);
      file.dequantize(t, out);
    }
    (void)sink;
  } catch (const sf::Error&) {
    // Refusing a malformed file is the expected outcome.
  }
  return 0;
}
