#include "offload/planner.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "core/error.hpp"
#include "model/weights.hpp"
#include "offload/neuron_store.hpp"

namespace sf::offload {

namespace {

constexpr uint64_t kGiB = uint64_t(1) << 30;

std::string lower(std::string_view s) {
  std::string o(s);
  for (auto& c : o) c = char(std::tolower(static_cast<unsigned char>(c)));
  return o;
}

// Per layer, the firing rates sorted descending (uniform 1 when there is no profile).
std::vector<std::vector<float>> sorted_rates(const PlannerInput& in) {
  std::vector<std::vector<float>> out(size_t(in.layers));
  for (int64_t l = 0; l < in.layers; ++l) {
    auto& v = out[size_t(l)];
    if (in.firing_rates.empty()) {
      v.assign(size_t(in.ffn), 1.0f);
    } else {
      v.assign(in.firing_rates[size_t(l)].begin(), in.firing_rates[size_t(l)].end());
      std::sort(v.begin(), v.end(), std::greater<float>());
    }
  }
  return out;
}

}  // namespace

SizeSpec parse_size_spec(std::string_view text, std::string_view what) {
  SizeSpec s;
  s.text = std::string(text);
  std::string t;
  for (char c : text)
    if (!std::isspace(static_cast<unsigned char>(c))) t += c;
  auto bad = [&]() -> Error {
    return Error(Status::InvalidArgument,
                 fmt::format("{} {}: expected a size like 6GiB, 6GB, 6000MiB, 512M or 123456 (bytes), or a fraction of "
                             "the model's bytes like 0.5 or 50%", what, text));
  };
  if (t.empty()) throw bad();
  size_t end = 0;
  while (end < t.size() && (std::isdigit(static_cast<unsigned char>(t[end])) || t[end] == '.')) ++end;
  double v = 0;
  const auto r = std::from_chars(t.data(), t.data() + end, v);
  if (end == 0 || r.ec != std::errc() || r.ptr != t.data() + end || !std::isfinite(v) || v < 0) throw bad();
  const std::string unit = lower(t.substr(end));
  const bool integer = t.substr(0, end).find('.') == std::string::npos;
  if (unit == "%") {
    if (!(v > 0 && v <= 100)) throw bad();
    s.fraction = true;
    s.value = v / 100;
    return s;
  }
  if (unit.empty()) {
    if (v > 0 && v <= 1 && !(integer && v == 1)) {
      s.fraction = true;
      s.value = v;
      return s;
    }
    if (!integer || v == 0) throw bad();
    s.value = v;
    return s;
  }
  static const std::pair<const char*, double> units[] = {
      {"b", 1},          {"k", 1024.0},       {"kib", 1024.0},     {"kb", 1e3},  {"m", 1048576.0},
      {"mib", 1048576.0}, {"mb", 1e6},         {"g", 1073741824.0}, {"gib", 1073741824.0},
      {"gb", 1e9},        {"t", 1099511627776.0}, {"tib", 1099511627776.0}, {"tb", 1e12}};
  for (auto [u, mul] : units)
    if (unit == u) {
      if (v <= 0) throw bad();
      s.value = std::floor(v * mul);
      return s;
    }
  throw bad();
}

std::string format_bytes(uint64_t b) {
  if (b >= kGiB) return fmt::format("{:.2f} GiB", double(b) / double(kGiB));
  if (b >= (1u << 20)) return fmt::format("{:.1f} MiB", double(b) / double(1u << 20));
  if (b >= 1024) return fmt::format("{:.1f} KiB", double(b) / 1024.0);
  return fmt::format("{} B", b);
}

int64_t min_cache_slots(const PlannerInput& in, int64_t layer) {
  int64_t slots = in.ffn / 8;
  if (!in.firing_rates.empty()) {
    double mass = 0;
    for (float r : in.firing_rates[size_t(layer)]) mass += r;
    slots = int64_t(std::ceil(2.0 * mass));
  }
  return std::clamp<int64_t>(slots, std::min<int64_t>(64, in.ffn), in.ffn);
}

Plan plan_placement(const PlannerInput& in) {
  if (in.layers <= 0 || in.ffn <= 0 || in.bundle_stride == 0)
    fail(Status::InvalidArgument, "planner: the model has no FFN layers to place ({} layers, ffn {}, bundle {} bytes)",
         in.layers, in.ffn, in.bundle_stride);
  if (!(in.gpu_cache_ratio >= 0 && in.gpu_cache_ratio <= 1))
    fail(Status::InvalidArgument, "--gpu-cache-ratio {} must be in [0, 1]", in.gpu_cache_ratio);
  if (!in.firing_rates.empty() && int64_t(in.firing_rates.size()) != in.layers)
    fail(Status::InvalidArgument, "planner: firing rates for {} layers, the model has {}", in.firing_rates.size(),
         in.layers);
  uint64_t movable = 0;  // attention weights that may live on the host
  if (!in.attention_weight_bytes.empty()) {
    if (int64_t(in.attention_weight_bytes.size()) != in.layers)
      fail(Status::InvalidArgument, "planner: attention weight bytes for {} layers, the model has {}",
           in.attention_weight_bytes.size(), in.layers);
    for (uint64_t b : in.attention_weight_bytes) movable += b;
    if (movable > in.attention_bytes)
      fail(Status::InvalidArgument, "planner: the attention weights ({} bytes) exceed the attention ({} bytes)",
           movable, in.attention_bytes);
  }
  Plan p;
  p.input = in;
  p.gpu_budget = in.gpu_budget;
  const uint64_t fixed_all = in.fixed_bytes();  // with every layer's attention resident
  std::vector<int64_t> min_slots(size_t(in.layers));
  int64_t min_total = 0;
  for (int64_t l = 0; l < in.layers; ++l) min_total += min_slots[size_t(l)] = min_cache_slots(in, l);
  const uint64_t min_cache = uint64_t(min_total) * in.bundle_stride;  // at most the whole FFN
  p.min_gpu_bytes = fixed_all - movable + min_cache;
  if (in.gpu_budget < p.min_gpu_bytes) {
    const uint64_t rounded = (p.min_gpu_bytes + kGiB / 100 - 1) / (kGiB / 100) * (kGiB / 100);
    const std::string attention =
        movable ? fmt::format("attention {} (biases; the weights of every layer, {}, counted on the host)",
                              format_bytes(in.attention_bytes - movable), format_bytes(movable))
                : fmt::format("attention {}", format_bytes(in.attention_bytes));
    fail(Status::InvalidArgument,
         "--gpu-memory {} is below the {} this model needs on the GPU: embeddings {}, lm_head {}, {}, layer "
         "norms {}, FFN biases {}, predictors {}, KV cache {}, workspace {}, and a minimal neuron cache {} ({} slots "
         "of {} bytes over {} layers); raise it to at least {:.2f}GiB",
         format_bytes(in.gpu_budget), format_bytes(p.min_gpu_bytes), format_bytes(in.embedding_bytes),
         format_bytes(in.lm_head_bytes), attention, format_bytes(in.norm_bytes), format_bytes(in.ffn_bias_bytes),
         format_bytes(in.predictor_bytes), format_bytes(in.kv_cache_bytes), format_bytes(in.workspace_bytes),
         format_bytes(min_cache), min_total, in.bundle_stride, in.layers, double(rounded) / double(kGiB));
  }
  // Attention is not activation-sparse: a layer on the host costs all its weight bytes over PCIe
  // every token, so move as few as let the minimum fit, from the last layer backwards (ends by
  // k = layers, where the check above holds).
  while (fixed_all - p.attention_host_bytes + min_cache > in.gpu_budget) {
    p.attention_host_bytes += in.attention_weight_bytes[size_t(in.layers - 1 - p.attention_host_layers)];
    ++p.attention_host_layers;
  }
  p.fixed_bytes = fixed_all - p.attention_host_bytes;
  const uint64_t whole = p.fixed_bytes + in.ffn_bytes();
  const auto rates = sorted_rates(in);
  std::vector<double> mass(size_t(in.layers), 0.0);
  double mass_total = 0;
  for (int64_t l = 0; l < in.layers; ++l) {
    for (float r : rates[size_t(l)]) mass[size_t(l)] += r;
    mass_total += mass[size_t(l)];
  }
  p.layers.resize(size_t(in.layers));
  if (in.gpu_budget >= whole) {  // everything fits: no offloading
    p.whole_model_resident = true;
    p.ffn_budget = in.ffn_bytes();
    p.hot_bytes = in.ffn_bytes();
    for (auto& L : p.layers) {
      L.hot = in.ffn;
      L.hot_coverage = 1;
    }
    p.expected_hit = 1;
    return p;
  }
  p.ffn_budget = in.gpu_budget - p.fixed_bytes;
  const int64_t slots = int64_t(p.ffn_budget / in.bundle_stride);
  const int64_t cache_total = std::max<int64_t>(min_total, int64_t(std::floor(in.gpu_cache_ratio * double(slots))));
  int64_t hot_left = slots - cache_total;
  // Hot neurons: greedily the highest firing rates across all layers (each layer's hot set is a
  // prefix of its rates sorted descending); without a profile, an even split.
  std::vector<size_t> next(size_t(in.layers), 0);
  auto take_hot = [&](int64_t budget) {
    if (in.firing_rates.empty()) {
      while (budget > 0) {
        bool any = false;
        for (int64_t l = 0; l < in.layers && budget > 0; ++l)
          if (p.layers[size_t(l)].hot + p.layers[size_t(l)].cache_slots < in.ffn) {
            ++p.layers[size_t(l)].hot;
            --budget;
            any = true;
          }
        if (!any) break;
      }
      return budget;
    }
    // Merge the sorted per-layer lists.
    std::vector<std::pair<float, int64_t>> heads;
    for (int64_t l = 0; l < in.layers; ++l)
      if (next[size_t(l)] < rates[size_t(l)].size()) heads.push_back({rates[size_t(l)][next[size_t(l)]], l});
    auto cmp = [](const auto& a, const auto& b) { return a.first < b.first || (a.first == b.first && a.second > b.second); };
    std::make_heap(heads.begin(), heads.end(), cmp);
    while (budget > 0 && !heads.empty()) {
      std::pop_heap(heads.begin(), heads.end(), cmp);
      const int64_t l = heads.back().second;
      heads.pop_back();
      LayerPlan& L = p.layers[size_t(l)];
      if (L.hot + L.cache_slots >= in.ffn) continue;  // this layer is fully covered
      ++L.hot;
      ++next[size_t(l)];
      --budget;
      if (next[size_t(l)] < rates[size_t(l)].size()) {
        heads.push_back({rates[size_t(l)][next[size_t(l)]], l});
        std::push_heap(heads.begin(), heads.end(), cmp);
      }
    }
    return budget;
  };
  hot_left = take_hot(hot_left);
  // Cache slots: each layer's minimum, the rest in proportion to the firings its hot set misses,
  // never more slots than the layer has cold neurons. Slots no layer can use go back to hot.
  int64_t cache_left = cache_total;
  for (int64_t l = 0; l < in.layers; ++l) {
    LayerPlan& L = p.layers[size_t(l)];
    L.cache_slots = std::min(min_slots[size_t(l)], in.ffn - L.hot);
    cache_left -= L.cache_slots;
  }
  for (int round = 0; round < 4 && cache_left > 0; ++round) {
    double miss_total = 0;
    std::vector<double> miss(size_t(in.layers), 0.0);
    for (int64_t l = 0; l < in.layers; ++l) {
      const LayerPlan& L = p.layers[size_t(l)];
      if (L.hot + L.cache_slots >= in.ffn) continue;
      for (int64_t b = L.hot; b < in.ffn; ++b) miss[size_t(l)] += rates[size_t(l)][size_t(b)];
      miss_total += miss[size_t(l)];
    }
    if (miss_total <= 0) break;
    const int64_t pool = cache_left;
    for (int64_t l = 0; l < in.layers && cache_left > 0; ++l) {
      LayerPlan& L = p.layers[size_t(l)];
      const int64_t want = int64_t(std::floor(double(pool) * miss[size_t(l)] / miss_total));
      const int64_t add = std::min({want, in.ffn - L.hot - L.cache_slots, cache_left});
      L.cache_slots += add;
      cache_left -= add;
    }
  }
  for (int64_t l = 0; l < in.layers && cache_left > 0; ++l) {  // rounding leftovers
    LayerPlan& L = p.layers[size_t(l)];
    const int64_t add = std::min(in.ffn - L.hot - L.cache_slots, cache_left);
    L.cache_slots += add;
    cache_left -= add;
  }
  if (cache_left > 0) take_hot(cache_left + hot_left);
  double hit = 0;
  uint64_t hot_n = 0, cache_n = 0;
  for (int64_t l = 0; l < in.layers; ++l) {
    LayerPlan& L = p.layers[size_t(l)];
    double h = 0;
    for (int64_t b = 0; b < L.hot; ++b) h += rates[size_t(l)][size_t(b)];
    L.hot_coverage = mass[size_t(l)] > 0 ? h / mass[size_t(l)] : 0;
    hit += h;
    hot_n += uint64_t(L.hot);
    cache_n += uint64_t(L.cache_slots);
  }
  p.expected_hit = mass_total > 0 ? hit / mass_total : 0;
  p.hot_bytes = hot_n * in.bundle_stride;
  p.cache_bytes = cache_n * in.bundle_stride;
  p.host_bytes = (uint64_t(in.layers) * uint64_t(in.ffn) - hot_n) * in.bundle_stride;
  p.host = HostPlacement::Pinned;
  if (in.host_limit && *in.host_limit < p.host_bytes) {
    if (!in.bundles_in_file)
      fail(Status::InvalidArgument,
           "--host-memory {} is below the {} of neuron bundles that stay on the host, and this model's FFN is stored "
           "row-major, so the bundles cannot be read from the file: convert it with `sparseflow convert "
           "--neuron-major`, or raise --host-memory to at least {}",
           format_bytes(*in.host_limit), format_bytes(p.host_bytes), format_bytes(p.host_bytes));
    p.host = HostPlacement::Mmap;
  }
  return p;
}

std::string Plan::table() const {
  const PlannerInput& in = input;
  std::string s;
  s += fmt::format("placement plan: GPU budget {} (minimum for this model and context: {})\n", format_bytes(gpu_budget),
                   format_bytes(min_gpu_bytes));
  s += fmt::format("  resident        {}: embeddings {}, lm_head {}, attention {}, layer norms {}, FFN biases {}, "
                   "predictors {}, KV cache {}, workspace {}\n",
                   format_bytes(fixed_bytes), format_bytes(in.embedding_bytes), format_bytes(in.lm_head_bytes),
                   format_bytes(in.attention_bytes - attention_host_bytes), format_bytes(in.norm_bytes),
                   format_bytes(in.ffn_bias_bytes), format_bytes(in.predictor_bytes), format_bytes(in.kv_cache_bytes),
                   format_bytes(in.workspace_bytes));
  if (attention_host_layers > 0)
    s += fmt::format("  attention       weights of layers {}..{} on the host ({} read over PCIe per token; the "
                     "budget cannot hold all the attention)\n",
                     in.layers - attention_host_layers, in.layers - 1, format_bytes(attention_host_bytes));
  if (whole_model_resident) {
    s += fmt::format("  FFN             {}: every neuron resident (the whole model fits; no offloading)\n",
                     format_bytes(in.ffn_bytes()));
    return s;
  }
  int64_t hot = 0, cache = 0;
  for (const auto& L : layers) {
    hot += L.hot;
    cache += L.cache_slots;
  }
  s += fmt::format("  FFN on GPU      {} of {}: {} hot neurons pinned ({}), {} LRU cache slots ({}); bundle {} bytes\n",
                   format_bytes(hot_bytes + cache_bytes), format_bytes(in.ffn_bytes()), hot, format_bytes(hot_bytes),
                   cache, format_bytes(cache_bytes), in.bundle_stride);
  s += fmt::format("  expected share of firings served by pinned neurons: {:.1f}%{}\n", expected_hit * 100,
                   in.firing_rates.empty() ? " (no activation profile: uniform rates assumed; run `sparseflow profile`)"
                                           : "");
  s += fmt::format("  host            {} of bundles, {}\n", format_bytes(host_bytes),
                   host == HostPlacement::Mmap ? "read from the .sf file mapping (--host-memory is smaller)"
                                               : "in pinned memory");
  s += "  layer      hot    cache  hot coverage\n";
  for (size_t l = 0; l < layers.size(); ++l)
    s += fmt::format("  {:>5}  {:>7}  {:>7}  {:>11.1f}%\n", l, layers[l].hot, layers[l].cache_slots,
                     layers[l].hot_coverage * 100);
  return s;
}

PlannerInput planner_input(const model::Model& m, const NeuronStore& store, int64_t context_tokens,
                           const OffloadOptions& opt, uint64_t workspace_bytes) {
  const auto& c = m.config();
  PlannerInput in;
  in.layers = c.num_hidden_layers;
  in.hidden = c.hidden_size;
  in.ffn = c.ffn_dim;
  auto dense_bytes = [&](const std::string& name) -> uint64_t {
    const model::Tensor* t = m.find(name);
    return t ? uint64_t(t->numel()) * dtype_size(t->dtype) : 0;
  };
  auto linear_bytes = [&](const std::string& prefix) -> uint64_t {
    uint64_t b = dense_bytes(prefix + ".bias");
    const auto& sp = m.sparse_tensors();
    if (const auto it = sp.find(prefix + ".weight"); it != sp.end()) return b + it->second.compressed_bytes();
    return b + dense_bytes(prefix + ".weight");
  };
  const std::string d = "model.decoder.";
  in.embedding_bytes = dense_bytes(d + "embed_tokens.weight") + dense_bytes(d + "embed_positions.weight");
  if (c.has_projections()) in.embedding_bytes += linear_bytes(d + "project_in") + linear_bytes(d + "project_out");
  if (!c.tie_word_embeddings) in.lm_head_bytes = dense_bytes("lm_head.weight");
  in.norm_bytes = dense_bytes(d + "final_layer_norm.weight") + dense_bytes(d + "final_layer_norm.bias");
  bool attention_s24 = false;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("{}layers.{}.", d, l);
    uint64_t weights = 0;
    for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"}) {
      in.attention_bytes += linear_bytes(p + n);
      weights += dense_bytes(p + n + ".weight");
      attention_s24 |= m.sparse_tensors().count(p + n + ".weight") > 0;
    }
    in.attention_weight_bytes.push_back(weights);
    for (const char* n : {"self_attn_layer_norm.weight", "self_attn_layer_norm.bias", "final_layer_norm.weight",
                          "final_layer_norm.bias"})
      in.norm_bytes += dense_bytes(p + n);
    in.ffn_bias_bytes += dense_bytes(p + "fc2.bias");
    if (store.has_profile()) in.firing_rates.emplace_back(store.layer(l).firing_rate, size_t(c.ffn_dim));
  }
  if (attention_s24) in.attention_weight_bytes.clear();  // the engine reads 2:4 weights from device memory only
  if (opt.predictor == PredictorMode::Model && store.has_predictor()) in.predictor_bytes = store.predictor_info().bytes;
  in.bundle_stride = store.layout().stride;
  in.kv_cache_bytes = 2 * uint64_t(c.num_hidden_layers) * uint64_t(std::max<int64_t>(context_tokens, 1)) *
                      uint64_t(c.hidden_size) * 2;
  // Activations, logits (fp32, twice), and the staging buffers for one layer's worth of fetches.
  in.workspace_bytes = workspace_bytes ? workspace_bytes
                                       : (uint64_t(64) << 20) + 2 * uint64_t(c.vocab_size) * 4 +
                                             uint64_t(c.ffn_dim) * store.layout().stride / 4;
  in.bundles_in_file = store.mapped_from_file();
  in.gpu_cache_ratio = opt.gpu_cache_ratio;
  const uint64_t model_bytes = in.model_bytes();
  if (opt.gpu_memory) in.gpu_budget = opt.gpu_memory->resolve(model_bytes);
  if (opt.host_memory) in.host_limit = opt.host_memory->resolve(model_bytes);
  return in;
}

}  // namespace sf::offload
