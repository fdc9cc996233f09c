// SparseGPT over whole (tiny, random) models: every decoder linear comes back 2:4 in the model's
// dtype, the same twice, and sequential: layer 1 is pruned from the Hessians its inputs have when
// layer 0 is already pruned, reproduced here from a model patched by hand and a plain forward pass.
// convert_to_sf writes the result as given.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "core/error.hpp"
#include "model/convert.hpp"
#include "model/cpu_engine.hpp"
#include "model/sparsegpt_model.hpp"
#include "sparse24/sparsegpt.hpp"
#include "test_models.hpp"

namespace sf::model {
namespace {

using test::some_tokens;

std::unique_ptr<test::MemModel> tiny_mistral() {
  test::RandomSpec spec;
  spec.config = test::tiny_mistral_config();  // q_dim != hidden, GQA, a sliding window
  spec.seed = 17;
  return test::random_model(spec);
}

TEST(SparseGptModel, EveryDecoderLinearIsTwoFourAndRunsTwiceTheSame) {
  auto m = tiny_mistral();
  const auto& c = m->config();
  // 150 tokens: four samples of the model's 48-token sliding window.
  const auto tokens = some_tokens(150, c.vocab_size, 3);
  const auto pruned = sparsegpt_prune_model(*m, tokens, {});
  size_t expected = 0;
  for (const auto& e : arch::expected_tensors(c, !c.tie_word_embeddings)) {
    if (!e.prunable) continue;
    ++expected;
    ASSERT_TRUE(pruned.count(e.name)) << e.name;
    const PrunedWeight& p = pruned.at(e.name);
    EXPECT_EQ(p.dtype, m->dtype());
    EXPECT_EQ(p.shape, e.shape);
    EXPECT_FALSE(
        s24::find_violation({p.values.data(), p.dtype, p.shape[0], p.shape[1]}).has_value())
        << e.name;
    EXPECT_GT(p.relative_output_error, 0.0) << e.name;
    EXPECT_LT(p.relative_output_error, 1.0) << e.name;
  }
  EXPECT_EQ(pruned.size(), expected);
  const auto again = sparsegpt_prune_model(*m, tokens, {});
  for (const auto& [name, p] : pruned) EXPECT_EQ(again.at(name).values, p.values) << name;
}

TEST(SparseGptModel, LayerOneIsCalibratedOnLayerZeroPruned) {
  auto m = tiny_mistral();
  const auto& c = m->config();
  const auto tokens = some_tokens(100, c.vocab_size, 5);
  SparseGptModelOptions opt;
  opt.solver.dampening = 0.05;
  const auto pruned = sparsegpt_prune_model(*m, tokens, opt);

  // The model with layer 0 pruned, by hand; a plain forward pass over the same windows gives the
  // inputs of layer 1.
  auto patched = test::MemModel::densified(*m);
  for (const auto& suffix : c.layer_linears()) {
    const std::string name = c.layer_prefix(0) + suffix + ".weight";
    const PrunedWeight& p = pruned.at(name);
    std::vector<float> v(p.values.size() / dtype_size(p.dtype));
    for (size_t i = 0; i < v.size(); ++i) v[i] = load_as_float(p.values.data(), p.dtype, i);
    patched->add_dense(name, p.dtype, p.shape, v);
  }
  CpuEngine engine(*patched);
  for (const auto& suffix : {c.names.q, c.names.down}) {
    const std::string prefix = c.layer_prefix(1) + suffix;
    const Tensor& w = m->tensor(prefix + ".weight");
    s24::Hessian h(w.shape[1]);
    engine.set_observer([&](const std::string& p, const float* x, int64_t rows, int64_t) {
      if (p == prefix) h.add(x, rows);
    });
    // The calibration samples: the model's context, here its sliding window (48 of 64).
    const int64_t window = std::min<int64_t>(c.max_position_embeddings, c.sliding_window);
    ASSERT_EQ(window, 48);
    for (size_t start = 0; start < tokens.size(); start += size_t(window)) {
      KvCache cache = engine.make_cache(window);
      engine.forward(
          std::span(tokens).subspan(start, std::min(tokens.size() - start, size_t(window))), cache);
    }
    const auto want =
        s24::sparsegpt_prune({w.data, w.dtype, w.shape[0], w.shape[1]}, h.matrix(), opt.solver);
    const PrunedWeight& got = pruned.at(prefix + ".weight");
    std::vector<uint8_t> rounded(got.values.size());
    for (size_t i = 0; i < want.weight.size(); ++i)
      store_from_float(rounded.data(), got.dtype, i, float(want.weight[i]));
    EXPECT_EQ(got.values, rounded) << prefix;
  }
}

TEST(SparseGptModel, ConvertWritesThePrunedWeights) {
  auto m = tiny_mistral();
  const auto& c = m->config();
  const auto pruned = sparsegpt_prune_model(*m, some_tokens(80, c.vocab_size, 7), {});
  ConvertOptions o;
  o.sparsity = "2:4";
  o.method = "sparsegpt";
  o.pruned = pruned;
  const auto path = (std::filesystem::temp_directory_path() /
                     ("sf_sparsegpt_" + std::to_string(::getpid()) + ".sf"))
                        .string();
  const auto rep = convert_to_sf(*m, path, o);
  EXPECT_EQ(rep.linears.size(), pruned.size());
  for (const auto& l : rep.linears) {
    EXPECT_DOUBLE_EQ(l.output_error, pruned.at(l.name).relative_output_error);
    EXPECT_GT(l.relative_error, 0.0);
  }
  const auto back = Model::open(path);
  EXPECT_EQ(back->metadata().value("sparsity.method", ""), "sparsegpt");
  for (const auto& [name, p] : pruned) {
    const auto& comp = back->sparse_tensors().at(name);
    std::vector<uint8_t> dense(p.values.size());
    s24::decompress(comp, dense.data());
    EXPECT_EQ(dense, p.values) << name;
  }
  std::filesystem::remove(path);

  // Every decoder linear must be there.
  o.pruned.erase(o.pruned.begin());
  try {
    convert_to_sf(*m, path, o);
    ADD_FAILURE() << "converted without a pruned weight";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::InvalidArgument);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(SparseGptModel, RejectsEmptyCalibration) {
  auto m = tiny_mistral();
  EXPECT_THROW(sparsegpt_prune_model(*m, {}, {}), Error);
}

}  // namespace
}  // namespace sf::model
