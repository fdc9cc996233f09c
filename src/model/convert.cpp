#include "model/convert.hpp"

#include <cmath>

#include "core/error.hpp"
#include "format/hf_config.hpp"
#include "format/sf_file.hpp"

namespace sf::model {

namespace {

std::span<const uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
std::span<const uint8_t> as_bytes(const std::vector<uint32_t>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(uint32_t)};
}

// "model.decoder.layers.12.fc1.weight" -> 12; -1 for tensors outside the decoder layers.
int64_t layer_of(const std::string& name) {
  const std::string key = "model.decoder.layers.";
  if (name.rfind(key, 0) != 0) return -1;
  return std::stoll(name.substr(key.size()));
}

}  // namespace

ConvertReport convert_to_sf(const Model& src, const std::string& output, const ConvertOptions& opt,
                            const ConvertProgress& progress) {
  if (opt.sparsity != "none" && opt.sparsity != "2:4")
    fail(Status::InvalidArgument, "--sparsity \"{}\" is not supported; use none or 2:4", opt.sparsity);
  const bool prune = opt.sparsity == "2:4";
  if (prune && opt.method != "magnitude" && opt.method != "wanda")
    fail(Status::InvalidArgument, "--method \"{}\" is not supported; use magnitude or wanda", opt.method);
  const bool wanda = prune && opt.method == "wanda";
  if (src.is_sparse())
    fail(Status::UnsupportedShape, "the input model is already 2:4-compressed; convert from the dense "
         "checkpoint instead");
  if (opt.dtype && *opt.dtype != DType::F16 && *opt.dtype != DType::BF16 && *opt.dtype != DType::F32)
    fail(Status::InvalidArgument, "--dtype {} is not a weight type; use fp16, bf16 or fp32", dtype_name(*opt.dtype));

  const OptConfig& c = src.config();
  const auto expected = opt_expected_tensors(c, !c.tie_word_embeddings);
  std::vector<sff::EntrySpec> specs;
  ConvertReport rep;
  DType out_dtype_first = DType::F16;
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& e = expected[i];
    const Tensor& t = src.tensor(e.name);
    const DType dt = opt.dtype.value_or(t.dtype);
    if (i == 0) out_dtype_first = dt;
    rep.parameters += t.numel();
    rep.dense_bytes += uint64_t(t.numel()) * dtype_size(dt);
    if (prune && e.prunable) {
      if (wanda) {
        const std::string prefix = e.name.substr(0, e.name.size() - std::string(".weight").size());
        const auto it = opt.act_norms.find(prefix);
        if (it == opt.act_norms.end())
          fail(Status::InvalidArgument, "Wanda pruning has no activation norms for '{}'; the calibration run "
               "must cover every decoder linear", prefix);
      }
      specs.push_back(sff::s24_spec(e.name, dt, e.shape[0], e.shape[1]));
    } else {
      specs.push_back(sff::dense_spec(e.name, dt, e.shape));
    }
    for (const auto& p : specs.back().parts) rep.weight_bytes += p.second;
  }
  const bool tokenizer = !src.vocab_json().empty() && !src.merges_txt().empty();
  if (tokenizer) {
    specs.push_back(sff::bytes_spec("tokenizer.vocab.json", src.vocab_json().size()));
    specs.push_back(sff::bytes_spec("tokenizer.merges.txt", src.merges_txt().size()));
  }

  nlohmann::json meta = {
      {"sparseflow.converter_version", kConverterVersion},
      {"sparsity.pattern", prune ? "2:4" : "none"},
      {"sparsity.method", prune ? opt.method : "none"},
      {"sparsity.pruned", prune ? "q_proj, k_proj, v_proj, out_proj, fc1, fc2 of every decoder layer" : ""},
      {"weights.dtype", std::string(dtype_name(out_dtype_first))},
      {"tokenizer.type", tokenizer ? "gpt2-byte-level-bpe" : "none"},
  };
  for (const auto& [k, v] : src.metadata().items())
    if (k.rfind("source.", 0) == 0 || k.rfind("weights.", 0) == 0) meta[k] = v;
  for (const auto& [k, v] : opt.extra_metadata.items()) meta[k] = v;
  std::vector<std::string> requires_features;
  if (prune) requires_features.push_back("s24");

  sff::Writer w(output, "opt", format::opt_config_to_json(c), meta, specs, requires_features);
  uint64_t written = 0, total = 0;  // progress counts tensor bytes
  for (const auto& sp : specs)
    for (const auto& part : sp.parts) total += part.second;
  const size_t count = expected.size() + (tokenizer ? 2 : 0);
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& e = expected[i];
    const Tensor& t = src.tensor(e.name);
    const DType dt = opt.dtype.value_or(t.dtype);
    if (prune && e.prunable) {
      std::span<const float> norms;
      if (wanda) norms = opt.act_norms.at(e.name.substr(0, e.name.size() - 7));
      const Pruned p = prune_24(t, dt, norms);
      w.write(p.compressed.values);
      w.write(as_bytes(p.compressed.meta));
      written += p.compressed.compressed_bytes();
      rep.linears.push_back({e.name, layer_of(e.name), p.relative_error, p.norm_sq, p.dropped_sq});
    } else {
      const auto bytes = convert_elements(t, dt);
      w.write(bytes);
      written += bytes.size();
    }
    if (progress) progress(i + 1, count, e.name, written, total);
  }
  if (tokenizer) {
    w.write(as_bytes(src.vocab_json()));
    w.write(as_bytes(src.merges_txt()));
    written += src.vocab_json().size() + src.merges_txt().size();
    if (progress) progress(count, count, "tokenizer", total, total);
  }
  w.finish();
  rep.file_bytes = w.bytes_total();
  if (prune) {
    rep.layer_relative_error.assign(size_t(c.num_hidden_layers), 0.0);
    std::vector<double> norm(size_t(c.num_hidden_layers), 0.0), dropped(size_t(c.num_hidden_layers), 0.0);
    for (const auto& l : rep.linears) {
      norm[size_t(l.layer)] += l.norm_sq;
      dropped[size_t(l.layer)] += l.dropped_sq;
    }
    for (size_t i = 0; i < norm.size(); ++i)
      rep.layer_relative_error[i] = norm[i] > 0 ? std::sqrt(dropped[i] / norm[i]) : 0.0;
  }
  return rep;
}

}  // namespace sf::model
