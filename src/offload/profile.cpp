#include "offload/profile.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include <fmt/format.h>

#include "core/error.hpp"
#include "format/sf_file.hpp"
#include "model/cpu_engine.hpp"
#include "offload/neuron_store.hpp"
#include "offload/synth_profile.hpp"

namespace sf::offload {

namespace {

// Per-layer counts over the rows (tokens) seen; rows of one sequence arrive in order.
struct LayerCounts {
  std::vector<int64_t> fired;     // [ffn]
  std::vector<uint8_t> prev, cur; // [ffn] the previous and current token's active sets
  bool has_prev = false;          // false at a sequence start
  double sparsity_sum = 0, jaccard_sum = 0;
  int64_t tokens = 0, pairs = 0;
  double sparsity_min = 1, sparsity_max = 0;

  explicit LayerCounts(int64_t F) : fired(size_t(F), 0), prev(size_t(F), 0), cur(size_t(F), 0) {}

  // `rows` consecutive tokens' pre-activations [rows, F]; `sequence_start`: the first row begins a sequence.
  void add(const float* pre_act, int64_t rows, bool sequence_start) {
    const int64_t F = int64_t(fired.size());
    if (sequence_start) has_prev = false;
    for (int64_t r = 0; r < rows; ++r) {
      const float* z = pre_act + r * F;
      int64_t active = 0, inter = 0, uni = 0;
      for (int64_t j = 0; j < F; ++j) {
        const uint8_t a = z[j] > 0.0f;
        cur[size_t(j)] = a;
        active += a;
        fired[size_t(j)] += a;
        inter += a & prev[size_t(j)];
        uni += a | prev[size_t(j)];
      }
      const double sp = 1.0 - double(active) / double(F);
      sparsity_sum += sp;
      sparsity_min = std::min(sparsity_min, sp);
      sparsity_max = std::max(sparsity_max, sp);
      ++tokens;
      if (has_prev) {
        jaccard_sum += uni ? double(inter) / double(uni) : 1.0;
        ++pairs;
      }
      std::swap(prev, cur);
      has_prev = true;
    }
  }

  LayerProfile finish(double hot_share) const {
    const int64_t F = int64_t(fired.size());
    LayerProfile lp;
    lp.firing_rate.resize(size_t(F));
    for (int64_t j = 0; j < F; ++j) lp.firing_rate[size_t(j)] = float(double(fired[size_t(j)]) / double(tokens));
    lp.sparsity = sparsity_sum / double(tokens);
    lp.sparsity_min = sparsity_min;
    lp.sparsity_max = sparsity_max;
    lp.hot_fraction = hot_fraction_for_share(lp.firing_rate, hot_share);
    lp.jaccard = pairs ? jaccard_sum / double(pairs) : 0.0;
    return lp;
  }
};

ProfileResult summarize(const std::vector<LayerCounts>& counts, int64_t tokens, double hot_share) {
  ProfileResult r;
  r.tokens = tokens;
  r.hot_share = hot_share;
  const double L = double(counts.size());
  for (const auto& lc : counts) {
    LayerProfile lp = lc.finish(hot_share);
    r.sparsity += lp.sparsity / L;
    r.hot_fraction += lp.hot_fraction / L;
    r.jaccard += lp.jaccard / L;
    r.sparsity_min = std::min(r.sparsity_min, lp.sparsity_min);
    r.sparsity_max = std::max(r.sparsity_max, lp.sparsity_max);
    r.layers.push_back(std::move(lp));
  }
  return r;
}

}  // namespace

ProfileResult profile_activations(const model::Model& model, std::span<const int32_t> tokens,
                                  const ProfileOptions& opt) {
  if (opt.device != "cpu")
    fail(Status::InvalidArgument, "profile_activations runs on the CPU backend (device cpu, not {}); the GPU path "
         "collects the activations with collect_activations_cuda and measures them with profile_collected",
         opt.device);
  if (tokens.size() < 2)
    fail(Status::InvalidArgument, "profiling needs at least 2 calibration tokens, got {}; give more text", tokens.size());
  model::CpuEngine cpu(model);
  const auto& c = cpu.config();
  std::vector<LayerCounts> counts(size_t(c.num_hidden_layers), LayerCounts(c.ffn_dim));
  cpu.set_ffn_observer([&](const model::FfnObservation& o) {
    counts[size_t(o.layer)].add(o.pre_act, o.rows, o.position == 0);
  });
  const int64_t window = opt.window > 0 ? std::min(opt.window, c.max_position_embeddings) : c.max_position_embeddings;
  model::KvCache cache = cpu.make_cache(window);
  for (size_t start = 0; start < tokens.size(); start += size_t(window)) {
    cache.clear();
    const size_t len = std::min(tokens.size() - start, size_t(window));
    cpu.forward(tokens.subspan(start, len), cache);
  }
  return summarize(counts, int64_t(tokens.size()), opt.hot_share);
}

ProfileResult profile_collected(const CollectedActivations& c, double hot_share) {
  const int64_t L = int64_t(c.z.size());
  if (c.tokens < 2 || c.window <= 0 || int64_t(c.layers.size()) != L)
    fail(Status::InvalidArgument, "profile: the collected activations must cover every layer ({} of {}) with at least "
         "2 tokens ({}) in windows of a known length ({})", c.layers.size(), L, c.tokens, c.window);
  for (int64_t l = 0; l < L; ++l)
    if (int64_t(c.z[size_t(l)].size()) != c.tokens * c.ffn)
      fail(Status::InvalidArgument, "profile: layer {} holds {} pre-activations, expected {} tokens x {} neurons", l,
           c.z[size_t(l)].size(), c.tokens, c.ffn);
  std::vector<LayerCounts> counts(size_t(L), LayerCounts(c.ffn));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t l = 0; l < L; ++l) {
    const auto& z = c.z[size_t(l)];
    for (int64_t start = 0; start < c.tokens; start += c.window)
      counts[size_t(l)].add(z.data() + start * c.ffn, std::min(c.window, c.tokens - start), true);
  }
  return summarize(counts, c.tokens, hot_share);
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

void rewrite_sf(const std::string& path, const std::vector<NewTensor>& add,
                const nlohmann::json& metadata, const std::function<bool(const std::string&)>& drop,
                const std::string& out) {
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
  sff::Writer w(out.empty() ? path : out, f.architecture(), f.config(), meta, specs, req);
  for (const sff::Entry* e : kept)
    for (const auto& p : e->parts) w.write(f.data(p));
  for (const auto& t : add) w.write(t.bytes);
  w.finish();
}

bool is_profile_entry(const std::string& name) { return name.rfind("profile.layers.", 0) == 0; }

void profile_entries(const ProfileResult& r, const std::string& calibration_name, std::vector<NewTensor>& add,
                     nlohmann::json& metadata) {
  for (size_t l = 0; l < r.layers.size(); ++l) {
    const auto& fr = r.layers[l].firing_rate;
    NewTensor t{firing_rate_name(int64_t(l)), DType::F32, {int64_t(fr.size())}, {}};
    t.bytes.resize(fr.size() * 4);
    std::memcpy(t.bytes.data(), fr.data(), t.bytes.size());
    add.push_back(std::move(t));
  }
  metadata["profile.tokens"] = r.tokens;
  metadata["profile.calibration"] = calibration_name;
  metadata["profile.sparsity"] = r.sparsity;
  metadata["profile.hot_share"] = r.hot_share;
  metadata["profile.hot_fraction"] = r.hot_fraction;
  metadata["profile.jaccard"] = r.jaccard;
}

void write_profile(const std::string& path, const ProfileResult& r,
                   const std::string& calibration_name, const std::string& out) {
  std::vector<NewTensor> add;
  nlohmann::json meta = nlohmann::json::object();
  profile_entries(r, calibration_name, add, meta);
  rewrite_sf(path, add, meta, is_profile_entry, out);
}

}  // namespace sf::offload
