#include "model/gguf_model.hpp"

#include <omp.h>

#include <cstring>
#include <fstream>
#include <optional>

#include <fmt/format.h>

#include "core/error.hpp"
#include "format/gguf.hpp"
#include "tokenizer/gguf_tokenizer.hpp"

namespace sf::model {

namespace {

using format::GgufFile;
using format::GgufValue;

// "blk.N.<role>" -> the description's name of that role; "" for roles SparseFlow does not read.
std::string layer_role(const arch::TensorNames& n, const std::string& role) {
  static const std::pair<const char*, std::string arch::TensorNames::*> kRoles[] = {
      {"attn_norm", &arch::TensorNames::attn_norm},
      {"ffn_norm", &arch::TensorNames::ffn_norm},
      {"attn_q", &arch::TensorNames::q},
      {"attn_k", &arch::TensorNames::k},
      {"attn_v", &arch::TensorNames::v},
      {"attn_output", &arch::TensorNames::o},
      {"ffn_gate", &arch::TensorNames::gate},
      {"ffn_up", &arch::TensorNames::up},
      {"ffn_down", &arch::TensorNames::down},
  };
  for (const auto& [gguf, member] : kRoles)
    if (role == gguf) return n.*member;
  return {};
}

// The HF name of a GGUF tensor name ("blk.3.attn_q.weight" ->
// "model.layers.3.self_attn.q_proj.weight").
std::optional<std::string> hf_name(const arch::ModelDesc& d, const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos) return std::nullopt;
  const std::string stem = name.substr(0, dot), suffix = name.substr(dot);  // ".weight" / ".bias"
  if (stem == "token_embd") return d.names.embed + suffix;
  if (stem == "output_norm") return d.names.final_norm + suffix;
  if (stem == "output") return d.names.lm_head + suffix;
  if (stem.rfind("blk.", 0) != 0) return std::nullopt;
  const auto dot2 = stem.find('.', 4);
  if (dot2 == std::string::npos) return std::nullopt;
  const std::string num = stem.substr(4, dot2 - 4);
  if (num.empty() || num.size() > 6 || num.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  const int64_t layer = std::stoll(num);
  const std::string role = layer_role(d.names, stem.substr(dot2 + 1));
  if (role.empty() || layer >= d.num_hidden_layers) return std::nullopt;
  return d.layer_prefix(layer) + role + suffix;
}

int64_t get_int(const GgufFile& f, const std::string& key, std::optional<int64_t> fallback) {
  if (const GgufValue* v = f.find(key)) return v->as_int();
  if (!fallback)
    fail(Status::Format,
         "'{}': the GGUF metadata has no \"{}\", which a model of architecture \"{}\" needs",
         f.path(), key, f.architecture());
  return *fallback;
}
double get_float(const GgufFile& f, const std::string& key, double fallback) {
  if (const GgufValue* v = f.find(key)) return v->as_float();
  return fallback;
}

arch::ModelDesc describe(const GgufFile& f) {
  const std::string a = f.architecture();
  if (a != "llama" && a != "qwen2")
    fail(Status::UnsupportedShape,
         "'{}': GGUF architecture \"{}\" is not supported; SparseFlow reads llama (Llama, Mistral, "
         "SmolLM2) and "
         "qwen2 GGUF files. Convert the Hugging Face checkpoint instead.",
         f.path(), a);
  arch::ModelDesc d = arch::preset(a);
  d.hidden_size = get_int(f, a + ".embedding_length", std::nullopt);
  d.num_hidden_layers = get_int(f, a + ".block_count", std::nullopt);
  d.ffn_dim = get_int(f, a + ".feed_forward_length", std::nullopt);
  d.num_attention_heads = get_int(f, a + ".attention.head_count", std::nullopt);
  d.num_key_value_heads = get_int(f, a + ".attention.head_count_kv", d.num_attention_heads);
  d.max_position_embeddings = get_int(f, a + ".context_length", std::nullopt);
  d.head_dim = get_int(f, a + ".attention.key_length", 0);
  d.norm_eps = get_float(f, a + ".attention.layer_norm_rms_epsilon", 1e-6);
  d.rope.theta = get_float(f, a + ".rope.freq_base", 10000.0);
  d.rope.dims = get_int(f, a + ".rope.dimension_count", 0);
  if (const GgufValue* s = f.find(a + ".rope.scaling.type"); s && s->as_string() != "none") {
    if (s->as_string() != "linear")
      fail(Status::UnsupportedShape,
           "'{}': rope scaling \"{}\" in a GGUF file is not supported (linear is)", f.path(),
           s->as_string());
    d.rope.scaling = arch::RopeScaling::Linear;
    d.rope.factor = get_float(f, a + ".rope.scaling.factor", 1.0);
  }
  if (f.find_tensor("rope_freqs.weight"))
    fail(Status::UnsupportedShape,
         "'{}' carries per-frequency rope factors (rope_freqs.weight, Llama 3.1 scaling), "
         "which SparseFlow reads from Hugging Face configs only: convert the HF checkpoint instead",
         f.path());
  const GgufValue* tokens = f.find("tokenizer.ggml.tokens");
  d.vocab_size = get_int(f, a + ".vocab_size",
                         tokens ? std::optional<int64_t>(int64_t(tokens->size())) : std::nullopt);
  d.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  d.bos_token_id = get_int(f, "tokenizer.ggml.bos_token_id", -1);
  d.eos_token_id = get_int(f, "tokenizer.ggml.eos_token_id", -1);
  d.pad_token_id = get_int(f, "tokenizer.ggml.padding_token_id", -1);
  if (d.head_dim == 0 && d.num_attention_heads > 0 && d.hidden_size % d.num_attention_heads != 0)
    fail(Status::Format,
         "'{}': embedding_length {} is not a multiple of head_count {} and no key_length is given",
         f.path(), d.hidden_size, d.num_attention_heads);
  arch::complete(d);
  return d;
}

tok::GgufTokenizerData tokenizer_data(const GgufFile& f) {
  tok::GgufTokenizerData t;
  t.model = f.get("tokenizer.ggml.model").as_string();
  if (const GgufValue* v = f.find("tokenizer.ggml.pre")) t.pre = v->as_string();
  t.tokens = f.get("tokenizer.ggml.tokens").as_string_array();
  if (const GgufValue* v = f.find("tokenizer.ggml.scores"))
    for (double s : v->as_float_array()) t.scores.push_back(float(s));
  if (const GgufValue* v = f.find("tokenizer.ggml.token_type"))
    for (int64_t x : v->as_int_array()) t.token_types.push_back(int32_t(x));
  if (const GgufValue* v = f.find("tokenizer.ggml.merges")) t.merges = v->as_string_array();
  t.bos = get_int(f, "tokenizer.ggml.bos_token_id", -1);
  t.eos = get_int(f, "tokenizer.ggml.eos_token_id", -1);
  t.unk = get_int(f, "tokenizer.ggml.unknown_token_id", -1);
  t.pad = get_int(f, "tokenizer.ggml.padding_token_id", -1);
  // transformers, the reference for a GGUF's ids, starts every encode(add_special_tokens=True)
  // with BOS whatever tokenizer.ggml.add_bos_token says (SmolLM2's says false; HF still adds
  // <|im_start|>, measured with transformers 5.x in scripts/hf_smollm2_reference.py).
  t.add_bos = t.bos >= 0;
  if (const GgufValue* v = f.find("tokenizer.ggml.add_eos_token")) t.add_eos = v->as_bool();
  if (const GgufValue* v = f.find("tokenizer.ggml.add_space_prefix"))
    t.add_space_prefix = v->as_bool();
  return t;
}

// llama.cpp's converter writes the rows of each head of q_proj / k_proj in the order
// [x0, x_half, x1, x_half+1, ...] (interleaved pairs); HF's rotate_half wants [x0..x_half-1,
// x_half..]. Row h*hd + 2i + j of the file is row h*hd + j*hd/2 + i of the HF weight.
void unpermute_rows(std::vector<uint8_t>& w, int64_t rows, int64_t cols, int64_t heads,
                    size_t elem) {
  if (rows % heads != 0 || (rows / heads) % 2 != 0)
    fail(Status::Format, "a q/k weight of {} rows does not split into {} heads of an even size",
         rows, heads);
  const int64_t hd = rows / heads, half = hd / 2;
  const size_t row_bytes = size_t(cols) * elem;
  std::vector<uint8_t> out(w.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j)
        std::memcpy(out.data() + size_t(h * hd + j * half + i) * row_bytes,
                    w.data() + size_t(h * hd + 2 * i + j) * row_bytes, row_bytes);
  w.swap(out);
}

}  // namespace

bool looks_like_gguf(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

GgufModel load_gguf(const std::string& path, DType dtype) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    fail(Status::InvalidArgument, "a GGUF file dequantizes to fp32, fp16 or bf16, not {}",
         dtype_name(dtype));
  const GgufFile f = GgufFile::open(path);
  GgufModel g;
  g.desc = describe(f);
  const arch::ModelDesc& d = g.desc;
  const bool permuted = f.architecture() == "llama";
  for (const auto& t : f.tensors()) {
    const auto name = hf_name(d, t.name);
    if (!name)
      fail(Status::Format,
           "'{}': tensor '{}' is not part of a {} model of {} layers; the file is not one "
           "SparseFlow "
           "can read",
           path, t.name, f.architecture(), d.num_hidden_layers);
    std::vector<float> values(size_t(t.numel));
    f.dequantize(t, values);
    GgufTensor out;
    out.dtype = dtype;
    out.shape = t.shape();
    out.data = std::make_shared<std::vector<uint8_t>>(values.size() * dtype_size(dtype));
#pragma omp parallel for schedule(static) if (values.size() > (1u << 16))
    for (int64_t i = 0; i < int64_t(values.size()); ++i)
      store_from_float(out.data->data(), dtype, size_t(i), values[size_t(i)]);
    const bool is_q =
        name->ends_with(d.names.q + ".weight") || name->ends_with(d.names.q + ".bias");
    const bool is_k =
        name->ends_with(d.names.k + ".weight") || name->ends_with(d.names.k + ".bias");
    if (permuted && (is_q || is_k)) {
      const int64_t rows = out.shape[0], cols = out.shape.size() > 1 ? out.shape[1] : 1;
      unpermute_rows(*out.data, rows, cols, is_q ? d.num_attention_heads : d.num_key_value_heads,
                     dtype_size(dtype));
    }
    g.types[*name] = std::string(format::ggml_type_name(uint32_t(t.type)));
    if (!g.tensors.emplace(*name, std::move(out)).second)
      fail(Status::Format, "'{}': two tensors map to '{}'", path, *name);
  }
  if (f.find("tokenizer.ggml.model")) {
    const auto td = tokenizer_data(f);
    g.tokenizer_json = tok::tokenizer_json_from_gguf(td);
    g.tokenizer_config_json = tok::tokenizer_config_json_from_gguf(td);
  }
  if (const GgufValue* v = f.find("tokenizer.chat_template")) g.chat_template = v->as_string();
  return g;
}

}  // namespace sf::model
