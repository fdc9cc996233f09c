// `synth --format sf` for the real OPT shapes (write_large_opt_sf) against the two-step route it
// replaces: the same weights as `synth --format hf` followed by `convert`, dense and 2:4, tensor by
// tensor (opt-125m: 125M parameters, a few seconds).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "core/error.hpp"
#include "model/convert.hpp"
#include "model/synth_large.hpp"
#include "model/synth.hpp"
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

TEST(SynthLargeSf, EqualsTheHfCheckpointConverted) {
  TempDir tmp;
  const std::string hf = (tmp.path / "hf").string();
  write_large_opt_hf(hf, "opt-125m", 3, DType::F16);
  for (const bool sparse : {false, true}) {
    SCOPED_TRACE(sparse ? "2:4" : "dense");
    const std::string direct = (tmp.path / (sparse ? "direct24.sf" : "direct.sf")).string();
    const std::string two_step = (tmp.path / (sparse ? "convert24.sf" : "convert.sf")).string();
    const auto r = write_large_opt_sf(direct, "opt-125m", 3, DType::F16, sparse);
    EXPECT_EQ(r.config.hidden_size, 768);
    EXPECT_EQ(r.file_bytes, fs::file_size(direct));
    ConvertOptions co;
    co.sparsity = sparse ? "2:4" : "none";
    convert_to_sf(*Model::open(hf), two_step, co);
    const auto a = Model::open(direct), b = Model::open(two_step);
    EXPECT_EQ(a->is_sparse(), sparse);
    EXPECT_EQ(a->metadata().value("sparsity.pattern", ""), sparse ? "2:4" : "none");
    EXPECT_EQ(a->metadata().at("weights.synthetic_info"), b->metadata().at("weights.synthetic_info"));
    EXPECT_EQ(a->metadata().value("weights.synthetic", false), true);
    expect_same_tensors(*a, *b);
  }
}

// The real shapes have 50272 ids against the built-in tokenizer's 1500: the ids it lacks decode to
// placeholders, so a random model's output prints; encoding is the built-in tokenizer's.
TEST(SynthLargeSf, EveryIdOfTheModelDecodes) {
  const std::string vocab = synth_vocab_json(50272);
  const auto tok = tok::Tokenizer::from_json_and_merges(vocab, builtin_merges_txt());
  const auto builtin = tok::Tokenizer::from_json_and_merges(builtin_vocab_json(), builtin_merges_txt());
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
  EXPECT_THROW(write_large_opt_sf((tmp.path / "x.sf").string(), "opt-7b", 0, DType::F16, false), Error);
  EXPECT_THROW(write_large_opt_sf((tmp.path / "x.sf").string(), "opt-125m", 0, DType::I32, false), Error);
  EXPECT_FALSE(fs::exists(tmp.path / "x.sf"));  // nothing half-written
}

}  // namespace
}  // namespace sf::model
