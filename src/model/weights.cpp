// Model::open: a `.sf` file (views into its mmap) or a Hugging Face OPT checkpoint directory
// (views into the safetensors mmaps, converted or pruned in memory when asked).
#include "model/weights.hpp"

#include <cmath>
#include <filesystem>
#include <optional>
#include <set>

#include <fmt/ranges.h>

#include "core/error.hpp"
#include "core/input_file.hpp"
#include "format/hf_config.hpp"
#include "format/neuron_bundles.hpp"
#include "format/safetensors.hpp"
#include "format/sf_file.hpp"
#include "format/torch_checkpoint.hpp"
#include "model/gguf_model.hpp"

namespace sf::model {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kVocabTensor = "tokenizer.vocab.json";
constexpr const char* kMergesTensor = "tokenizer.merges.txt";
constexpr const char* kTokenizerJsonTensor = "tokenizer.json";
constexpr const char* kChatTemplateTensor = "tokenizer.chat_template";
constexpr const char* kTokenizerConfigTensor = "tokenizer.config.json";

std::string shape_str(const std::vector<int64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

// The checkpoint's name of a tensor -> the description's: HF saves the base model's tensors
// without the causal-LM wrapper's prefix when it saves the base class (OPTModel: "decoder.*",
// LlamaModel: "layers.*", GPT2Model: "h.*").
std::string normalize_name(const arch::ModelDesc& c, const std::string& n) {
  const std::string root =
      c.names.embed.substr(0, c.names.embed.find('.') + 1);  // "model." / "transformer."
  if (n.rfind(root, 0) == 0 || n.rfind("lm_head.", 0) == 0) return n;
  if (c.arch == "opt") return n.rfind("decoder.", 0) == 0 ? "model." + n : n;
  return root + n;
}

// Buffers some exports save beside the parameters (rotary tables, GPT-2's causal mask): derived
// from the config, never read.
bool is_derived_buffer(const arch::ModelDesc& c, const std::string& n) {
  auto ends = [&](std::string_view s) {
    return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0;
  };
  if (c.positions == arch::Positions::Rotary && ends(".rotary_emb.inv_freq")) return true;
  return c.arch == "gpt2" && (ends(".attn.bias") || ends(".attn.masked_bias"));
}

// GPT-2's Conv1D layers store [in, out]; the engines read linear layers as [out, in], and q, k, v
// as three of them. Rewrites the transformer.h.N.attn.c_attn / c_proj and mlp.c_fc / c_proj
// entries of `by_name` in place, into buffers kept alive by `keep`.
void gpt2_to_linear(const arch::ModelDesc& c, std::map<std::string, Tensor>& by_name,
                    std::vector<std::shared_ptr<void>>& keep) {
  const int64_t H = c.hidden_size;
  auto transposed = [&](const Tensor& t, int64_t col0, int64_t cols) {
    // t is [in, out_total]; returns columns [col0, col0 + cols) as [cols, in].
    const int64_t in = t.shape[0], total = t.shape[1];
    const size_t e = dtype_size(t.dtype);
    auto buf = std::make_shared<std::vector<uint8_t>>(size_t(in * cols) * e);
    const auto* src = static_cast<const uint8_t*>(t.data);
    for (int64_t o = 0; o < cols; ++o)
      for (int64_t i = 0; i < in; ++i)
        std::memcpy(buf->data() + size_t(o * in + i) * e, src + size_t(i * total + col0 + o) * e,
                    e);
    keep.push_back(buf);
    return Tensor{t.dtype, {cols, in}, buf->data()};
  };
  auto slice = [&](const Tensor& b, int64_t first, int64_t n) {
    const size_t e = dtype_size(b.dtype);
    return Tensor{b.dtype, {n}, static_cast<const uint8_t*>(b.data) + size_t(first) * e};
  };
  auto conv = [&](const std::string& name, int64_t in, int64_t out) -> const Tensor& {
    const auto it = by_name.find(name);
    if (it == by_name.end())
      fail(Status::NotFound, "the GPT-2 checkpoint has no tensor '{}'", name);
    if (it->second.shape != std::vector<int64_t>{in, out})
      fail(Status::Format,
           "GPT-2 tensor '{}' has shape {}, expected the Conv1D shape [{}, {}] from the config",
           name, shape_str(it->second.shape), in, out);
    return it->second;
  };
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = c.layer_prefix(l);
    const Tensor qkv = conv(p + "attn.c_attn.weight", H, 3 * H);
    const char* parts[] = {"attn.q_proj", "attn.k_proj", "attn.v_proj"};
    for (int64_t k = 0; k < 3; ++k) by_name[p + parts[k] + ".weight"] = transposed(qkv, k * H, H);
    by_name.erase(p + "attn.c_attn.weight");
    if (const auto b = by_name.find(p + "attn.c_attn.bias"); b != by_name.end()) {
      const Tensor bias = b->second;
      if (bias.shape != std::vector<int64_t>{3 * H})
        fail(Status::Format, "GPT-2 tensor '{}attn.c_attn.bias' has shape {}, expected [{}]", p,
             shape_str(bias.shape), 3 * H);
      for (int64_t k = 0; k < 3; ++k) by_name[p + parts[k] + ".bias"] = slice(bias, k * H, H);
      by_name.erase(b);
    }
    by_name[p + "attn.c_proj.weight"] = transposed(conv(p + "attn.c_proj.weight", H, H), 0, H);
    by_name[p + "mlp.c_fc.weight"] =
        transposed(conv(p + "mlp.c_fc.weight", H, c.ffn_dim), 0, c.ffn_dim);
    by_name[p + "mlp.c_proj.weight"] =
        transposed(conv(p + "mlp.c_proj.weight", c.ffn_dim, H), 0, H);
  }
}

// A special-token entry of tokenizer_config.json: a string, or an AddedToken object.
std::string token_string(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string())
    return j["content"].get<std::string>();
  return {};
}

bool is_float16_or_32(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

std::string list_some(const std::vector<std::string>& names, size_t max = 12) {
  std::vector<std::string> head(names.begin(), names.begin() + std::min(names.size(), max));
  std::string s = fmt::format("{}", fmt::join(head, ", "));
  if (names.size() > max) s += fmt::format(" and {} more", names.size() - max);
  return s;
}

// N of "<prefix>N.<rest>"; nullopt for other names.
std::optional<int64_t> layer_after(const std::string& name, const std::string& prefix) {
  if (name.rfind(prefix, 0) != 0) return std::nullopt;
  const size_t dot = name.find('.', prefix.size());
  const std::string num = name.substr(
      prefix.size(), dot == std::string::npos ? std::string::npos : dot - prefix.size());
  if (num.empty() || num.size() > 9 || num.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return std::stoll(num);
}

// What the config says the model is, for messages about tensors that do not fit it.
std::string describe_config(const arch::ModelDesc& c) {
  return fmt::format(
      "num_hidden_layers {} ({} to {}), {}, {}, {}, {}", c.num_hidden_layers, c.layer_prefix(0),
      c.layer_prefix(c.num_hidden_layers - 1), arch::summary(c),
      c.has_bias() ? "with biases" : "no biases", c.final_norm ? "a final norm" : "no final norm",
      c.tie_word_embeddings ? "lm_head tied to the token embedding" : "an untied lm_head.weight");
}

// "model.layers." of "model.layers.{}.": the part of the layer prefix before the index.
std::string layers_stem(const arch::ModelDesc& c) {
  return c.names.layer.substr(0, c.names.layer.find("{}"));
}

// Refuses a set of tensors that is not the model the config describes: tensors it implies that
// are absent (Error(NotFound)), and tensors nothing reads (Error(Format)), which would otherwise be
// dropped without a word (a config that says 1 layer over weights of 2 converts to a 1-layer
// model).
void check_tensor_set(const arch::ModelDesc& c, const std::vector<std::string>& missing,
                      const std::vector<std::string>& unexpected,
                      const std::vector<std::string>& present, const std::string& where,
                      const std::string& config_name) {
  if (missing.empty() && unexpected.empty()) return;
  std::string msg = fmt::format("{}: the tensors are not the model {} describes ({}).", where,
                                config_name, describe_config(c));
  if (!missing.empty())
    msg += fmt::format(" {} tensor(s) it implies are missing: {}.", missing.size(),
                       list_some(missing));
  if (!unexpected.empty())
    msg += fmt::format(" {} tensor(s) are not part of that model: {}.", unexpected.size(),
                       list_some(unexpected));
  int64_t layers = 0;
  for (const auto& n : present)
    if (const auto l = layer_after(n, layers_stem(c))) layers = std::max(layers, *l + 1);
  if (layers != c.num_hidden_layers)
    msg += fmt::format(" The weights hold decoder layers 0 to {} ({} layers) where {} says {}.",
                       layers - 1, layers, config_name, c.num_hidden_layers);
  msg += fmt::format(" Check that every shard is present and that {} belongs to these weights.",
                     config_name);
  fail(missing.empty() ? Status::Format : Status::NotFound, "{}", msg);
}

}  // namespace

std::vector<uint8_t> convert_elements(const Tensor& t, DType dtype) {
  if (!is_float16_or_32(t.dtype) && t.dtype != DType::F64)
    fail(Status::UnsupportedShape, "cannot convert a {} tensor to {}: only float tensors convert",
         dtype_name(t.dtype), dtype_name(dtype));
  const int64_t n = t.numel();
  std::vector<uint8_t> out(size_t(n) * dtype_size(dtype));
  if (t.dtype == dtype) {
    std::memcpy(out.data(), t.data, out.size());
    return out;
  }
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i)
    store_from_float(out.data(), dtype, size_t(i), load_as_float(t.data, t.dtype, size_t(i)));
  return out;
}

Pruned prune_24(const Tensor& w, DType dtype, std::span<const float> act_norm) {
  if (w.shape.size() != 2)
    fail(Status::UnsupportedShape, "2:4 pruning needs a matrix [out, in], found shape {}",
         shape_str(w.shape));
  const int64_t rows = w.shape[0], cols = w.shape[1];
  if (!act_norm.empty() && int64_t(act_norm.size()) != cols)
    fail(Status::InvalidArgument,
         "Wanda pruning: {} activation norms for a weight with {} input channels", act_norm.size(),
         cols);
  std::vector<uint8_t> buf = convert_elements(w, dtype);
  const s24::MatrixView view{buf.data(), dtype, rows, cols};
  const std::vector<uint8_t> mask =
      act_norm.empty() ? s24::magnitude_mask(view) : s24::wanda_mask(view, act_norm);
  // Error of the dropped elements relative to the whole, in fp64.
  double dropped = 0, total = 0;
#pragma omp parallel for reduction(+ : dropped, total) schedule(static)
  for (int64_t i = 0; i < rows * cols; ++i) {
    const double x = load_as_float(buf.data(), dtype, size_t(i));
    total += x * x;
    if (!mask[size_t(i)]) dropped += x * x;
  }
  s24::apply_mask(buf.data(), dtype, rows, cols, mask);
  Pruned p;
  p.compressed = s24::compress(view);
  p.relative_error = total > 0 ? std::sqrt(dropped / total) : 0.0;
  p.norm_sq = total;
  p.dropped_sq = dropped;
  return p;
}

// ---- Model accessors -----------------------------------------------------------------------

const Tensor* Model::find(const std::string& name) const {
  const auto it = dense_.find(name);
  return it == dense_.end() ? nullptr : &it->second;
}

const NeuronMajorFfn* Model::ffn_neurons(int64_t layer) const {
  const auto it = ffn_neurons_.find(layer);
  return it == ffn_neurons_.end() ? nullptr : &it->second;
}

const Tensor& Model::tensor(const std::string& name) const {
  if (const Tensor* t = find(name)) return *t;
  if (sparse_.count(name))
    fail(Status::NotFound, "tensor '{}' is stored 2:4-compressed; use Model::linear() for it",
         name);
  if (!ffn_neurons_.empty() &&
      (name.find(".fc1.") != std::string::npos || name.find(".fc2.weight") != std::string::npos))
    fail(Status::NotFound,
         "tensor '{}' is not in this model: its FFN is stored neuron-major (ffn_neurons bundles, "
         "written by `convert --neuron-major`). Run it with the CPU backend or the offloaded CUDA "
         "engine "
         "(--gpu-memory), or convert the checkpoint again without --neuron-major",
         name);
  fail(Status::NotFound, "the model has no tensor '{}' ({} dense, {} 2:4 tensors loaded)", name,
       dense_.size(), sparse_.size());
}

Linear Model::linear(const std::string& prefix) const {
  Linear l;
  const std::string wname = prefix + ".weight";
  if (const auto it = sparse_.find(wname); it != sparse_.end()) {
    l.sparse = &it->second;
    l.out_features = it->second.rows;
    l.in_features = it->second.cols;
  } else {
    const Tensor& w = tensor(wname);
    if (w.shape.size() != 2)
      fail(Status::Format, "'{}' should be a matrix [out, in], found shape {}", wname,
           shape_str(w.shape));
    l.dense = &w;
    l.out_features = w.shape[0];
    l.in_features = w.shape[1];
  }
  l.bias = find(prefix + ".bias");
  return l;
}

const Tensor& Model::lm_head() const {
  if (!config_.tie_word_embeddings)
    if (const Tensor* t = find("lm_head.weight")) return *t;
  return tensor(config_.names.embed + ".weight");
}

// ---- loading -------------------------------------------------------------------------------

class ModelBuilder {
 public:
  static std::unique_ptr<Model> from_sf(const std::string& path, const OpenOptions& opt);
  static std::unique_ptr<Model> from_gguf(const std::string& path, const OpenOptions& opt);
  // `weights_file`: read the weights from this one file (a bare torch.save() checkpoint) instead
  // of finding them in `dir`.
  static std::unique_ptr<Model> from_hf(const std::string& dir, const OpenOptions& opt,
                                        const std::string& weights_file = {});

 private:
  // Every tensor the config implies is present (dense, or 2:4 for linear weights) with its shape
  // and a float dtype; sets dtype_ from the linear weights.
  // Any other tensor is refused (Error(Format)), beside the auxiliary ones a .sf file may hold.
  static void check_complete(Model& m, const std::string& where, const std::string& config_name);
  // chat_template, bos_token and eos_token of an HF tokenizer_config.json, when it exists.
  static void read_tokenizer_config(Model& m, const fs::path& path);
  static void parse_tokenizer_config(Model& m, const std::string& text, const std::string& where);
  // A "model.decoder.layers.N.ffn_neurons" entry (docs/FORMAT.md, neuron-major FFN).
  static void load_ffn_neurons(Model& m, const sff::File& file, const sff::Entry& e);
  // Points each neuron-major layer at its neuron_order tensor and checks it is a permutation.
  static void link_neuron_orders(Model& m, const std::string& path);
};

void ModelBuilder::read_tokenizer_config(Model& m, const fs::path& path) {
  if (!fs::exists(path)) return;
  m.tokenizer_config_json_ = read_text_file(path.string(), "tokenizer_config.json");
  parse_tokenizer_config(m, m.tokenizer_config_json_, path.string());
}

void ModelBuilder::parse_tokenizer_config(Model& m, const std::string& text,
                                          const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(Status::Format, "'{}' is not valid JSON: {}", where, e.what());
  }
  const fs::path path(where);
  if (!j.is_object()) fail(Status::Format, "'{}': expected a JSON object", path.string());
  if (const auto it = j.find("chat_template"); it != j.end() && !it->is_null()) {
    if (it->is_string()) {
      m.chat_template_ = it->get<std::string>();
    } else if (it->is_array()) {  // named templates: the "default" one is what apply_chat_template
                                  // uses
      for (const auto& t : *it)
        if (t.is_object() && t.value("name", "") == "default" && t.contains("template") &&
            t["template"].is_string())
          m.chat_template_ = t["template"].get<std::string>();
    } else {
      fail(Status::Format, "'{}': \"chat_template\" is {}, expected a string", path.string(),
           it->dump());
    }
  }
  if (const auto it = j.find("bos_token"); it != j.end()) m.bos_token_ = token_string(*it);
  if (const auto it = j.find("eos_token"); it != j.end()) m.eos_token_ = token_string(*it);
}

void ModelBuilder::load_ffn_neurons(Model& m, const sff::File& file, const sff::Entry& e) {
  const std::string where = fmt::format("'{}': tensor '{}'", file.path(), e.name);
  if (e.kind == format::kKindFfnNeuronsS24)
    fail(Status::UnsupportedShape,
         "{} stores 2:4 neuron bundles (ffn_neurons_s24), which this build specifies but "
         "cannot read yet. Convert the dense checkpoint with --neuron-major, or 2:4 without it.",
         where);
  const std::string pre = "model.decoder.layers.", suf = ".ffn_neurons";
  int64_t layer = -1;
  if (e.name.rfind(pre, 0) == 0 && e.name.size() > pre.size() + suf.size() &&
      e.name.compare(e.name.size() - suf.size(), suf.size(), suf) == 0) {
    const std::string num = e.name.substr(pre.size(), e.name.size() - pre.size() - suf.size());
    if (!num.empty() && num.size() < 8 && num.find_first_not_of("0123456789") == std::string::npos)
      layer = std::stoll(num);
  }
  if (layer < 0 || layer >= m.config_.num_hidden_layers)
    fail(Status::Format,
         "{}: expected the name model.decoder.layers.N.ffn_neurons with N < {} layers", where,
         m.config_.num_hidden_layers);
  if (!is_float16_or_32(e.dtype) || e.shape.size() != 2 || e.shape[0] <= 0 || e.shape[1] % 2 != 1 ||
      e.shape[1] < 3)
    fail(Status::Format, "{}: expected dtype F16/BF16/F32 and shape [ffn, 2*hidden+1], found {} {}",
         where, dtype_name(e.dtype), shape_str(e.shape));
  const auto layout = format::BundleLayout::make((e.shape[1] - 1) / 2, e.dtype);
  const sff::Part* part = e.part("bundles");
  if (!part || part->size != uint64_t(e.shape[0]) * layout.stride)
    fail(Status::Format,
         "{}: expected a part \"bundles\" of {} neurons x {} bytes = {} bytes, found {}", where,
         e.shape[0], layout.stride, uint64_t(e.shape[0]) * layout.stride,
         part ? fmt::format("{} bytes", part->size) : std::string("none"));
  NeuronMajorFfn nm;
  nm.dtype = e.dtype;
  nm.ffn = e.shape[0];
  nm.hidden = layout.hidden;
  nm.stride = layout.stride;
  nm.bundles = file.data(*part).data();
  if (!m.ffn_neurons_.emplace(layer, nm).second) fail(Status::Format, "{} appears twice", where);
}

void ModelBuilder::link_neuron_orders(Model& m, const std::string& path) {
  for (auto& [layer, nm] : m.ffn_neurons_) {
    const std::string name = format::neuron_order_name(layer);
    const auto it = m.dense_.find(name);
    if (it == m.dense_.end())
      fail(Status::NotFound, "'{}': layer {} is stored neuron-major but '{}' is missing", path,
           layer, name);
    const Tensor& t = it->second;
    if (t.dtype != DType::I32 || t.shape != std::vector<int64_t>{nm.ffn})
      fail(Status::Format, "'{}': '{}' is {} {}, expected I32 [{}]", path, name,
           dtype_name(t.dtype), shape_str(t.shape), nm.ffn);
    nm.order = static_cast<const int32_t*>(t.data);
    std::vector<uint8_t> seen(size_t(nm.ffn), 0);
    for (int64_t b = 0; b < nm.ffn; ++b) {
      const int32_t o = nm.order[b];
      if (o < 0 || o >= nm.ffn || seen[size_t(o)]++)
        fail(Status::Format, "'{}': '{}' is not a permutation of 0..{} (entry {} is {})", path,
             name, nm.ffn - 1, b, o);
    }
  }
}

void ModelBuilder::check_complete(Model& m, const std::string& where,
                                  const std::string& config_name) {
  const auto expected = arch::expected_tensors(m.config_, !m.config_.tie_word_embeddings);
  std::vector<std::string> missing;
  bool first_linear = true;
  // Neuron-major layers hold fc1.weight, fc1.bias and fc2.weight inside their bundles.
  std::set<std::string> in_bundles;
  for (const auto& [layer, nm] : m.ffn_neurons_) {
    const std::string p = fmt::format("model.decoder.layers.{}.", layer);
    if (nm.ffn != m.config_.ffn_dim || nm.hidden != m.config_.hidden_size)
      fail(Status::Format,
           "{}: {} holds {} neurons of hidden size {}, but the config implies ffn {} and hidden {}",
           where, format::ffn_neurons_name(layer), nm.ffn, nm.hidden, m.config_.ffn_dim,
           m.config_.hidden_size);
    for (const char* n : {"fc1.weight", "fc1.bias", "fc2.weight"}) in_bundles.insert(p + n);
  }
  std::set<std::string> wanted, prunable;
  for (const auto& e : expected)
    if (!in_bundles.count(e.name)) {
      wanted.insert(e.name);
      if (e.prunable) prunable.insert(e.name);
    }
  std::vector<std::string> unexpected, present;
  const int64_t layers = m.config_.num_hidden_layers;
  for (const auto& [name, t] : m.dense_) {
    present.push_back(name);
    if (wanted.count(name) || (name == "lm_head.weight" && m.config_.tie_word_embeddings)) continue;
    // What a .sf file may carry beside the weights: activation profiles and predictors of existing
    // layers, and the neuron order of each neuron-major layer.
    std::optional<int64_t> l;
    bool known = false;
    for (const char* prefix : {"profile.", "predictor."})
      if (name.rfind(prefix, 0) == 0) {
        l = layer_after(name, std::string(prefix) + "layers.");
        known = true;
      }
    if (known && (!l || *l < layers)) continue;
    if (const auto nl = layer_after(name, "model.decoder.layers.");
        nl && m.ffn_neurons_.count(*nl) && name == format::neuron_order_name(*nl))
      continue;
    unexpected.push_back(name);
  }
  for (const auto& [name, c] : m.sparse_) {
    present.push_back(name);
    if (!prunable.count(name)) unexpected.push_back(name);
  }
  for (const auto& [layer, nm] : m.ffn_neurons_) present.push_back(format::ffn_neurons_name(layer));
  for (const auto& e : expected) {
    std::vector<int64_t> shape;
    DType dt;
    if (in_bundles.count(e.name)) continue;
    if (const auto it = m.dense_.find(e.name); it != m.dense_.end()) {
      shape = it->second.shape;
      dt = it->second.dtype;
    } else if (const auto is = m.sparse_.find(e.name); is != m.sparse_.end() && e.prunable) {
      shape = {is->second.rows, is->second.cols};
      dt = is->second.dtype;
    } else {
      missing.push_back(e.name);
      continue;
    }
    if (unexpected.size() + missing.size() > 0) continue;  // the set is wrong: say that first
    if (shape != e.shape)
      fail(Status::Format,
           "{}: tensor '{}' has shape {}, but the config (hidden {}, ffn {}, vocab {}, "
           "word_embed_proj_dim {}) implies {}. Is config.json from a different checkpoint?",
           where, e.name, shape_str(shape), m.config_.hidden_size, m.config_.ffn_dim,
           m.config_.vocab_size, m.config_.word_embed_proj_dim, shape_str(e.shape));
    if (!is_float16_or_32(dt))
      fail(Status::UnsupportedShape, "{}: tensor '{}' is {}, expected F32, F16 or BF16", where,
           e.name, dtype_name(dt));
    if (e.prunable && first_linear) {
      m.dtype_ = dt;
      first_linear = false;
    }
  }
  check_tensor_set(m.config_, missing, unexpected, present, where, config_name);
}

std::unique_ptr<Model> ModelBuilder::from_sf(const std::string& path, const OpenOptions& opt) {
  if (opt.sparsity != "none" && !opt.sparsity.empty())
    fail(Status::InvalidArgument,
         "'{}' is a .sf file: its sparsity was fixed by `sparseflow convert`; "
         "--sparsity {} applies only to HF checkpoint directories",
         path, opt.sparsity);
  auto file = std::make_shared<sff::File>(sff::File::open(path, {opt.verify_checksums}));
  auto m = std::unique_ptr<Model>(new Model());
  m->config_ = format::parse_hf_config_json(file->config(), path + " (header config)");
  if (file->architecture() != m->config_.arch)
    fail(Status::Format,
         "'{}' says its architecture is \"{}\" but its header config describes a \"{}\" model; "
         "the file is inconsistent: convert the checkpoint again",
         path, file->architecture(), m->config_.arch);
  m->source_format_ = "sf";
  m->metadata_ = file->metadata();
  m->bos_token_ = m->metadata_.value("tokenizer.bos_token", "");
  m->eos_token_ = m->metadata_.value("tokenizer.eos_token", "");
  m->metadata_["sf.format_version"] = file->version();
  m->metadata_["sf.checksums_verified"] = file->checksums_verified();
  for (const auto& e : file->entries()) {
    if (e.kind == sff::kKindDense) {
      const auto bytes = file->data(e.parts[0]);
      if (e.name == kVocabTensor) {
        m->vocab_json_.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      } else if (e.name == kMergesTensor) {
        m->merges_txt_.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      } else if (e.name == kTokenizerJsonTensor) {
        m->tokenizer_json_.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      } else if (e.name == kTokenizerConfigTensor) {
        m->tokenizer_config_json_.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      } else if (e.name == kChatTemplateTensor) {
        m->chat_template_.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      } else {
        m->dense_[e.name] = Tensor{e.dtype, e.shape, bytes.data()};
      }
    } else if (e.kind == sff::kKindS24) {
      // Copied: s24::Compressed owns its arrays. The mmap pages are dropped by the kernel later.
      s24::Compressed c;
      c.dtype = e.dtype;
      c.rows = e.shape[0];
      c.cols = e.shape[1];
      c.rows_padded = e.padded_shape[0];
      c.cols_padded = e.padded_shape[1];
      const auto v = file->data(*e.part("values"));
      const auto mt = file->data(*e.part("meta"));
      c.values.assign(v.begin(), v.end());
      c.meta.resize(mt.size() / sizeof(uint32_t));
      std::memcpy(c.meta.data(), mt.data(),
                  mt.size());  // little-endian on disk and on every host we run
      // Checksums only prove the bytes are what the writer wrote; a field with i0 >= i1 would make
      // the kernels read garbage without an error, so every field is checked here.
      if (const auto bad = s24::find_bad_metadata(c))
        fail(Status::Format,
             "'{}': tensor '{}': the 2:4 metadata of row {}, columns {}..{} (group {}{}) holds "
             "indices ({}, {}), but every group of 4 must keep two distinct positions in "
             "increasing order (0 <= i0 < i1 <= 3). The file is corrupt: re-run `sparseflow "
             "convert` to write it again.",
             path, e.name, bad->row, 4 * bad->group, 4 * bad->group + 3, bad->group,
             bad->row >= c.rows || 4 * bad->group >= c.cols ? ", in the padding" : "", bad->i0,
             bad->i1);
      m->sparse_.emplace(e.name, std::move(c));
    } else if (e.kind == format::kKindFfnNeurons || e.kind == format::kKindFfnNeuronsS24) {
      load_ffn_neurons(*m, *file, e);
    }
    // Other kinds (added by later format users) are skipped: this reader does not need them.
  }
  link_neuron_orders(*m, path);
  check_complete(*m, "'" + path + "'", "its header config");
  m->keep_alive_.push_back(file->mapping());
  m->keep_alive_.push_back(file);
  return m;
}

std::unique_ptr<Model> ModelBuilder::from_hf(const std::string& dir_str, const OpenOptions& opt,
                                             const std::string& weights_file) {
  const fs::path dir(dir_str);
  if (opt.sparsity != "none" && opt.sparsity != "2:4" && !opt.sparsity.empty())
    fail(Status::InvalidArgument, "sparsity \"{}\" is not supported; use \"none\" or \"2:4\"",
         opt.sparsity);
  if (opt.dtype && !is_float16_or_32(*opt.dtype))
    fail(Status::InvalidArgument, "dtype {} is not a weight type; use fp16, bf16 or fp32",
         dtype_name(*opt.dtype));
  const fs::path cfg_path =
      opt.config_path.empty() ? dir / "config.json" : fs::path(opt.config_path);
  if (!fs::exists(cfg_path) && !weights_file.empty())
    fail(Status::NotFound,
         "'{}' holds weights only; the model's Hugging Face config.json is needed "
         "too and {} does not exist. Put the checkpoint's config.json next to it, or pass --config "
         "FILE",
         weights_file, cfg_path.string());
  if (!fs::exists(cfg_path))
    fail(Status::NotFound,
         "'{}' has no config.json: expected a Hugging Face checkpoint directory "
         "(config.json, model.safetensors, tokenizer.json or vocab.json + merges.txt)",
         dir_str);
  auto m = std::unique_ptr<Model>(new Model());
  json cfg_json;
  try {
    cfg_json = json::parse(read_text_file(cfg_path.string(), "config.json"));
  } catch (const json::exception& e) {
    fail(Status::Format, "{} is not valid JSON: {}. Expected a Hugging Face config.json.",
         cfg_path.string(), e.what());
  }
  m->config_ = format::parse_hf_config_json(cfg_json, cfg_path.string());
  m->source_format_ = "hf";

  // Which files hold which tensors: views into safetensors files, or into torch.save() archives
  // (read without running their pickled code), found the same way.
  fs::path single = dir / "model.safetensors", index = dir / "model.safetensors.index.json";
  if (!fs::exists(single) && !fs::exists(index) &&
      (fs::exists(dir / "pytorch_model.bin") || fs::exists(dir / "pytorch_model.bin.index.json"))) {
    single = dir / "pytorch_model.bin";
    index = dir / "pytorch_model.bin.index.json";
  }
  std::vector<std::shared_ptr<st::File>> files;
  std::vector<std::shared_ptr<pt::Checkpoint>> torch_files;
  std::map<std::string, Tensor> by_name;
  auto add_tensor = [&](const std::string& name, Tensor t, const fs::path& p) {
    if (is_derived_buffer(m->config_, name)) return;
    const std::string n = normalize_name(m->config_, name);
    if (!by_name.emplace(n, std::move(t)).second)
      fail(Status::Format, "tensor '{}' appears twice in the checkpoint '{}' (second time in '{}')",
           n, dir_str, p.filename().string());
  };
  auto add_file = [&](const fs::path& p) {
    if (!fs::exists(p))
      fail(Status::NotFound, "'{}' is missing: the checkpoint in '{}' names it{}", p.string(),
           dir_str,
           p == single ? "" : fmt::format(" in {}. Copy every shard.", index.filename().string()));
    if (p.extension() == ".safetensors") {
      files.push_back(std::make_shared<st::File>(st::File::open(p.string())));
      for (const auto& t : files.back()->tensors())
        add_tensor(t.name, Tensor{t.dtype, t.shape, files.back()->data(t).data()}, p);
    } else {
      torch_files.push_back(std::make_shared<pt::Checkpoint>(pt::Checkpoint::open(p.string())));
      for (const auto& t : torch_files.back()->tensors())
        add_tensor(t.name, Tensor{t.dtype, t.shape, t.data.data()}, p);
    }
  };
  if (!weights_file.empty()) {
    add_file(weights_file);
  } else if (fs::exists(index)) {
    json ij;
    try {
      ij = json::parse(read_text_file(index.string(), "safetensors index"));
    } catch (const json::exception& e) {
      fail(Status::Format, "'{}' is not valid JSON: {}", index.string(), e.what());
    }
    const auto wm = ij.find("weight_map");
    if (!ij.is_object() || wm == ij.end() || !wm->is_object())
      fail(Status::Format, "'{}' has no \"weight_map\" object mapping tensor names to shard files",
           index.string());
    std::set<std::string> shards;
    for (const auto& [name, shard] : wm->items()) {
      if (!shard.is_string() || shard.get<std::string>().find('/') != std::string::npos)
        fail(Status::Format,
             "'{}': tensor '{}' maps to {}, expected a shard file name in the same directory",
             index.string(), name, shard.dump());
      shards.insert(shard.get<std::string>());
    }
    for (const auto& s : shards) add_file(dir / s);
    for (const auto& [name, shard] : wm->items())
      if (!is_derived_buffer(m->config_, name) && !by_name.count(normalize_name(m->config_, name)))
        fail(Status::Format, "'{}' says tensor '{}' is in '{}', but that shard does not hold it",
             index.string(), name, shard.get<std::string>());
  } else if (fs::exists(single)) {
    add_file(single);
  } else {
    fail(Status::NotFound,
         "'{}' has no weights: expected model.safetensors, model.safetensors.index.json, "
         "pytorch_model.bin or pytorch_model.bin.index.json",
         dir_str);
  }

  if (m->config_.arch == "gpt2") gpt2_to_linear(m->config_, by_name, m->keep_alive_);
  if (const fs::path gen = dir / "generation_config.json"; fs::exists(gen)) {
    try {
      format::apply_generation_config(
          m->config_, json::parse(read_text_file(gen.string(), "generation config")), gen.string());
    } catch (const json::exception& e) {
      fail(Status::Format, "'{}' is not valid JSON: {}", gen.string(), e.what());
    }
  }

  // lm_head: a config that does not tie it needs lm_head.weight; one that ties it ignores a stored
  // copy, as HF does.
  const bool untied = !m->config_.tie_word_embeddings;
  const auto expected = arch::expected_tensors(m->config_, untied);
  std::vector<std::string> missing, unexpected, present;
  std::set<std::string> wanted;
  for (const auto& e : expected) {
    wanted.insert(e.name);
    if (!by_name.count(e.name)) missing.push_back(e.name);
  }
  // A stored lm_head.weight under a tying config is HF's tied copy: present or not, it is unread.
  for (const auto& [name, where] : by_name) {
    present.push_back(name);
    if (!wanted.count(name) && name != "lm_head.weight") unexpected.push_back(name);
  }
  check_tensor_set(m->config_, missing, unexpected, present, "'" + dir_str + "'", "config.json");

  const bool prune = opt.sparsity == "2:4";
  for (const auto& e : expected) {
    const Tensor& t = by_name.at(e.name);
    if (t.shape != e.shape)
      fail(Status::Format, "'{}': tensor '{}' has shape {}, but config.json implies {}", dir_str,
           e.name, shape_str(t.shape), shape_str(e.shape));
    if (!is_float16_or_32(t.dtype))
      fail(Status::UnsupportedShape, "'{}': tensor '{}' is {}, expected F32, F16 or BF16", dir_str,
           e.name, dtype_name(t.dtype));
    const DType want = opt.dtype.value_or(t.dtype);
    if (prune && e.prunable) {
      m->sparse_.emplace(e.name, prune_24(t, want).compressed);
    } else if (want != t.dtype) {
      auto buf = std::make_shared<std::vector<uint8_t>>(convert_elements(t, want));
      m->dense_[e.name] = Tensor{want, t.shape, buf->data()};
      m->keep_alive_.push_back(buf);
    } else {
      m->dense_[e.name] = t;
    }
  }
  check_complete(*m, "'" + dir_str + "'", "config.json");
  for (auto& f : files) m->keep_alive_.push_back(f);
  for (auto& f : torch_files) m->keep_alive_.push_back(f);

  if (fs::exists(dir / "tokenizer.json")) {
    m->tokenizer_json_ = read_text_file((dir / "tokenizer.json").string(), "tokenizer file");
  } else if (fs::exists(dir / "tokenizer.model")) {  // what transformers falls back to
    m->tokenizer_model_ = read_text_file((dir / "tokenizer.model").string(), "tokenizer file");
  } else if (fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt")) {
    m->vocab_json_ = read_text_file((dir / "vocab.json").string(), "tokenizer file");
    m->merges_txt_ = read_text_file((dir / "merges.txt").string(), "tokenizer file");
  }
  read_tokenizer_config(*m, dir / "tokenizer_config.json");
  if (!m->tokenizer_model_.empty()) {
    // LlamaTokenizer's special tokens where the config does not name them (chat templates read
    // them); the config was validated above.
    const json cfg =
        m->tokenizer_config_json_.empty() ? json::object() : json::parse(m->tokenizer_config_json_);
    if (!cfg.contains("bos_token")) m->bos_token_ = "<s>";
    if (!cfg.contains("eos_token")) m->eos_token_ = "</s>";
  }
  m->metadata_ = {{"source.format", "hf"},
                  {"source.path", dir_str},
                  {"sparsity.pattern", prune ? "2:4" : "none"},
                  {"sparsity.method", prune ? "magnitude" : "none"}};
  if (!files.empty())
    for (const auto& [k, v] : files.front()->metadata())
      m->metadata_["source.safetensors." + k] = v;
  // Checkpoints from `sparseflow synth` say their weights are random; keep saying it downstream.
  if (const auto syn = cfg_json.find("sparseflow_synthetic"); syn != cfg_json.end()) {
    m->metadata_["weights.synthetic"] = true;
    m->metadata_["weights.synthetic_info"] = *syn;
  }
  return m;
}

std::unique_ptr<Model> ModelBuilder::from_gguf(const std::string& path, const OpenOptions& opt) {
  if (opt.sparsity != "none" && opt.sparsity != "2:4" && !opt.sparsity.empty())
    fail(Status::InvalidArgument, "sparsity \"{}\" is not supported; use \"none\" or \"2:4\"",
         opt.sparsity);
  GgufModel g = load_gguf(path, opt.dtype.value_or(DType::F16));
  auto m = std::unique_ptr<Model>(new Model());
  m->config_ = g.desc;
  m->source_format_ = "gguf";
  const bool prune = opt.sparsity == "2:4";
  std::set<std::string> prunable;
  for (const auto& e : arch::expected_tensors(m->config_, !m->config_.tie_word_embeddings))
    if (e.prunable) prunable.insert(e.name);
  for (auto& [name, t] : g.tensors) {
    const Tensor view{t.dtype, t.shape, t.data->data()};
    if (prune && prunable.count(name)) {
      m->sparse_.emplace(name, prune_24(view, t.dtype).compressed);
    } else {
      m->dense_[name] = view;
      m->keep_alive_.push_back(t.data);
    }
  }
  check_complete(*m, "'" + path + "'", "its GGUF metadata");
  m->tokenizer_json_ = std::move(g.tokenizer_json);
  m->tokenizer_config_json_ = std::move(g.tokenizer_config_json);
  if (!m->tokenizer_config_json_.empty())
    parse_tokenizer_config(*m, m->tokenizer_config_json_, path + " (tokenizer)");
  m->chat_template_ = std::move(g.chat_template);
  std::map<std::string, int> types;
  for (const auto& [name, type] : g.types) ++types[type];
  json tj = json::object();
  for (const auto& [type, n] : types) tj[type] = n;
  m->metadata_ = {
      {"source.format", "gguf"},
      {"source.path", path},
      {"source.gguf_tensor_types", tj},
      {"source.gguf_dequantized_to", std::string(dtype_name(opt.dtype.value_or(DType::F16)))},
      {"sparsity.pattern", prune ? "2:4" : "none"},
      {"sparsity.method", prune ? "magnitude" : "none"}};
  return m;
}

std::unique_ptr<Model> Model::open(const std::string& path, const std::string& sparsity) {
  OpenOptions o;
  o.sparsity = sparsity;
  return open(path, o);
}

std::unique_ptr<Model> Model::open(const std::string& path, const OpenOptions& options) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st))
    fail(Status::NotFound,
         "model '{}' does not exist: pass a .sf file or a Hugging Face checkpoint directory", path);
  if (fs::is_directory(st)) return ModelBuilder::from_hf(path, options);
  if (fs::is_regular_file(st) && looks_like_gguf(path))
    return ModelBuilder::from_gguf(path, options);
  // A bare torch.save() state dict (model.pt, pytorch_model.bin): its config sits beside it.
  if (pt::looks_like_torch_file(path)) {
    const fs::path dir = fs::path(path).parent_path();
    return ModelBuilder::from_hf(dir.empty() ? "." : dir.string(), options, path);
  }
  return ModelBuilder::from_sf(path, options);
}

}  // namespace sf::model
