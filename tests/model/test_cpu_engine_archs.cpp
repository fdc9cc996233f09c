// The random models of every architecture (test_models.hpp: random_model) on the CPU engine: each
// one runs, its logits are finite and spread out, incremental decode (a prefill, a chunk, then one
// token at a time) equals the full forward, and a 2:4 model equals its decompressed dense twin.
// These are the models the CUDA engine's tests compare against the CPU engine
// (tests/cuda_model/test_cuda_engine.cpp), so they are checked here where no GPU is needed.
//
// Tolerance: both sides run the same fp32 arithmetic on the same stored weights, only the
// summation order of the products differs (the GEMM's blocking depends on the number of rows).
// A length-K fp32 dot product is off by about sqrt(K) 2^-24 (K <= 512 here: ~1.4e-6); two layers,
// norms, the softmax and the MLP's gate compound that by ~10x, so 5e-5 leaves a margin while a
// wrong position, mask or cache row gives errors of order 1e-1.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "core/error.hpp"
#include "model/cpu_engine.hpp"
#include "test_models.hpp"

namespace sf::model {
namespace {

constexpr double kTol = 5e-5;

using test::some_tokens;

struct Arch {
  const char* name;
  arch::ModelDesc (*config)();
};

const Arch kArchs[] = {
    {"opt", test::tiny_config},         {"llama", test::tiny_llama_config},
    {"qwen2", test::tiny_qwen2_config}, {"mistral", test::tiny_mistral_config},
    {"gpt2", test::tiny_gpt2_config},
};

class CpuEngineArchs : public ::testing::TestWithParam<Arch> {};

TEST_P(CpuEngineArchs, RandomModelHasEveryExpectedTensor) {
  test::RandomSpec spec;
  spec.config = GetParam().config();
  auto m = test::random_model(spec);
  const auto want = arch::expected_tensors(m->config(), !m->config().tie_word_embeddings);
  EXPECT_EQ(m->dense_tensors().size(), want.size());
  for (const auto& t : want) {
    const Tensor* got = m->find(t.name);
    ASSERT_NE(got, nullptr) << t.name;
    EXPECT_EQ(got->shape, t.shape) << t.name;
  }
  // The same seed gives the same weights.
  auto again = test::random_model(spec);
  EXPECT_EQ(again->values(want.back().name), m->values(want.back().name));
}

TEST_P(CpuEngineArchs, IncrementalDecodeEqualsFullForward) {
  for (DType dt : {DType::F16, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    test::RandomSpec spec;
    spec.config = GetParam().config();
    spec.dtype = dt;
    spec.seed = 3;
    auto m = test::random_model(spec);
    CpuEngine cpu(*m);
    const auto& c = cpu.config();
    const int64_t n = c.max_position_embeddings - 4, V = c.vocab_size;
    const auto tokens = some_tokens(n, V, 11);
    KvCache full_cache = cpu.make_cache(n);
    const auto full = cpu.forward(tokens, full_cache, /*all_logits=*/true);
    ASSERT_EQ(full.size(), size_t(n * V));
    double sq = 0;
    for (float v : full) {
      ASSERT_TRUE(std::isfinite(v));
      sq += double(v) * v;
    }
    // Not degenerate: logits spread over a few units, so the comparisons below prove something.
    EXPECT_GT(std::sqrt(sq / double(full.size())), 0.3);

    KvCache cache = cpu.make_cache(n);
    std::vector<float> got;
    auto run = [&](size_t begin, size_t end) {
      auto l = cpu.forward(std::span(tokens).subspan(begin, end - begin), cache, true);
      got.insert(got.end(), l.begin(), l.end());
    };
    run(0, 9);
    run(9, 14);
    for (size_t i = 14; i < tokens.size(); ++i) run(i, i + 1);
    EXPECT_EQ(cache.length, n);
    EXPECT_LT(test::rel_l2(got, full), kTol);
  }
}

TEST_P(CpuEngineArchs, SparseEqualsItsDecompressedTwin) {
  test::RandomSpec spec;
  spec.config = GetParam().config();
  spec.sparse24 = true;
  spec.seed = 5;
  auto sparse = test::random_model(spec);
  ASSERT_TRUE(sparse->is_sparse());
  auto dense = sparse->densified();
  CpuEngine s(*sparse), d(*dense);
  const auto tokens = some_tokens(25, spec.config.vocab_size, 5);
  KvCache sc = s.make_cache(25), dc = d.make_cache(25);
  EXPECT_LT(test::rel_l2(s.forward(tokens, sc, true), d.forward(tokens, dc, true)), kTol);
}

// A batched pass (a server's step: one sequence prefilling a chunk, others decoding one token, all
// at different positions) gives every sequence exactly the logits it gets alone: the GEMM computes
// each row in the same order whatever the row count, and attention reads each row's own cache.
TEST_P(CpuEngineArchs, BatchedStepEqualsEachSequenceAlone) {
  for (bool sparse : {false, true}) {
    test::RandomSpec spec;
    spec.config = GetParam().config();
    spec.sparse24 = sparse;
    spec.seed = 11;
    auto m = test::random_model(spec);
    CpuEngine e(*m);
    const int64_t V = spec.config.vocab_size;
    const int64_t lens[] = {7, 1, 19, 3};
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 4; ++i) prompts.push_back(some_tokens(lens[i], V, 20u + uint32_t(i)));
    const std::vector<int32_t> chunk = some_tokens(5, V, 99);
    std::vector<KvCache> alone, together;
    std::vector<std::vector<float>> want;
    for (int i = 0; i < 4; ++i) {
      alone.push_back(e.make_cache(64));
      together.push_back(e.make_cache(64));
      e.forward(prompts[size_t(i)], alone.back());
      e.forward(prompts[size_t(i)], together.back());
    }
    // Sequence 2 takes a 5-token chunk, the others one token each.
    std::vector<BatchSegment> segs;
    for (int i = 0; i < 4; ++i) {
      const std::span<const int32_t> t =
          i == 2 ? std::span<const int32_t>(chunk) : std::span<const int32_t>(&chunk[size_t(i)], 1);
      want.push_back(e.forward(t, alone[size_t(i)]));
      segs.push_back({t, &together[size_t(i)]});
    }
    const auto got = e.forward_batch(segs);
    ASSERT_EQ(got.size(), size_t(4 * V));
    for (int i = 0; i < 4; ++i) {
      const std::vector<float> row(got.begin() + i * V, got.begin() + (i + 1) * V);
      if (sparse)  // the 2:4 kernels block rows differently from 16 rows up: rounding only
        EXPECT_LT(test::rel_l2(row, want[size_t(i)]), kTol) << GetParam().name << " seq " << i;
      else
        EXPECT_EQ(row, want[size_t(i)]) << GetParam().name << " seq " << i;
      EXPECT_EQ(together[size_t(i)].length, alone[size_t(i)].length);
    }
    // Two segments on one cache are refused, not run.
    const BatchSegment twice[] = {{chunk, &together[0]}, {chunk, &together[0]}};
    EXPECT_THROW(e.forward_batch(twice), Error);
  }
}

// A cache grown mid-sequence keeps what it held: decoding on equals decoding in a large cache.
TEST(CpuEngineKv, ReserveKeepsTheHeldPositions) {
  test::RandomSpec spec;
  spec.config = test::tiny_llama_config();
  auto m = test::random_model(spec);
  CpuEngine e(*m);
  const auto toks = some_tokens(12, spec.config.vocab_size, 4);
  KvCache big = e.make_cache(32), small = e.make_cache(8);
  e.forward(std::span<const int32_t>(toks).first(8), big);
  e.forward(std::span<const int32_t>(toks).first(8), small);
  small.reserve(16);
  EXPECT_EQ(small.capacity, 16);
  EXPECT_EQ(e.forward(std::span<const int32_t>(toks).subspan(8), small),
            e.forward(std::span<const int32_t>(toks).subspan(8), big));
}

// embed() then run_layer() for each layer (what SparseGPT's calibration does) computes what
// forward() computes: every linear sees the same input, bit for bit.
TEST_P(CpuEngineArchs, LayerByLayerEqualsForward) {
  test::RandomSpec spec;
  spec.config = GetParam().config();
  spec.seed = 7;
  auto m = test::random_model(spec);
  CpuEngine cpu(*m);
  const auto tokens = some_tokens(21, spec.config.vocab_size, 9);
  std::map<std::string, std::vector<float>> seen_forward, seen_steps;
  auto record = [](std::map<std::string, std::vector<float>>& into) {
    return [&into](const std::string& prefix, const float* x, int64_t rows, int64_t in) {
      into[prefix].assign(x, x + rows * in);
    };
  };
  KvCache a = cpu.make_cache(21), b = cpu.make_cache(21);
  cpu.set_observer(record(seen_forward));
  cpu.forward(tokens, a);
  cpu.set_observer(record(seen_steps));
  std::vector<float> h = cpu.embed(tokens, b);
  for (int64_t l = 0; l < cpu.config().num_hidden_layers; ++l) cpu.run_layer(l, h, b);
  EXPECT_EQ(b.length, 0);  // run_layer leaves the length to its caller
  EXPECT_EQ(seen_steps, seen_forward);
  EXPECT_EQ(seen_steps.size(),
            size_t(cpu.config().num_hidden_layers) * cpu.config().layer_linears().size());
  EXPECT_THROW(cpu.run_layer(cpu.config().num_hidden_layers, h, b), Error);
}

INSTANTIATE_TEST_SUITE_P(All, CpuEngineArchs, ::testing::ValuesIn(kArchs),
                         [](const auto& info) { return std::string(info.param.name); });

// The Mistral-like model's window (48 of 64 positions) is in force past 48 tokens: the last logits
// differ from the same weights without a window, and agree with them within the window.
TEST(CpuEngineArchs, SlidingWindowMattersOnlyPastTheWindow) {
  test::RandomSpec spec;
  spec.config = test::tiny_mistral_config();
  ASSERT_EQ(spec.config.sliding_window, 48);
  auto windowed = test::random_model(spec);
  spec.config.sliding_window = 0;
  auto open = test::random_model(spec);
  CpuEngine a(*windowed), b(*open);
  const auto tokens = some_tokens(60, spec.config.vocab_size, 9);
  for (int64_t n : {48, 60}) {
    KvCache ca = a.make_cache(n), cb = b.make_cache(n);
    const auto la = a.forward(std::span(tokens).subspan(0, size_t(n)), ca);
    const auto lb = b.forward(std::span(tokens).subspan(0, size_t(n)), cb);
    if (n <= 48) {
      EXPECT_EQ(la, lb) << n << " tokens fit the window";
    } else {
      EXPECT_GT(test::rel_l2(la, lb), 1e-3) << n << " tokens: the window must change the logits";
    }
  }
}

}  // namespace
}  // namespace sf::model
