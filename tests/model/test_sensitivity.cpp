// Per-linear sensitivity and the mixed dense/2:4 plan on a tiny random model: each measurement is
// the perplexity of a model patched by hand, the plan stays within its budget and keeps dense no
// fewer linears than that needs (the probe one below it is over budget), and convert writes the
// plan's linears dense and the others 2:4.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "core/error.hpp"
#include "model/convert.hpp"
#include "model/cpu_engine.hpp"
#include "model/generate.hpp"
#include "model/sensitivity.hpp"
#include "test_models.hpp"

namespace sf::model {
namespace {

using test::some_tokens;

struct Fixture {
  std::unique_ptr<test::MemModel> model;
  std::map<std::string, PrunedWeight> pruned;
  std::vector<std::string> names;
  std::vector<int32_t> ids;
};

Fixture make() {
  Fixture f;
  test::RandomSpec spec;
  spec.config = test::tiny_mistral_config();
  spec.seed = 23;
  f.model = test::random_model(spec);
  ConvertOptions o;
  o.sparsity = "2:4";
  f.pruned = prune_linears(*f.model, o);
  for (const auto& [name, w] : f.pruned) f.names.push_back(name);
  f.ids = some_tokens(60, spec.config.vocab_size, 4);
  return f;
}

double plain_perplexity(const Model& m, std::span<const int32_t> ids) {
  CpuEngine e(m);
  return perplexity(e, ids, 0, {}, false).perplexity();
}

TEST(Sensitivity, EachMeasurementIsTheModelPatchedByHand) {
  auto f = make();
  const double dense = perplexity_with(*f.model, f.pruned, {}, f.ids, 0);
  EXPECT_EQ(dense, plain_perplexity(*f.model, f.ids));
  const std::vector<std::string> some = {f.names.front(), f.names.back()};
  const auto sens = linear_sensitivity(*f.model, f.pruned, some, f.ids, 0, dense);
  ASSERT_EQ(sens.size(), 2u);
  for (const auto& s : sens) {
    auto patched = test::MemModel::densified(*f.model);
    const PrunedWeight& w = f.pruned.at(s.name);
    std::vector<float> v(w.values.size() / dtype_size(w.dtype));
    for (size_t i = 0; i < v.size(); ++i) v[i] = load_as_float(w.values.data(), w.dtype, i);
    patched->add_dense(s.name, w.dtype, w.shape, v);
    EXPECT_EQ(s.perplexity, plain_perplexity(*patched, f.ids)) << s.name;
    EXPECT_DOUBLE_EQ(s.increase, s.perplexity / dense - 1);
    // fp16 [out, in] dense against half the values plus 2 bits of metadata per kept value
    const int64_t n = w.shape[0] * w.shape[1];
    EXPECT_EQ(s.bytes_saved, uint64_t(n * 2 - (n / 2 * 2 + n / 8)));
  }
  EXPECT_EQ(sens[0].layer, 0);
  EXPECT_EQ(sens[1].layer, f.model->config().num_hidden_layers - 1);
}

TEST(Sensitivity, PlanStaysWithinBudgetWithAsFewDenseAsItNeeds) {
  auto f = make();
  const double dense = perplexity_with(*f.model, f.pruned, {}, f.ids, 0);
  const auto sens = linear_sensitivity(*f.model, f.pruned, f.names, f.ids, 0, dense);
  const double all_pruned = perplexity_with(*f.model, f.pruned, f.names, f.ids, 0);
  ASSERT_GT(all_pruned, dense);

  // A budget everything fits: nothing kept dense.
  auto loose = plan_mixed_sparsity(*f.model, f.pruned, sens, f.ids, 0, all_pruned / dense);
  EXPECT_TRUE(loose.keep_dense.empty());
  EXPECT_EQ(loose.perplexity, all_pruned);
  EXPECT_LT(loose.plan_bytes, loose.dense_bytes);

  // Half the increase: within budget, and one dense linear fewer was measured over it.
  const double half = (all_pruned / dense - 1) / 2;
  const auto plan = plan_mixed_sparsity(*f.model, f.pruned, sens, f.ids, 0, half);
  EXPECT_LE(plan.perplexity, dense * (1 + half));
  ASSERT_FALSE(plan.keep_dense.empty());
  bool below_measured = false;
  for (const auto& [k, p] : plan.probes)
    if (k + 1 == plan.keep_dense.size()) {
      below_measured = true;
      EXPECT_GT(p, dense * (1 + half));
    }
  EXPECT_TRUE(below_measured);
  EXPECT_GT(plan.plan_bytes, loose.plan_bytes);
  // The plan's perplexity is the plan's model, measured.
  std::vector<std::string> swap;
  for (const auto& n : f.names)
    if (std::find(plan.keep_dense.begin(), plan.keep_dense.end(), n) == plan.keep_dense.end())
      swap.push_back(n);
  EXPECT_EQ(plan.perplexity, perplexity_with(*f.model, f.pruned, swap, f.ids, 0));

  // No budget at all: every linear stays dense unless pruning some costs nothing.
  const auto tight = plan_mixed_sparsity(*f.model, f.pruned, sens, f.ids, 0, 0.0);
  EXPECT_LE(tight.perplexity, dense);
  EXPECT_THROW(plan_mixed_sparsity(*f.model, f.pruned, sens, f.ids, 0, -0.1), Error);
}

TEST(Sensitivity, ConvertWritesKeptLinearsDense) {
  auto f = make();
  ConvertOptions o;
  o.sparsity = "2:4";
  o.pruned = f.pruned;
  o.keep_dense = {f.names[0], f.names[3]};
  const auto path =
      (std::filesystem::temp_directory_path() / ("sf_mixed_" + std::to_string(::getpid()) + ".sf"))
          .string();
  const auto rep = convert_to_sf(*f.model, path, o);
  EXPECT_EQ(rep.linears.size(), f.names.size() - 2);
  const auto back = Model::open(path);
  for (const auto& n : f.names) {
    const bool dense = o.keep_dense.count(n) > 0;
    EXPECT_EQ(back->sparse_tensors().count(n), dense ? 0u : 1u) << n;
    EXPECT_EQ(back->find(n) != nullptr, dense) << n;
  }
  // It runs, and its perplexity is the mixed model's.
  std::vector<std::string> swap;
  for (const auto& n : f.names)
    if (!o.keep_dense.count(n)) swap.push_back(n);
  // (the 2:4 kernel sums in another order than the dense one)
  const double want = perplexity_with(*f.model, f.pruned, swap, f.ids, 0);
  EXPECT_NEAR(plain_perplexity(*back, f.ids), want, 1e-4 * want);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace sf::model
