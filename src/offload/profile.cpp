#include "offload/profile.hpp"

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>

#include "core/error.hpp"
#include "format/sf_file.hpp"
#include "model/opt_cpu.hpp"
#include "offload/neuron_store.hpp"
#include "offload/synth_profile.hpp"

namespace sf::offload {

namespace {

struct LayerCounts {
  std::vector<int64_t> fired;     // [ffn]
  std::vector<uint8_t> prev;      // [ffn] previous token's active set (empty at a window start)
  double sparsity_sum = 0, jaccard_sum = 0;
  int64_t tokens = 0, pairs = 0;
  double sparsity_min = 1, sparsity_max = 0;
};

}  // namespace

ProfileResult profile_activations(const model::Model& model, std::span<const int32_t> tokens,
                                  const ProfileOptions& opt) {
  if (opt.device != "cpu")
    fail(Status::InvalidArgument, "profile --device {}: this build profiles on the CPU backend only (the CUDA engine "
         "can provide the same FfnObserver hook); use --device cpu", opt.device);
  if (tokens.size() < 2)
    fail(Status::InvalidArgument, "profiling needs at least 2 calibration tokens, got {}; give more text", tokens.size());
  model::OptCpu cpu(model);
  const auto& c = cpu.config();
  const int64_t F = c.ffn_dim, L = c.num_hidden_layers;
  std::vector<LayerCounts> counts(static_cast<size_t>(L));
  for (auto& lc : counts) lc.fired.assign(size_t(F), 0);
  cpu.set_ffn_observer([&](const model::FfnObservation& o) {
    LayerCounts& lc = counts[size_t(o.layer)];
    if (o.position == 0) lc.prev.clear();  // a new window: no previous token
    std::vector<uint8_t> cur(static_cast<size_t>(F));
    for (int64_t r = 0; r < o.rows; ++r) {
      const float* z = o.pre_act + r * F;
      int64_t active = 0;
      for (int64_t j = 0; j < F; ++j) {
        const bool a = z[j] > 0.0f;
        cur[size_t(j)] = a;
        active += a;
        lc.fired[size_t(j)] += a;
      }
      const double sp = 1.0 - double(active) / double(F);
      lc.sparsity_sum += sp;
      lc.sparsity_min = std::min(lc.sparsity_min, sp);
      lc.sparsity_max = std::max(lc.sparsity_max, sp);
      ++lc.tokens;
      if (!lc.prev.empty()) {
        int64_t inter = 0, uni = 0;
        for (int64_t j = 0; j < F; ++j) {
          inter += cur[size_t(j)] & lc.prev[size_t(j)];
          uni += cur[size_t(j)] | lc.prev[size_t(j)];
        }
        lc.jaccard_sum += uni ? double(inter) / double(uni) : 1.0;
        ++lc.pairs;
      }
      lc.prev = cur;
    }
  });
  const int64_t window = opt.window > 0 ? std::min(opt.window, c.max_position_embeddings) : c.max_position_embeddings;
  model::KvCache cache = cpu.make_cache(window);
  for (size_t start = 0; start < tokens.size(); start += size_t(window)) {
    cache.clear();
    const size_t len = std::min(tokens.size() - start, size_t(window));
    cpu.forward(tokens.subspan(start, len), cache);
  }

  ProfileResult r;
  r.tokens = int64_t(tokens.size());
  r.hot_share = opt.hot_share;
  for (auto& lc : counts) {
    LayerProfile lp;
    lp.firing_rate.resize(size_t(F));
    for (int64_t j = 0; j < F; ++j) lp.firing_rate[size_t(j)] = float(double(lc.fired[size_t(j)]) / double(lc.tokens));
    lp.sparsity = lc.sparsity_sum / double(lc.tokens);
    lp.sparsity_min = lc.sparsity_min;
    lp.sparsity_max = lc.sparsity_max;
    lp.hot_fraction = hot_fraction_for_share(lp.firing_rate, opt.hot_share);
    lp.jaccard = lc.pairs ? lc.jaccard_sum / double(lc.pairs) : 0.0;
    r.sparsity += lp.sparsity / double(L);
    r.hot_fraction += lp.hot_fraction / double(L);
    r.jaccard += lp.jaccard / double(L);
    r.sparsity_min = std::min(r.sparsity_min, lp.sparsity_min);
    r.sparsity_max = std::max(r.sparsity_max, lp.sparsity_max);
    r.layers.push_back(std::move(lp));
  }
  return r;
}

std::string profile_table(const ProfileResult& r) {
  std::string s = fmt::format("{:>5}  {:>9}  {:>17}  {:>13}  {:>8}\n", "layer", "sparsity", "token range",
                              fmt::format("hot {:.0f}%", r.hot_share * 100), "jaccard");
  for (size_t l = 0; l < r.layers.size(); ++l) {
    const auto& p = r.layers[l];
    s += fmt::format("{:>5}  {:>9.4f}  {:>8.4f}..{:<7.4f}  {:>13.4f}  {:>8.4f}\n", l, p.sparsity, p.sparsity_min,
                     p.sparsity_max, p.hot_fraction, p.jaccard);
  }
  s += fmt::format("{:>5}  {:>9.4f}  {:>8.4f}..{:<7.4f}  {:>13.4f}  {:>8.4f}\n", "all", r.sparsity, r.sparsity_min,
                   r.sparsity_max, r.hot_fraction, r.jaccard);
  s += fmt::format("({} tokens; sparsity = fraction of FFN neurons with relu(z) = 0 per token; hot = smallest "
                   "fraction of neurons carrying {:.0f}% of firings; jaccard = active-set overlap of consecutive "
                   "tokens)\n", r.tokens, r.hot_share * 100);
  return s;
}

void rewrite_sf(const std::string& path, const std::vector<NewTensor>& add, const nlohmann::json& metadata,
                const std::function<bool(const std::string&)>& drop) {
  const sff::File f = sff::File::open(path);
  std::set<std::string> replaced;
  for (const auto& t : add) replaced.insert(t.name);
  std::vector<sff::EntrySpec> specs;
  std::vector<const sff::Entry*> kept;
  std::vector<std::string> req;
  for (const auto& e : f.entries()) {
    if (replaced.count(e.name) || (drop && drop(e.name))) continue;
    sff::EntrySpec sp{e.name, e.kind, e.dtype, e.shape, e.padded_shape, {}};
    for (const auto& p : e.parts) sp.parts.emplace_back(p.role, p.size);
    specs.push_back(std::move(sp));
    kept.push_back(&e);
    // Features follow from the kinds present (the table is what a reader must understand).
    const char* feature = e.kind == sff::kKindS24 ? "s24" : e.kind == kKindFfnNeurons ? kFeatureNeuronMajor : nullptr;
    if (feature && std::find(req.begin(), req.end(), feature) == req.end()) req.push_back(feature);
  }
  for (const auto& t : add) {
    auto sp = sff::dense_spec(t.name, t.dtype, t.shape);
    if (sp.parts[0].second != t.bytes.size())
      fail(Status::Internal, "rewrite_sf: tensor {} has {} bytes, its shape needs {}", t.name, t.bytes.size(),
           sp.parts[0].second);
    specs.push_back(std::move(sp));
  }
  nlohmann::json meta = f.metadata();
  for (const auto& [k, v] : metadata.items()) meta[k] = v;
  sff::Writer w(path, f.architecture(), f.config(), meta, specs, req);
  for (const sff::Entry* e : kept)
    for (const auto& p : e->parts) w.write(f.data(p));
  for (const auto& t : add) w.write(t.bytes);
  w.finish();
}

void write_profile(const std::string& path, const ProfileResult& r, const std::string& calibration_name) {
  std::vector<NewTensor> add;
  for (size_t l = 0; l < r.layers.size(); ++l) {
    const auto& fr = r.layers[l].firing_rate;
    NewTensor t{firing_rate_name(int64_t(l)), DType::F32, {int64_t(fr.size())}, {}};
    t.bytes.resize(fr.size() * 4);
    std::memcpy(t.bytes.data(), fr.data(), t.bytes.size());
    add.push_back(std::move(t));
  }
  const nlohmann::json meta = {{"profile.tokens", r.tokens},
                               {"profile.calibration", calibration_name},
                               {"profile.sparsity", r.sparsity},
                               {"profile.hot_share", r.hot_share},
                               {"profile.hot_fraction", r.hot_fraction},
                               {"profile.jaccard", r.jaccard}};
  rewrite_sf(path, add, meta, [](const std::string& n) { return n.rfind("profile.layers.", 0) == 0; });
}

}  // namespace sf::offload
