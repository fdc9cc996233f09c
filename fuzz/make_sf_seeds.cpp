// Writes the seed corpus of fuzz_sf_file: small valid .sf files made by the real writer, one per
// feature the reader checks (dense tensors of several dtypes, a 2:4 tensor, tokenizer bytes,
// metadata). Usage: fuzz_make_sf_seeds OUT_DIR (the committed seeds are in fuzz/corpus/fuzz_sf_file).
#include <cstdio>
#include <string>
#include <vector>

#include "format/sf_file.hpp"

namespace {

void write(const std::string& path, std::vector<sf::sff::EntrySpec> specs, nlohmann::json config,
           std::vector<std::string> requires_features = {}) {
  sf::sff::Writer w(path, "opt", std::move(config), nlohmann::json{{"note", "fuzz seed"}}, specs,
                    std::move(requires_features));
  for (const auto& s : specs) {
    for (const auto& [role, size] : s.parts) {
      std::vector<uint8_t> bytes(size);
      for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(i * 7 + role.size());
      w.write(bytes);
    }
  }
  w.finish();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const nlohmann::json config = {{"model_type", "opt"}, {"hidden_size", 8}, {"num_hidden_layers", 1}};
  write(dir + "/empty.sf", {}, config);
  write(dir + "/dense.sf",
        {sf::sff::dense_spec("w", sf::DType::F16, {4, 8}), sf::sff::dense_spec("b", sf::DType::F32, {4}),
         sf::sff::dense_spec("scalar", sf::DType::BF16, {})},
        config);
  write(dir + "/s24.sf", {sf::sff::s24_spec("fc1.weight", sf::DType::F16, 16, 32)}, config, {"s24"});
  write(dir + "/tokenizer.sf", {sf::sff::bytes_spec("tokenizer.vocab_json", 40),
                                sf::sff::bytes_spec("tokenizer.merges_txt", 12)}, config);
  return 0;
}
