#include "model/sparsegpt_model.hpp"

#include <algorithm>
#include <chrono>
#include <memory>

#include "core/error.hpp"
#include "model/cpu_engine.hpp"
#include "model/patched_model.hpp"

namespace sf::model {

void check_sparsegpt_inputs(const Model& src, std::span<const int32_t> tokens,
                            const SparseGptModelOptions& opt) {
  if (tokens.empty())
    fail(Status::InvalidArgument,
         "SparseGPT calibration needs tokens; the calibration text is empty");
  if (!opt.solver.mask.empty())
    fail(Status::InvalidArgument,
         "SparseGPT over a model chooses its own masks; leave the mask empty");
  if (opt.window < 0)
    fail(Status::InvalidArgument,
         "SparseGPT: the calibration window must be a positive number of tokens (0: the model's "
         "context), got {}",
         opt.window);
  if (src.is_sparse())
    fail(Status::UnsupportedShape,
         "the model is already 2:4-compressed; SparseGPT prunes from the dense checkpoint");
  if (src.is_neuron_major())
    fail(Status::UnsupportedShape,
         "the model is neuron-major; convert it back to row-major (without --neuron-major) first");
}

std::vector<std::span<const int32_t>> calibration_windows(const arch::ModelDesc& c,
                                                          std::span<const int32_t> tokens,
                                                          int64_t window) {
  int64_t w = c.max_position_embeddings;
  if (c.sliding_window > 0) w = std::min<int64_t>(w, c.sliding_window);
  if (window > 0) w = std::min(w, window);
  std::vector<std::span<const int32_t>> out;
  for (size_t start = 0; start < tokens.size(); start += size_t(w))
    out.push_back(tokens.subspan(start, std::min(tokens.size() - start, size_t(w))));
  return out;
}

PrunedWeight pruned_weight(const s24::SparseGptResult& r, const Tensor& t,
                           std::optional<DType> dtype) {
  PrunedWeight p;
  p.dtype = dtype.value_or(t.dtype);
  p.shape = t.shape;
  p.values.resize(r.weight.size() * dtype_size(p.dtype));
  for (size_t i = 0; i < r.weight.size(); ++i)
    store_from_float(p.values.data(), p.dtype, i, float(r.weight[i]));
  p.relative_output_error = r.relative_output_error();
  return p;
}

std::map<std::string, PrunedWeight> sparsegpt_prune_model(const Model& src,
                                                          std::span<const int32_t> tokens,
                                                          const SparseGptModelOptions& opt,
                                                          const LayerProgress& progress) {
  check_sparsegpt_inputs(src, tokens, opt);
  const arch::ModelDesc& c = src.config();
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };

  PatchedModel work(src);
  std::map<std::string, PrunedWeight> out;
  // The calibration windows and, per window, the residual stream entering the next layer to prune:
  // computed once through the pruned layers, so the whole run costs two passes of the model.
  const auto windows = calibration_windows(c, tokens, opt.window);
  KvCache cache(c, int64_t(windows[0].size()));  // length stays 0: each window alone
  std::vector<std::vector<float>> hidden;        // [window][tokens, hidden]
  {
    CpuEngine engine(work);
    for (const auto& w : windows) hidden.push_back(engine.embed(w, cache));
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string layer = c.layer_prefix(l);
    std::map<std::string, s24::Hessian> hessians;  // by linear prefix, "model.layers.3.mlp.up_proj"
    {
      CpuEngine engine(work);  // layer l still dense: its linears' inputs, as the model runs them
      engine.set_observer([&](const std::string& prefix, const float* x, int64_t rows, int64_t in) {
        hessians.try_emplace(prefix, in).first->second.add(x, rows);
      });
      for (const auto& h : hidden) {
        std::vector<float> scratch = h;
        engine.run_layer(l, scratch, cache);
      }
    }
    for (const std::string& suffix : c.layer_linears()) {
      const std::string prefix = layer + suffix, name = prefix + ".weight";
      const auto h = hessians.find(prefix);
      if (h == hessians.end())
        fail(Status::Internal, "SparseGPT: the calibration pass never ran {}", prefix);
      const Tensor& t = work.tensor(name);
      if (t.shape.size() != 2)
        fail(Status::UnsupportedShape, "SparseGPT: {} is not a matrix", name);
      s24::SparseGptResult r;
      try {
        r = s24::sparsegpt_prune({t.data, t.dtype, t.shape[0], t.shape[1]}, h->second.matrix(),
                                 opt.solver);
      } catch (const Error& e) {
        fail(e.status(), "{}: {}", name, e.what());
      }
      auto& slot = out[name] = pruned_weight(r, t, opt.dtype);
      work.replace(name, slot);  // a view into out, whose nodes never move
    }
    CpuEngine engine(work);  // layer l pruned: what the next layer will see
    for (auto& h : hidden) engine.run_layer(l, h, cache);
    if (progress) progress(l + 1, c.num_hidden_layers, seconds());
  }
  return out;
}

}  // namespace sf::model
