#include "model/sensitivity.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "format/sf_file.hpp"
#include "model/cpu_engine.hpp"
#include "model/generate.hpp"
#include "model/patched_model.hpp"

namespace sf::model {

namespace {

uint64_t s24_bytes(const std::string& name, DType dt, int64_t rows, int64_t cols) {
  uint64_t b = 0;
  for (const auto& part : sff::s24_spec(name, dt, rows, cols).parts) b += part.second;
  return b;
}

uint64_t dense_bytes(const Tensor& t) {
  return uint64_t(t.numel()) * dtype_size(t.dtype);
}

}  // namespace

std::map<std::string, PrunedWeight> decompressed_linears(const Model& pruned) {
  std::map<std::string, PrunedWeight> out;
  for (const auto& [name, c] : pruned.sparse_tensors()) {
    PrunedWeight w;
    w.dtype = c.dtype;
    w.shape = {c.rows, c.cols};
    w.values.resize(size_t(c.rows * c.cols) * dtype_size(c.dtype));
    s24::decompress(c, w.values.data());
    w.relative_output_error = -1;
    out.emplace(name, std::move(w));
  }
  return out;
}

double perplexity_with(const Model& dense, const std::map<std::string, PrunedWeight>& pruned,
                       std::span<const std::string> swap, std::span<const int32_t> ids,
                       int64_t context) {
  PatchedModel m(dense);
  for (const auto& name : swap) {
    const auto it = pruned.find(name);
    if (it == pruned.end())
      fail(Status::NotFound, "no pruned version of '{}' to measure; prune every candidate first",
           name);
    const Tensor& d = dense.tensor(name);
    if (d.shape != it->second.shape)
      fail(Status::InvalidArgument,
           "the pruned '{}' has another shape than the dense one: the two models are not the same "
           "checkpoint",
           name);
    m.replace(name, it->second);
  }
  CpuEngine engine(m);
  return perplexity(engine, ids, context, {}, /*show_progress=*/false).perplexity();
}

std::vector<LinearSensitivity> linear_sensitivity(const Model& dense,
                                                  const std::map<std::string, PrunedWeight>& pruned,
                                                  std::span<const std::string> names,
                                                  std::span<const int32_t> ids, int64_t context,
                                                  double dense_perplexity,
                                                  const SensitivityProgress& progress) {
  const std::string key =
      dense.config().names.layer.substr(0, dense.config().names.layer.find("{}"));
  std::vector<LinearSensitivity> out;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    LinearSensitivity s;
    s.name = name;
    if (name.rfind(key, 0) == 0) s.layer = std::stoll(name.substr(key.size()));
    s.perplexity = perplexity_with(dense, pruned, std::span(&name, 1), ids, context);
    s.increase = s.perplexity / dense_perplexity - 1.0;
    const PrunedWeight& p = pruned.at(name);
    const uint64_t d = dense_bytes(dense.tensor(name)),
                   sp = s24_bytes(name, p.dtype, p.shape[0], p.shape[1]);
    s.bytes_saved = d > sp ? d - sp : 0;
    out.push_back(std::move(s));
    if (progress) progress(i + 1, names.size(), name);
  }
  return out;
}

MixedPlan plan_mixed_sparsity(const Model& dense, const std::map<std::string, PrunedWeight>& pruned,
                              const std::vector<LinearSensitivity>& sensitivity,
                              std::span<const int32_t> ids, int64_t context, double max_increase,
                              const std::function<void(size_t, double)>& on_probe) {
  if (!(max_increase >= 0))
    fail(Status::InvalidArgument,
         "the perplexity budget must be an increase >= 0 (0.05 for 5%), got {}", max_increase);
  if (sensitivity.empty())
    fail(Status::InvalidArgument, "a mixed plan needs the sensitivity of at least one linear");
  MixedPlan plan;
  plan.max_increase = max_increase;
  plan.dense_perplexity = perplexity_with(dense, pruned, {}, ids, context);
  const double budget = plan.dense_perplexity * (1.0 + max_increase);

  // Most harmful per byte saved first: keeping a prefix of this list dense buys the most
  // perplexity back for the fewest bytes.
  std::vector<const LinearSensitivity*> order;
  for (const auto& s : sensitivity) order.push_back(&s);
  auto harm = [](const LinearSensitivity* s) {
    return s->increase / double(std::max<uint64_t>(1, s->bytes_saved));
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](const auto* a, const auto* b) { return harm(a) > harm(b); });

  // f(k): perplexity with the first k of `order` dense and the rest pruned. f(n) is the dense
  // model's, within budget by definition.
  const size_t n = order.size();
  std::map<size_t, double> measured = {{n, plan.dense_perplexity}};
  auto f = [&](size_t k) {
    if (const auto it = measured.find(k); it != measured.end()) return it->second;
    std::vector<std::string> swap;
    for (size_t i = k; i < n; ++i) swap.push_back(order[i]->name);
    const double p = perplexity_with(dense, pruned, swap, ids, context);
    measured[k] = p;
    plan.probes.emplace_back(k, p);
    if (on_probe) on_probe(k, p);
    return p;
  };
  size_t lo = 0, hi = n;
  if (f(0) > budget) {
    while (hi - lo > 1) {
      const size_t mid = lo + (hi - lo) / 2;
      (f(mid) <= budget ? hi : lo) = mid;
    }
  } else {
    hi = 0;
  }
  plan.perplexity = f(hi);
  for (size_t i = 0; i < n; ++i) {
    const Tensor& d = dense.tensor(order[i]->name);
    plan.dense_bytes += dense_bytes(d);
    plan.plan_bytes += i < hi ? dense_bytes(d) : dense_bytes(d) - order[i]->bytes_saved;
    if (i < hi) plan.keep_dense.push_back(order[i]->name);
  }
  return plan;
}

}  // namespace sf::model
