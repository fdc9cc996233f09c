#include "model/synth_large.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "format/hf_config.hpp"
#include "model/synth.hpp"

namespace sf::model {

namespace {

namespace fs = std::filesystem;
constexpr int64_t kPiece = int64_t(1) << 25;  // elements generated per parallel piece (64 MiB of fp16)

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ uint8_t(c)) * 1099511628211ull;
  return h;
}

void write_text(const fs::path& p, std::string_view text) {
  AtomicFile f(p.string());
  f.write(text.data(), text.size());
  f.commit();
}

}  // namespace

const LargeOptShape* find_large_opt_shape(std::string_view name) {
  for (const auto& s : kLargeOptShapes)
    if (s.name == name) return &s;
  return nullptr;
}

OptConfig write_large_opt_hf(const std::string& dir_str, std::string_view arch, uint64_t seed, DType dtype) {
  const LargeOptShape* s = find_large_opt_shape(arch);
  if (!s) fail(Status::InvalidArgument, "unknown OPT architecture \"{}\"", arch);
  if (dtype != DType::F16 && dtype != DType::BF16 && dtype != DType::F32)
    fail(Status::InvalidArgument, "synthetic weights are fp16, bf16 or fp32, not {}", dtype_name(dtype));
  OptConfig c;
  c.vocab_size = 50272;
  c.hidden_size = s->hidden;
  c.num_hidden_layers = s->layers;
  c.ffn_dim = s->ffn;
  c.num_attention_heads = s->heads;
  c.max_position_embeddings = 2048;
  c.word_embed_proj_dim = s->hidden;
  const fs::path dir(dir_str);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(Status::Io, "cannot create directory '{}': {}", dir_str, ec.message());

  // The safetensors header is known from the shapes alone, so it goes first and the data follows.
  const auto tensors = opt_expected_tensors(c, /*untied_lm_head=*/false);
  const size_t elem = dtype_size(dtype);
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"},
                            {"synthetic", fmt::format("random weights from `sparseflow synth --arch {} --seed {}`; "
                                                      "not a trained model", arch, seed)}};
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    int64_t n = 1;
    for (auto d : t.shape) n *= d;
    header[t.name] = {{"dtype", std::string(dtype_name(dtype))}, {"shape", t.shape},
                      {"data_offsets", {offset, offset + uint64_t(n) * elem}}};
    offset += uint64_t(n) * elem;
  }
  std::string htext = header.dump();
  htext.append((8 - htext.size() % 8) % 8, ' ');
  const uint64_t hlen = htext.size();
  AtomicFile f((dir / "model.safetensors").string());
  uint8_t le[8];
  for (int i = 0; i < 8; ++i) le[i] = uint8_t(hlen >> (8 * i));
  f.write(le, 8);
  f.write(htext.data(), htext.size());

  std::vector<uint8_t> buf(size_t(kPiece) * elem);
  const float a = 0.02f * std::sqrt(3.0f);  // uniform(-a, a) has standard deviation 0.02
  for (const auto& t : tensors) {
    int64_t n = 1;
    for (auto d : t.shape) n *= d;
    const bool ln_scale = t.name.find("layer_norm.weight") != std::string::npos;
    const uint64_t base = seed ^ fnv1a(t.name);
    for (int64_t p0 = 0; p0 < n; p0 += kPiece) {
      const int64_t len = std::min(kPiece, n - p0);
      // Each 4096-element block has its own stream: the values do not depend on the thread count.
#pragma omp parallel for schedule(static)
      for (int64_t b = 0; b < (len + 4095) / 4096; ++b) {
        uint64_t st = base + uint64_t(p0 / 4096 + b) * 0x632be59bd9b4e019ull;
        const int64_t i1 = std::min(len, (b + 1) * 4096);
        for (int64_t i = b * 4096; i < i1; ++i) {
          const float u = float(splitmix(st) >> 40) * 0x1.0p-24f * 2.0f - 1.0f;  // [-1, 1)
          store_from_float(buf.data(), dtype, size_t(i), ln_scale ? 1.0f + 0.1f * u : a * u);
        }
      }
      f.write(buf.data(), size_t(len) * elem);
    }
  }
  f.commit();

  nlohmann::json cj = format::opt_config_to_json(c);
  cj["torch_dtype"] = dtype == DType::F32 ? "float32" : dtype == DType::BF16 ? "bfloat16" : "float16";
  cj["init_std"] = 0.02;
  cj["sparseflow_synthetic"] = {{"random_weights", true}, {"arch", arch}, {"seed", seed},
                                {"note", "uniform random weights (std 0.02) made by `sparseflow synth`; not a trained "
                                         "model"}};
  write_text(dir / "config.json", cj.dump(2) + "\n");
  write_text(dir / "vocab.json", builtin_vocab_json());
  write_text(dir / "merges.txt", builtin_merges_txt());
  return c;
}

}  // namespace sf::model
