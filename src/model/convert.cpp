#include "model/convert.hpp"

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>

#include <fmt/ranges.h>

#include "core/error.hpp"
#include "format/hf_config.hpp"
#include "format/neuron_bundles.hpp"
#include "format/sf_file.hpp"
#include "model/engine_checks.hpp"
#include "tokenizer/spm_tokenizer.hpp"

namespace sf::model {

namespace {

std::span<const uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
std::span<const uint8_t> as_bytes(const std::vector<uint32_t>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(uint32_t)};
}

// "model.layers.12.mlp.up_proj.weight" -> 12; -1 for tensors outside the decoder layers.
int64_t layer_of(const arch::ModelDesc& c, const std::string& name) {
  const std::string key = c.names.layer.substr(0, c.names.layer.find("{}"));
  if (name.rfind(key, 0) != 0) return -1;
  return std::stoll(name.substr(key.size()));
}

// One layer's FFN in the source's neuron index space (fc1 row s, b1[s], fc2 column s), in dtype dt.
struct FfnSource {
  std::vector<uint8_t> w1, b1, w2;  // [F, d], [F] (empty: no bias), [d, F]
};
FfnSource ffn_source(const Model& src, int64_t l, DType dt) {
  const int64_t F = src.config().ffn_dim, H = src.config().hidden_size;
  const size_t e = dtype_size(dt);
  FfnSource f;
  const std::string p = fmt::format("model.decoder.layers.{}.", l);
  if (const NeuronMajorFfn* nm = src.ffn_neurons(l)) {
    const auto L = format::BundleLayout::make(H, nm->dtype);
    f.w1.resize(size_t(F * H) * e);
    f.w2.resize(size_t(F * H) * e);
    f.b1.resize(size_t(F) * e);
#pragma omp parallel for schedule(static)
    for (int64_t s = 0; s < F; ++s) {
      const uint8_t* b = nm->bundles + uint64_t(s) * nm->stride;
      for (int64_t i = 0; i < H; ++i) {
        store_from_float(f.w1.data(), dt, size_t(s * H + i),
                         load_as_float(b + L.fc1_offset, nm->dtype, size_t(i)));
        store_from_float(f.w2.data(), dt, size_t(i * F + s),
                         load_as_float(b + L.fc2_offset, nm->dtype, size_t(i)));
      }
      store_from_float(f.b1.data(), dt, size_t(s), load_as_float(b + L.bias_offset, nm->dtype, 0));
    }
    if (!src.config().mlp_bias) f.b1.clear();
  } else {
    f.w1 = convert_elements(src.tensor(p + "fc1.weight"), dt);
    f.w2 = convert_elements(src.tensor(p + "fc2.weight"), dt);
    if (const Tensor* b = src.find(p + "fc1.bias")) f.b1 = convert_elements(*b, dt);
  }
  return f;
}

// Rows / columns of a per-neuron tensor in output order: out[.., k] = in[.., perm[k]].
std::vector<uint8_t> permute_last_dim(const Tensor& t, std::span<const int32_t> perm) {
  const size_t e = dtype_size(t.dtype), n = perm.size(), outer = size_t(t.numel()) / n;
  std::vector<uint8_t> out(size_t(t.numel()) * e);
  const auto* in = static_cast<const uint8_t*>(t.data);
  for (size_t r = 0; r < outer; ++r)
    for (size_t k = 0; k < n; ++k)
      std::memcpy(out.data() + (r * n + k) * e, in + (r * n + size_t(perm[k])) * e, e);
  return out;
}

// "profile.layers.3.firing_rate" -> 3 when the tensor's last dimension indexes neurons, else -1.
int64_t per_neuron_layer(const std::string& name, int64_t ffn, const Tensor& t) {
  for (const char* pre : {"profile.layers.", "predictor.layers."}) {
    const std::string ps(pre);
    if (name.rfind(ps, 0) != 0) continue;
    const size_t dot = name.find('.', ps.size());
    if (dot == std::string::npos) return -1;
    const std::string tail = name.substr(dot + 1);
    if (tail != "firing_rate" && tail != "threshold" && tail != "v") return -1;
    if (t.shape.empty() || t.shape.back() != ffn) return -1;
    return std::stoll(name.substr(ps.size(), dot - ps.size()));
  }
  return -1;
}

// A weight SparseGPT already pruned, compressed; the error is against the source weight, so it
// counts the kept weights' updates as well as the dropped ones.
Pruned compress_pruned(const Tensor& source, const PrunedWeight& w) {
  const s24::MatrixView view{w.values.data(), w.dtype, w.shape[0], w.shape[1]};
  Pruned p;
  p.compressed = s24::compress(view);  // throws, naming the group, should the pattern not be 2:4
  double total = 0, changed = 0;
  for (size_t i = 0; i < size_t(source.numel()); ++i) {
    const double a = load_as_float(source.data, source.dtype, i),
                 b = load_as_float(view.data, w.dtype, i);
    total += a * a;
    changed += (a - b) * (a - b);
  }
  p.relative_error = total > 0 ? std::sqrt(changed / total) : 0.0;
  p.norm_sq = total;
  p.dropped_sq = changed;
  return p;
}

}  // namespace

std::map<std::string, PrunedWeight> prune_linears(const Model& src, const ConvertOptions& opt) {
  if (opt.method == "sparsegpt") return opt.pruned;
  const arch::ModelDesc& c = src.config();
  std::map<std::string, PrunedWeight> out;
  for (const auto& e : arch::expected_tensors(c, !c.tie_word_embeddings)) {
    if (!e.prunable) continue;
    const Tensor& t = src.tensor(e.name);
    const DType dt = opt.dtype.value_or(t.dtype);
    std::span<const float> norms;
    if (opt.method == "wanda") {
      const auto it = opt.act_norms.find(e.name.substr(0, e.name.size() - 7));
      if (it == opt.act_norms.end())
        fail(Status::InvalidArgument, "Wanda pruning has no activation norms for '{}'", e.name);
      norms = it->second;
    }
    const Pruned p = prune_24(t, dt, norms);
    PrunedWeight w;
    w.dtype = dt;
    w.shape = e.shape;
    w.values.resize(size_t(t.numel()) * dtype_size(dt));
    s24::decompress(p.compressed, w.values.data());
    w.relative_output_error = -1;
    out.emplace(e.name, std::move(w));
  }
  return out;
}

ConvertReport convert_to_sf(const Model& src, const std::string& output, const ConvertOptions& opt,
                            const ConvertProgress& progress) {
  if (opt.sparsity != "none" && opt.sparsity != "2:4")
    fail(Status::InvalidArgument, "--sparsity \"{}\" is not supported; use none or 2:4",
         opt.sparsity);
  const bool prune = opt.sparsity == "2:4";
  if (prune && opt.method != "magnitude" && opt.method != "wanda" && opt.method != "sparsegpt")
    fail(Status::InvalidArgument,
         "--method \"{}\" is not supported; use magnitude, wanda or sparsegpt", opt.method);
  if (prune && opt.neuron_major)
    fail(Status::InvalidArgument,
         "--neuron-major cannot be combined with --sparsity 2:4 yet: neuron bundles are "
         "dense in this build (the 2:4 bundle kind ffn_neurons_s24 is specified in docs/FORMAT.md "
         "but not written). "
         "Write a dense neuron-major file for offloading, or a row-major 2:4 file.");
  const bool wanda = prune && opt.method == "wanda";
  const bool sparsegpt = prune && opt.method == "sparsegpt";
  if (opt.neuron_major && src.config().arch != "opt")
    fail(Status::UnsupportedShape,
         "--neuron-major writes OPT's ReLU FFN as neuron bundles for offloading; this "
         "is a \"{}\" model. Activation-sparse offloading of other architectures is not built yet: "
         "convert "
         "without --neuron-major",
         src.config().arch);
  if (src.is_sparse())
    fail(Status::UnsupportedShape,
         "the input model is already 2:4-compressed; convert from the dense "
         "checkpoint instead");
  if (prune && src.is_neuron_major())
    fail(Status::UnsupportedShape,
         "the input model is neuron-major; convert it back to row-major (without "
         "--neuron-major) first, then prune that");
  if (opt.dtype && *opt.dtype != DType::F16 && *opt.dtype != DType::BF16 &&
      *opt.dtype != DType::F32)
    fail(Status::InvalidArgument, "--dtype {} is not a weight type; use fp16, bf16 or fp32",
         dtype_name(*opt.dtype));

  const arch::ModelDesc& c = src.config();
  const int64_t F = c.ffn_dim;
  const auto expected = arch::expected_tensors(c, !c.tie_word_embeddings);
  const DType model_dt = opt.dtype.value_or(src.dtype());

  // Per layer: which source neuron each output position holds (empty = the same), and the
  // original index of each output position (neuron_order).
  std::vector<std::vector<int32_t>> perm(size_t(c.num_hidden_layers)),
      out_order(size_t(c.num_hidden_layers));
  bool any_perm = false;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const NeuronMajorFfn* nm = src.ffn_neurons(l);
    auto& P = perm[size_t(l)];
    if (!opt.neuron_major) {
      if (nm) {  // back to row-major: row i is original neuron i
        P.resize(size_t(F));
        for (int64_t s = 0; s < F; ++s) P[size_t(nm->order[s])] = int32_t(s);
      }
    } else if (const Tensor* r = src.find(format::firing_rate_name(l));
               r && opt.hotness_order && r->dtype == DType::F32 && r->numel() == F) {
      P = format::hotness_order({static_cast<const float*>(r->data), size_t(F)});
    }
    bool identity = true;
    for (size_t k = 0; k < P.size() && identity; ++k) identity = P[k] == int32_t(k);
    if (identity) P.clear();
    any_perm = any_perm || !P.empty();
    auto& O = out_order[size_t(l)];
    O.resize(size_t(F));
    for (int64_t k = 0; k < F; ++k) {
      const int32_t s = P.empty() ? int32_t(k) : P[size_t(k)];
      O[size_t(k)] = nm ? nm->order[s] : s;
    }
  }

  // The output table, each entry with the code that writes its parts.
  struct Item {
    sff::EntrySpec spec;
    std::function<void(sff::Writer&, uint64_t&)> write;  // (writer, bytes written so far)
    bool expected_tensor = false;
  };
  std::vector<Item> items;
  ConvertReport rep;
  std::optional<DType> out_dtype_first;
  const std::string fc1w = ".fc1.weight", fc1b = ".fc1.bias", fc2w = ".fc2.weight";
  auto ends_with = [](const std::string& s, const std::string& suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  for (const auto& e : expected) {
    const int64_t layer = layer_of(c, e.name);
    const bool ffn_part = layer >= 0 && (ends_with(e.name, fc1w) || ends_with(e.name, fc1b) ||
                                         ends_with(e.name, fc2w));
    int64_t numel = 1;
    for (auto d : e.shape) numel *= d;
    rep.parameters += numel;
    const bool bundled = ffn_part && (opt.neuron_major || src.ffn_neurons(layer));
    const DType dt = bundled ? model_dt : opt.dtype.value_or(src.tensor(e.name).dtype);
    if (!out_dtype_first) out_dtype_first = dt;
    rep.dense_bytes += uint64_t(numel) * dtype_size(dt);
    if (bundled) {
      if (!ends_with(e.name, fc1w)) continue;  // fc1.bias and fc2.weight travel with fc1.weight
      const auto L = format::BundleLayout::make(c.hidden_size, dt);
      if (opt.neuron_major) {
        sff::EntrySpec sp;
        sp.name = format::ffn_neurons_name(layer);
        sp.kind = format::kKindFfnNeurons;
        sp.dtype = dt;
        sp.shape = {F, 2 * c.hidden_size + 1};
        sp.parts = {{"bundles", uint64_t(F) * L.stride}};
        items.push_back({sp,
                         [&, layer, dt, L](sff::Writer& w, uint64_t& written) {
                           const FfnSource f = ffn_source(src, layer, dt);
                           std::vector<uint8_t> out(size_t(F) * L.stride);
                           format::pack_bundles(L, F, f.w1.data(),
                                                f.b1.empty() ? nullptr : f.b1.data(), f.w2.data(),
                                                perm[size_t(layer)], out.data());
                           w.write(out);
                           written += out.size();
                         },
                         true});
        const auto& O = out_order[size_t(layer)];
        items.push_back({sff::dense_spec(format::neuron_order_name(layer), DType::I32, {F}),
                         [&O](sff::Writer& w, uint64_t& written) {
                           w.write({reinterpret_cast<const uint8_t*>(O.data()), O.size() * 4});
                           written += O.size() * 4;
                         },
                         false});
      } else {  // neuron-major source -> row-major: fc1.weight, fc1.bias, fc2.weight in original
                // order
        const std::string p = e.name.substr(0, e.name.size() - fc1w.size());
        std::vector<sff::EntrySpec> specs = {sff::dense_spec(p + fc1w, dt, {F, c.hidden_size})};
        if (c.mlp_bias) specs.push_back(sff::dense_spec(p + fc1b, dt, {F}));
        specs.push_back(sff::dense_spec(p + fc2w, dt, {c.hidden_size, F}));
        auto shared = std::make_shared<FfnSource>();
        for (size_t k = 0; k < specs.size(); ++k) {
          const std::string nm = specs[k].name;
          items.push_back({specs[k],
                           [&, layer, dt, shared, nm](sff::Writer& w, uint64_t& written) {
                             const auto& P = perm[size_t(layer)];
                             const size_t es = dtype_size(dt);
                             if (ends_with(nm, fc1w)) *shared = ffn_source(src, layer, dt);
                             std::vector<uint8_t> out;
                             if (P.empty()) {  // already in the original order
                               out = ends_with(nm, fc1w)   ? shared->w1
                                     : ends_with(nm, fc1b) ? shared->b1
                                                           : shared->w2;
                             } else if (ends_with(nm, fc1w)) {
                               out.resize(shared->w1.size());
                               const size_t row = size_t(c.hidden_size) * es;
                               for (int64_t k2 = 0; k2 < F; ++k2)
                                 std::memcpy(out.data() + size_t(k2) * row,
                                             shared->w1.data() + size_t(P[size_t(k2)]) * row, row);
                             } else if (ends_with(nm, fc1b)) {
                               out.resize(shared->b1.size());
                               for (int64_t k2 = 0; k2 < F; ++k2)
                                 std::memcpy(out.data() + size_t(k2) * es,
                                             shared->b1.data() + size_t(P[size_t(k2)]) * es, es);
                             } else {
                               const Tensor t{dt, {c.hidden_size, F}, shared->w2.data()};
                               out = permute_last_dim(t, P);
                             }
                             if (ends_with(nm, fc2w)) *shared = FfnSource{};
                             w.write(out);
                             written += out.size();
                           },
                           true});
        }
      }
      continue;
    }
    if (prune && e.prunable && !opt.keep_dense.count(e.name)) {
      const auto given_it = opt.pruned.find(e.name);
      if (wanda && given_it == opt.pruned.end()) {
        const std::string prefix = e.name.substr(0, e.name.size() - std::string(".weight").size());
        const auto it = opt.act_norms.find(prefix);
        if (it == opt.act_norms.end())
          fail(Status::InvalidArgument,
               "Wanda pruning has no activation norms for '{}'; the calibration run "
               "must cover every decoder linear",
               prefix);
      }
      if (sparsegpt && given_it == opt.pruned.end())
        fail(Status::InvalidArgument,
             "SparseGPT pruning has no pruned weight for '{}'; prune the same "
             "model with sparsegpt_prune_model first",
             e.name);
      if (given_it != opt.pruned.end() &&
          (given_it->second.dtype != dt || given_it->second.shape != e.shape))
        fail(Status::InvalidArgument,
             "the pruned '{}' given is {} {}, the output needs {} {}; prune "
             "with the output dtype",
             e.name, dtype_name(given_it->second.dtype), shape_str(given_it->second.shape),
             dtype_name(dt), shape_str(e.shape));
      const PrunedWeight* given = given_it == opt.pruned.end() ? nullptr : &given_it->second;
      items.push_back({sff::s24_spec(e.name, dt, e.shape[0], e.shape[1]),
                       [&, e, dt, given](sff::Writer& w, uint64_t& written) {
                         std::span<const float> norms;
                         if (wanda && !given)
                           norms = opt.act_norms.at(e.name.substr(0, e.name.size() - 7));
                         const Pruned p = given ? compress_pruned(src.tensor(e.name), *given)
                                                : prune_24(src.tensor(e.name), dt, norms);
                         w.write(p.compressed.values);
                         w.write(as_bytes(p.compressed.meta));
                         written += p.compressed.compressed_bytes();
                         rep.linears.push_back({e.name, layer_of(c, e.name), p.relative_error,
                                                p.norm_sq, p.dropped_sq,
                                                given ? given->relative_output_error : -1.0});
                       },
                       true});
    } else {
      items.push_back({sff::dense_spec(e.name, dt, e.shape),
                       [&, e, dt](sff::Writer& w, uint64_t& written) {
                         const auto bytes = convert_elements(src.tensor(e.name), dt);
                         w.write(bytes);
                         written += bytes.size();
                       },
                       true});
    }
  }
  // Activation profiles and predictors of the source, in the output's neuron order.
  for (const auto& [name, t] : src.dense_tensors()) {
    if (name.rfind("profile.", 0) != 0 && name.rfind("predictor.", 0) != 0) continue;
    const int64_t layer = per_neuron_layer(name, F, t);
    items.push_back({sff::dense_spec(name, t.dtype, t.shape),
                     [&, layer, tp = &t](sff::Writer& w, uint64_t& written) {
                       const size_t n = size_t(tp->numel()) * dtype_size(tp->dtype);
                       if (layer >= 0 && layer < c.num_hidden_layers &&
                           !perm[size_t(layer)].empty()) {
                         const auto out = permute_last_dim(*tp, perm[size_t(layer)]);
                         w.write(out);
                       } else {
                         w.write({static_cast<const uint8_t*>(tp->data), n});
                       }
                       written += n;
                     },
                     false});
  }
  auto add_bytes = [&](const char* name, const std::string& text) {
    items.push_back({sff::bytes_spec(name, text.size()),
                     [&text](sff::Writer& w, uint64_t& written) {
                       w.write(as_bytes(text));
                       written += text.size();
                     },
                     false});
  };
  // A checkpoint's tokenizer.model is stored as the tokenizer.json transformers converts it to,
  // with the tokenizer_config.json that conversion completes: a .sf file has one tokenizer form.
  tok::SpmConversion spm;
  if (src.tokenizer_json().empty() && !src.tokenizer_model().empty()) {
    try {
      spm = tok::tokenizer_json_from_spm(src.tokenizer_model(), src.tokenizer_config_json());
    } catch (const Error& e) {
      throw Error(e.status(),
                  fmt::format("{} (convert stores the checkpoint's tokenizer in the .sf "
                              "file; to convert without it, move tokenizer.model "
                              "out of the checkpoint directory)",
                              e.what()));
    }
  }
  const bool from_spm = !spm.tokenizer_json.empty();
  const std::string& tok_json = from_spm ? spm.tokenizer_json : src.tokenizer_json();
  const std::string& tok_config =
      from_spm ? spm.tokenizer_config_json : src.tokenizer_config_json();
  const bool tokenizer_json = !tok_json.empty();
  if (tokenizer_json) add_bytes("tokenizer.json", tok_json);
  if (tokenizer_json && !tok_config.empty()) add_bytes("tokenizer.config.json", tok_config);
  if (!src.chat_template().empty()) add_bytes("tokenizer.chat_template", src.chat_template());
  const bool tokenizer = !tokenizer_json && !src.vocab_json().empty() && !src.merges_txt().empty();
  if (tokenizer) {
    items.push_back({sff::bytes_spec("tokenizer.vocab.json", src.vocab_json().size()),
                     [&](sff::Writer& w, uint64_t& written) {
                       w.write(as_bytes(src.vocab_json()));
                       written += src.vocab_json().size();
                     },
                     false});
    items.push_back({sff::bytes_spec("tokenizer.merges.txt", src.merges_txt().size()),
                     [&](sff::Writer& w, uint64_t& written) {
                       w.write(as_bytes(src.merges_txt()));
                       written += src.merges_txt().size();
                     },
                     false});
  }
  std::vector<sff::EntrySpec> specs;
  for (const auto& it : items) {
    specs.push_back(it.spec);
    if (it.expected_tensor)
      for (const auto& p : it.spec.parts) rep.weight_bytes += p.second;
  }

  nlohmann::json meta = {
      {"sparseflow.converter_version", kConverterVersion},
      {"sparsity.pattern", prune ? "2:4" : "none"},
      {"sparsity.method", prune ? opt.method : "none"},
      {"sparsity.pruned",
       prune ? fmt::format("{} of every decoder layer{}", fmt::join(c.layer_linears(), ", "),
                           opt.keep_dense.empty() ? "" : ", except sparsity.dense_linears")
             : ""},
      {"weights.dtype", std::string(dtype_name(out_dtype_first.value_or(DType::F16)))},
      {"tokenizer.type", tokenizer_json ? "hf-tokenizer-json"
                         : tokenizer    ? "gpt2-byte-level-bpe"
                                        : "none"},
  };
  if (from_spm) meta["tokenizer.source"] = "tokenizer.model";
  if (!src.bos_token().empty()) meta["tokenizer.bos_token"] = src.bos_token();
  if (!src.eos_token().empty()) meta["tokenizer.eos_token"] = src.eos_token();
  for (const auto& [k, v] : src.metadata().items())
    if (k.rfind("source.", 0) == 0 || k.rfind("weights.", 0) == 0 || k.rfind("profile.", 0) == 0 ||
        k.rfind("predictor.", 0) == 0 || k.rfind("synth.", 0) == 0)
      meta[k] = v;
  if (opt.neuron_major) {
    meta["ffn.layout"] = "neuron_major";
    meta["ffn.bundle_stride"] = format::BundleLayout::make(c.hidden_size, model_dt).stride;
    meta["ffn.neuron_order"] =
        any_perm ? "hotness (profile.layers.N.firing_rate, highest first)" : "identity";
  }
  for (const auto& [k, v] : opt.extra_metadata.items()) meta[k] = v;
  std::vector<std::string> requires_features;
  if (prune) requires_features.push_back("s24");
  if (opt.neuron_major) requires_features.push_back(format::kFeatureNeuronMajor);

  sff::Writer w(output, c.arch, format::hf_config_json(c), meta, specs, requires_features);
  uint64_t written = 0, total = 0;  // progress counts tensor bytes
  for (const auto& sp : specs)
    for (const auto& part : sp.parts) total += part.second;
  for (size_t i = 0; i < items.size(); ++i) {
    items[i].write(w, written);
    if (progress) progress(i + 1, items.size(), items[i].spec.name, written, total);
  }
  w.finish();
  rep.file_bytes = w.bytes_total();
  if (prune) {
    rep.layer_relative_error.assign(size_t(c.num_hidden_layers), 0.0);
    std::vector<double> norm(size_t(c.num_hidden_layers), 0.0),
        dropped(size_t(c.num_hidden_layers), 0.0);
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
