// sf::sff::File::from_memory on arbitrary bytes, twice: without checksum verification (so that
// mutated files get past the checksums into the table and layout checks) and with it. Every part
// of every accepted entry is read in full.
#include <span>

#include "core/error.hpp"
#include "format/sf_file.hpp"
#include "harness.hpp"

namespace {

void open_and_touch(std::span<const uint8_t> bytes, bool verify) {
  try {
    sf::sff::ReadOptions opt;
    opt.verify_checksums = verify;
    auto file = sf::sff::File::from_memory(bytes, "fuzz.sf", opt);
    SF_FUZZ_CHECK(file.data_start() <= file.file_size());
    volatile uint8_t sink = 0;
    for (const auto& e : file.entries()) {
      SF_FUZZ_CHECK(file.find(e.name) != nullptr);
      for (const auto& p : e.parts) {
        const auto d = file.data(p);
        SF_FUZZ_CHECK(d.size() == p.size);
        sink = sink ^ sf_fuzz_touch(d.data(), d.size());
      }
    }
    (void)sink;
    if (!verify) file.verify_checksums();  // may throw Error(Format): fine
  } catch (const sf::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  open_and_touch(bytes, false);
  open_and_touch(bytes, true);
  return 0;
}
