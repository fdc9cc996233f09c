#include "model/synth.hpp"

#include <cmath>
#include <filesystem>
#include <map>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/temp_files.hpp"
#include "format/hf_config.hpp"
#include "format/safetensors.hpp"

namespace sf::model {

namespace {
#include "builtin_tokenizer.inc"

namespace fs = std::filesystem;

// splitmix64: a portable generator, so the same seed gives the same weights everywhere
// (std::normal_distribution is implementation-defined).
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return double((next() >> 11) + 1) * 0x1.0p-53; }  // (0, 1]
  // Box-Muller; one of the pair is dropped, which keeps the stream position simple.
  double normal() { return std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()); }
};

uint64_t name_hash(std::string_view s) {  // FNV-1a: each tensor's stream depends on its name only
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

void write_atomic(const fs::path& p, std::string_view text) {
  AtomicFile f(p.string());
  f.write(text.data(), text.size());
  f.commit();
}

}  // namespace

std::string_view builtin_vocab_json() {
  return {reinterpret_cast<const char*>(kBuiltinVocabJson), size_t(kBuiltinVocabJson_size)};
}
std::string_view builtin_merges_txt() {
  return {reinterpret_cast<const char*>(kBuiltinMergesTxt), size_t(kBuiltinMergesTxt_size)};
}

std::string synth_vocab_json(int64_t vocab_size) {
  nlohmann::ordered_json v = nlohmann::ordered_json::parse(builtin_vocab_json());
  std::vector<bool> have(size_t(std::max<int64_t>(vocab_size, 0)), false);
  for (const auto& [tok, id] : v.items())
    if (const int64_t i = id.get<int64_t>(); i >= 0 && i < vocab_size) have[size_t(i)] = true;
  for (int64_t i = 0; i < vocab_size; ++i)
    if (!have[size_t(i)]) v[fmt::format("<|synth_{}|>", i)] = i;
  return v.dump();
}

const SynthShape& find_synth_shape(std::string_view name) {
  for (const auto& s : kSynthShapes)
    if (s.name == name) return s;
  std::string known;
  for (const auto& s : kSynthShapes) known += (known.empty() ? "" : ", ") + std::string(s.name);
  fail(Status::InvalidArgument, "unknown synthetic architecture \"{}\"; known: {}", name, known);
}

arch::ModelDesc synth_config(const SynthOptions& o) {
  const SynthShape& s = find_synth_shape(o.arch);
  arch::ModelDesc c = arch::preset("opt");
  if (s.vocab > 0) {
    c.vocab_size = s.vocab;
  } else {
    const auto v = nlohmann::json::parse(builtin_vocab_json());
    int64_t max_id = -1;
    for (const auto& [tok, id] : v.items()) max_id = std::max<int64_t>(max_id, id.get<int64_t>());
    c.vocab_size = max_id + 1;
  }
  c.hidden_size = s.hidden;
  c.num_hidden_layers = s.layers;
  c.ffn_dim = s.ffn;
  c.num_attention_heads = s.heads;
  c.max_position_embeddings = s.max_positions;
  c.word_embed_proj_dim = o.word_embed_proj_dim.value_or(s.word_embed_proj_dim);
  c.pre_norm = o.pre_norm.value_or(s.pre_norm);
  c.tie_word_embeddings = o.tie_word_embeddings;
  arch::complete(c);
  return c;
}

arch::ModelDesc write_tiny_opt(const std::string& dir_str, const SynthOptions& o) {
  if (!dtype_is_float(o.dtype) || o.dtype == DType::F64)
    fail(Status::InvalidArgument, "synthetic weights are fp16, bf16 or fp32, not {}", dtype_name(o.dtype));
  if (o.shards < 1 || o.shards > 99999)
    fail(Status::InvalidArgument, "shards must be 1 to 99999, found {}", o.shards);
  const arch::ModelDesc c = synth_config(o);
  const fs::path dir(dir_str);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(Status::Io, "cannot create directory '{}': {}", dir_str, ec.message());

  // Weights: N(0, std); layer-norm scales around 1 so that a swapped weight/bias shows in tests.
  const auto expected = arch::expected_tensors(c, !c.tie_word_embeddings);
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<st::TensorToWrite> tensors;
  bufs.reserve(expected.size());
  for (const auto& e : expected) {
    Rng rng{o.seed ^ name_hash(e.name)};
    int64_t n = 1;
    for (auto d : e.shape) n *= d;
    bufs.emplace_back(size_t(n) * dtype_size(o.dtype));
    const bool ln_scale = e.name.find("layer_norm.weight") != std::string::npos;
    for (int64_t i = 0; i < n; ++i) {
      const double z = rng.normal();
      store_from_float(bufs.back().data(), o.dtype, size_t(i), float(ln_scale ? 1.0 + 0.1 * z : o.init_std * z));
    }
    std::string name = e.name;
    if (!o.model_prefix && name.rfind("model.", 0) == 0) name = name.substr(6);
    tensors.push_back({name, o.dtype, e.shape, bufs.back()});
  }

  const std::map<std::string, std::string> meta = {
      {"format", "pt"},
      {"synthetic", fmt::format("random weights from `sparseflow synth --arch {} --seed {}`; not a trained model",
                                o.arch, o.seed)}};
  if (o.shards == 1) {
    st::write_file((dir / "model.safetensors").string(), tensors, meta);
  } else {
    nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
    uint64_t total = 0;
    const size_t per = (tensors.size() + size_t(o.shards) - 1) / size_t(o.shards);
    for (int s = 0; s < o.shards; ++s) {
      const std::string fname = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, o.shards);
      const size_t b = std::min(tensors.size(), size_t(s) * per), e = std::min(tensors.size(), b + per);
      std::vector<st::TensorToWrite> part(tensors.begin() + b, tensors.begin() + e);
      for (const auto& t : part) {
        index["weight_map"][t.name] = fname;
        total += t.data.size();
      }
      st::write_file((dir / fname).string(), part, meta);
    }
    index["metadata"]["total_size"] = total;
    write_atomic(dir / "model.safetensors.index.json", index.dump(2) + "\n");
  }

  nlohmann::json cj = format::hf_config_json(c);
  if (!o.model_prefix) cj["architectures"] = {"OPTModel"};
  cj["torch_dtype"] = o.dtype == DType::F32 ? "float32" : o.dtype == DType::BF16 ? "bfloat16" : "float16";
  cj["init_std"] = o.init_std;
  cj["sparseflow_synthetic"] = {{"random_weights", true}, {"arch", o.arch}, {"seed", o.seed},
                                {"note", "deterministic random weights made by `sparseflow synth`; not a trained model"}};
  write_atomic(dir / "config.json", cj.dump(2) + "\n");
  write_atomic(dir / "vocab.json", builtin_vocab_json());
  write_atomic(dir / "merges.txt", builtin_merges_txt());
  return c;
}

ConvertReport write_tiny_opt_sf(const std::string& path, const SynthOptions& o,
                                const ConvertOptions& co) {
  const ScratchDir scratch(path);
  write_tiny_opt(scratch.path(), o);
  const auto m = Model::open(scratch.path());
  return convert_to_sf(*m, path, co);
}

}  // namespace sf::model
