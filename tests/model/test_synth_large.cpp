// `synth --format sf` for the real OPT shapes (write_large_sf) against the two-step route it
// replaces: the same weights as `synth --format hf` followed by `convert`, dense and 2:4, tensor by
// tensor (opt-125m: 125M parameters, a few seconds).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "core/error.hpp"
#include "model/convert.hpp"
#include "model/synth.hpp"
#include "model/synth_large.hpp"
#include "model/weights.hpp"
#include "tokenizer/bpe.hpp"

namespace sf::model {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("sf-synth-large-" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void expect_same_tensors(const Model& a, const Model& b) {
  ASSERT_EQ(a.config().hidden_size, b.config().hidden_size);
  ASSERT_EQ(a.config().num_hidden_layers, b.config().num_hidden_layers);
  ASSERT_EQ(a.dense_tensors().size(), b.dense_tensors().size());
  ASSERT_EQ(a.sparse_tensors().size(), b.sparse_tensors().size());
  for (const auto& [name, t] : a.dense_tensors()) {
    const Tensor* u = b.find(name);
    ASSERT_NE(u, nullptr) << name;
    ASSERT_EQ(t.dtype, u->dtype) << name;
    ASSERT_EQ(t.shape, u->shape) << name;
    EXPECT_EQ(0, std::memcmp(t.data, u->data, size_t(t.numel()) * dtype_size(t.dtype))) << name;
  }
  for (const auto& [name, c] : a.sparse_tensors()) {
    const auto it = b.sparse_tensors().find(name);
    ASSERT_NE(it, b.sparse_tensors().end()) << name;
    EXPECT_EQ(c.values, it->second.values) << name;
    EXPECT_EQ(c.meta, it->second.meta) << name;
  }
  EXPECT_EQ(a.vocab_json(), b.vocab_json());
  EXPECT_EQ(a.merges_txt(), b.merges_txt());
}

class SynthLargeSf : public ::testing::TestWithParam<const char*> {};

TEST_P(SynthLargeSf, EqualsTheHfCheckpointConverted) {
  TempDir tmp;
  const std::string hf = (tmp.path / "hf").string();
  const arch::ModelDesc want = large_config(*find_large_shape(GetParam()));
  write_large_hf(hf, GetParam(), 3, DType::F16);
  EXPECT_EQ(Model::open(hf)->config(), want);
  for (const bool sparse : {false, true}) {
    SCOPED_TRACE(sparse ? "2:4" : "dense");
    const std::string direct = (tmp.path / (sparse ? "direct24.sf" : "direct.sf")).string();
    const std::string two_step = (tmp.path / (sparse ? "convert24.sf" : "convert.sf")).string();
    const auto r = write_large_sf(direct, GetParam(), 3, DType::F16, sparse);
    EXPECT_EQ(r.config, want);
    EXPECT_EQ(r.file_bytes, fs::file_size(direct));
    ConvertOptions co;
    co.sparsity = sparse ? "2:4" : "none";
    convert_to_sf(*Model::open(hf), two_step, co);
    const auto a = Model::open(direct), b = Model::open(two_step);
    EXPECT_EQ(a->config(), want);
    EXPECT_EQ(a->is_sparse(), sparse);
    EXPECT_EQ(a->metadata().at("sparsity.pruned"), b->metadata().at("sparsity.pruned"));
    EXPECT_EQ(a->metadata().value("sparsity.pattern", ""), sparse ? "2:4" : "none");
    EXPECT_EQ(a->metadata().at("weights.synthetic_info"),
              b->metadata().at("weights.synthetic_info"));
    EXPECT_EQ(a->metadata().value("weights.synthetic", false), true);
    expect_same_tensors(*a, *b);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, SynthLargeSf, ::testing::Values("opt-125m", "smollm2-135m"));

// What the published config.json files say, through the one table.
TEST(SynthLargeShapes, DescribeThePublishedModels) {
  const arch::ModelDesc l2 = large_config(*find_large_shape("llama-2-7b"));
  EXPECT_EQ(l2.arch, "llama");
  EXPECT_EQ(l2.vocab_size, 32000);
  EXPECT_EQ(l2.num_key_value_heads, 32);
  EXPECT_EQ(l2.head_dim, 128);
  EXPECT_EQ(l2.ffn_dim, 11008);
  EXPECT_FALSE(l2.tie_word_embeddings);
  EXPECT_EQ(l2.norm, arch::Norm::RMSNorm);
  EXPECT_DOUBLE_EQ(l2.norm_eps, 1e-5);
  EXPECT_TRUE(l2.is_gated());
  const arch::ModelDesc l3 = large_config(*find_large_shape("llama-3-8b"));
  EXPECT_EQ(l3.vocab_size, 128256);
  EXPECT_EQ(l3.num_key_value_heads, 8);
  EXPECT_EQ(l3.group(), 4);
  EXPECT_DOUBLE_EQ(l3.rope.theta, 500000.0);
  const arch::ModelDesc m = large_config(*find_large_shape("mistral-7b"));
  EXPECT_EQ(m.sliding_window, 4096);
  EXPECT_EQ(m.arch, "mistral");
  const arch::ModelDesc q = large_config(*find_large_shape("qwen2-7b"));
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_FALSE(q.o_bias);
  EXPECT_EQ(q.kv_dim(), 512);
  EXPECT_DOUBLE_EQ(q.norm_eps, 1e-6);
  EXPECT_EQ(large_config(*find_large_shape("smollm2-135m")).head_dim, 64);
  // Parameter counts the model cards give (7B: 6.74e9, 8B: 8.03e9, Qwen2 7B: 7.62e9).
  auto params = [](const arch::ModelDesc& c) {
    uint64_t n = 0;
    for (const auto& t : arch::expected_tensors(c, !c.tie_word_embeddings)) {
      uint64_t k = 1;
      for (auto d : t.shape) k *= uint64_t(d);
      n += k;
    }
    return double(n);
  };
  EXPECT_NEAR(params(l2) / 1e9, 6.74, 0.01);
  EXPECT_NEAR(params(l3) / 1e9, 8.03, 0.01);
  EXPECT_NEAR(params(q) / 1e9, 7.62, 0.01);
  EXPECT_NEAR(params(m) / 1e9, 7.24, 0.01);
  EXPECT_EQ(find_large_shape("llama-7b"), nullptr);
}

// The real shapes have 50272 ids against the built-in tokenizer's 1500: the ids it lacks decode to
// placeholders, so a random model's output prints; encoding is the built-in tokenizer's.
TEST(SynthLargeSf, EveryIdOfTheModelDecodes) {
  const std::string vocab = synth_vocab_json(50272);
  const auto tok = tok::Tokenizer::from_json_and_merges(vocab, builtin_merges_txt());
  const auto builtin =
      tok::Tokenizer::from_json_and_merges(builtin_vocab_json(), builtin_merges_txt());
  EXPECT_EQ(tok.vocab_size(), 50272);
  const std::vector<int32_t> ids = {40489, 50271};
  EXPECT_EQ(tok.decode(ids), "<|synth_40489|><|synth_50271|>");
  EXPECT_THROW(builtin.decode(ids), Error);
  const std::string text = "Hello world, sparse models run fast.";
  EXPECT_EQ(tok.encode(text), builtin.encode(text));
  const auto first = builtin.encode("Hello");
  EXPECT_EQ(tok.decode(first), builtin.decode(first));
}

TEST(SynthLargeSf, RejectsWhatItCannotWrite) {
  TempDir tmp;
  try {
    write_large_sf((tmp.path / "x.sf").string(), "opt-7b", 0, DType::F16, false);
    ADD_FAILURE() << "opt-7b is not a published shape";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("llama-3-8b"), std::string::npos) << e.what();
  }
  EXPECT_THROW(write_large_sf((tmp.path / "x.sf").string(), "opt-125m", 0, DType::I32, false),
               Error);
  EXPECT_FALSE(fs::exists(tmp.path / "x.sf"));  // nothing half-written
}

}  // namespace
}  // namespace sf::model
