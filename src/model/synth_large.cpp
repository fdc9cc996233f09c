#include "model/synth_large.hpp"

#include <fmt/ranges.h>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/progress.hpp"
#include "format/hf_config.hpp"
#include "format/sf_file.hpp"
#include "model/convert.hpp"
#include "model/synth.hpp"

namespace sf::model {

namespace {

namespace fs = std::filesystem;
constexpr int64_t kPiece = int64_t(1)
                           << 25;  // elements generated per parallel piece (64 MiB of fp16)

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

// Elements p0 .. p0 + len - 1 (p0 a multiple of 4096) of tensor `name` into out, in dtype: uniform
// with standard deviation 0.02, norm scales (`scale`) 1 +- 0.1. Each 4096-element block has its own
// stream, so the values depend on neither the thread count nor how the tensor is cut into pieces.
void fill_values(const std::string& name, bool ln_scale, uint64_t seed, DType dtype, int64_t p0,
                 int64_t len, uint8_t* out) {
  const float a = 0.02f * std::sqrt(3.0f);  // uniform(-a, a) has standard deviation 0.02
  const uint64_t base = seed ^ fnv1a(name);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < (len + 4095) / 4096; ++b) {
    uint64_t st = base + uint64_t(p0 / 4096 + b) * 0x632be59bd9b4e019ull;
    const int64_t i1 = std::min(len, (b + 1) * 4096);
    for (int64_t i = b * 4096; i < i1; ++i) {
      const float u = float(splitmix(st) >> 40) * 0x1.0p-24f * 2.0f - 1.0f;  // [-1, 1)
      store_from_float(out, dtype, size_t(i), ln_scale ? 1.0f + 0.1f * u : a * u);
    }
  }
}

// A norm's scale: the one-dimensional weights (biases end in ".bias").
bool is_norm_scale(const arch::ExpectedTensor& t) {
  return t.shape.size() == 1 && t.name.ends_with(".weight");
}

const LargeShape& shape_or_fail(std::string_view name) {
  const LargeShape* s = find_large_shape(name);
  if (!s)
    fail(Status::InvalidArgument, "unknown architecture \"{}\"; expected one of {}", name,
         large_shape_names());
  return *s;
}

// What a synthetic checkpoint says of itself (config.json's sparseflow_synthetic; a .sf file's
// weights.synthetic_info, which `convert` carries over from the former).
nlohmann::json synthetic_info(std::string_view arch, uint64_t seed) {
  return {{"random_weights", true},
          {"arch", arch},
          {"seed", seed},
          {"note",
           "uniform random weights (std 0.02) made by `sparseflow synth`; not a trained model"}};
}

void check_synth_dtype(DType dtype) {
  if (dtype != DType::F16 && dtype != DType::BF16 && dtype != DType::F32)
    fail(Status::InvalidArgument, "synthetic weights are fp16, bf16 or fp32, not {}",
         dtype_name(dtype));
}

}  // namespace

const LargeShape* find_large_shape(std::string_view name) {
  for (const auto& s : kLargeShapes)
    if (s.name == name) return &s;
  return nullptr;
}

std::string large_shape_names() {
  std::string out;
  for (const auto& s : kLargeShapes) out += (out.empty() ? "" : ", ") + std::string(s.name);
  return out;
}

arch::ModelDesc large_config(const LargeShape& s) {
  arch::ModelDesc c = arch::preset(s.arch);
  c.vocab_size = s.vocab;
  c.hidden_size = s.hidden;
  c.num_hidden_layers = s.layers;
  c.num_attention_heads = s.heads;
  c.num_key_value_heads = s.kv_heads;
  c.ffn_dim = s.ffn;
  c.max_position_embeddings = s.max_positions;
  c.word_embed_proj_dim = s.hidden;
  c.tie_word_embeddings = s.tied;
  c.sliding_window = s.sliding_window;
  if (s.rope_theta > 0) c.rope.theta = s.rope_theta;
  if (s.norm_eps > 0) c.norm_eps = s.norm_eps;
  arch::complete(c);
  return c;
}

arch::ModelDesc write_large_hf(const std::string& dir_str, std::string_view arch, uint64_t seed,
                               DType dtype) {
  const LargeShape& s = shape_or_fail(arch);
  check_synth_dtype(dtype);
  const arch::ModelDesc c = large_config(s);
  const fs::path dir(dir_str);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(Status::Io, "cannot create directory '{}': {}", dir_str, ec.message());

  // The safetensors header is known from the shapes alone, so it goes first and the data follows.
  const auto tensors = arch::expected_tensors(c, !c.tie_word_embeddings);
  const size_t elem = dtype_size(dtype);
  nlohmann::ordered_json header;
  header["__metadata__"] = {
      {"format", "pt"},
      {"synthetic", fmt::format("random weights from `sparseflow synth --arch {} --seed {}`; "
                                "not a trained model",
                                arch, seed)}};
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    int64_t n = 1;
    for (auto d : t.shape) n *= d;
    header[t.name] = {{"dtype", std::string(dtype_name(dtype))},
                      {"shape", t.shape},
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
  Progress bar("synth", double(offset), "MiB", double(1 << 20));
  for (const auto& t : tensors) {
    int64_t n = 1;
    for (auto d : t.shape) n *= d;
    for (int64_t p0 = 0; p0 < n; p0 += kPiece) {
      const int64_t len = std::min(kPiece, n - p0);
      fill_values(t.name, is_norm_scale(t), seed, dtype, p0, len, buf.data());
      f.write(buf.data(), size_t(len) * elem);
      bar.add(double(len) * double(elem), t.name);
    }
  }
  f.commit();
  bar.finish();

  nlohmann::json cj = format::hf_config_json(c);
  cj["torch_dtype"] = dtype == DType::F32    ? "float32"
                      : dtype == DType::BF16 ? "bfloat16"
                                             : "float16";
  cj[c.arch == "opt" ? "init_std" : "initializer_range"] = 0.02;
  cj["sparseflow_synthetic"] = synthetic_info(arch, seed);
  write_text(dir / "config.json", cj.dump(2) + "\n");
  write_text(dir / "vocab.json", synth_vocab_json(c.vocab_size));
  write_text(dir / "merges.txt", builtin_merges_txt());
  return c;
}

LargeSfReport write_large_sf(const std::string& path, std::string_view arch, uint64_t seed,
                             DType dtype, bool sparse24) {
  const LargeShape& s = shape_or_fail(arch);
  check_synth_dtype(dtype);
  LargeSfReport rep;
  rep.config = large_config(s);
  const arch::ModelDesc& c = rep.config;
  const auto tensors = arch::expected_tensors(c, !c.tie_word_embeddings);
  const std::string vocab = synth_vocab_json(c.vocab_size), merges(builtin_merges_txt());
  std::vector<sff::EntrySpec> specs;
  for (const auto& t : tensors) {
    specs.push_back(sparse24 && t.prunable ? sff::s24_spec(t.name, dtype, t.shape[0], t.shape[1])
                                           : sff::dense_spec(t.name, dtype, t.shape));
    int64_t n = 1;
    for (auto d : t.shape) n *= d;
    rep.parameters += uint64_t(n);
  }
  specs.push_back(sff::bytes_spec("tokenizer.vocab.json", vocab.size()));
  specs.push_back(sff::bytes_spec("tokenizer.merges.txt", merges.size()));
  // What `convert` writes for this model (sparsity, tokenizer, dtype), and where it came from.
  const nlohmann::json meta = {
      {"sparseflow.converter_version", kConverterVersion},
      {"sparsity.pattern", sparse24 ? "2:4" : "none"},
      {"sparsity.method", sparse24 ? "magnitude" : "none"},
      {"sparsity.pruned",
       sparse24 ? fmt::format("{} of every decoder layer", fmt::join(c.layer_linears(), ", "))
                : ""},
      {"weights.dtype", std::string(dtype_name(dtype))},
      {"tokenizer.type", "gpt2-byte-level-bpe"},
      {"source.format", "synth"},
      {"source.path", fmt::format("sparseflow synth --arch {} --seed {} --format sf{}", arch, seed,
                                  sparse24 ? " --sparsity 2:4" : "")},
      {"weights.synthetic", true},
      {"weights.synthetic_info", synthetic_info(arch, seed)}};
  std::vector<std::string> features;
  if (sparse24) features.push_back("s24");
  sff::Writer w(path, c.arch, format::hf_config_json(c), meta, specs, features);
  const size_t elem = dtype_size(dtype);
  std::vector<uint8_t> buf;
  Progress bar("synth", double(rep.parameters) * double(elem), "MiB", double(1 << 20));
  for (const auto& t : tensors) {  // one tensor in memory at a time (the largest: the embeddings)
    int64_t n = 1;
    for (auto d : t.shape) n *= d;
    bar.add(double(n) * double(elem), t.name);
    buf.resize(size_t(n) * elem);
    for (int64_t p0 = 0; p0 < n; p0 += kPiece)
      fill_values(t.name, is_norm_scale(t), seed, dtype, p0, std::min(kPiece, n - p0),
                  buf.data() + size_t(p0) * elem);
    if (sparse24 && t.prunable) {  // magnitude 2:4, compressed as `convert --sparsity 2:4` does
      const Pruned p = prune_24(Tensor{dtype, t.shape, buf.data()}, dtype);
      w.write(p.compressed.values);
      w.write(
          {reinterpret_cast<const uint8_t*>(p.compressed.meta.data()), p.compressed.meta_bytes()});
    } else {
      w.write(buf);
    }
  }
  w.write({reinterpret_cast<const uint8_t*>(vocab.data()), vocab.size()});
  w.write({reinterpret_cast<const uint8_t*>(merges.data()), merges.size()});
  w.finish();
  bar.finish();
  rep.file_bytes = w.bytes_total();
  return rep;
}

}  // namespace sf::model
