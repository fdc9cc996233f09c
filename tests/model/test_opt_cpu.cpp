// The CPU forward pass against an fp64 reference written from HF's modeling_opt.py, on random tiny
// models of every OPT variant; KV-cache decode against full recompute; 2:4 against its decompressed
// dense twin; Wanda activation norms; generation and perplexity bookkeeping.
//
// Tolerances. Both sides read the same stored weights (fp16/bf16/fp32, widened exactly), so the
// only difference is fp32 rounding in our activations and accumulations. A length-K fp32 dot
// product has a typical relative error of about sqrt(K) * 2^-24 (K <= 64 here: ~5e-7); two layers,
// layer norms and the softmax compound it by at most ~10x, and logits are sums of such products, so
// ~5e-6 is the expected relative L2 error. We allow 3e-5 (a bug such as a wrong position or a
// missing bias gives errors of order 1). Cache vs recompute and sparse vs densified differ only in
// summation order inside the same fp32 arithmetic: same 3e-5 bound.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "core/error.hpp"
#include "model/generate.hpp"
#include "model/cpu_engine.hpp"
#include "test_models.hpp"

namespace sf::model {
namespace {

constexpr double kTol = 3e-5;

std::vector<int32_t> some_tokens(int64_t n, int64_t vocab, uint32_t seed = 7) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint32_t s = seed;
  for (auto& e : t) {
    s = s * 1664525u + 1013904223u;
    e = int32_t((s >> 8) % uint32_t(vocab));
  }
  t[0] = 2;  // BOS, as OPT prompts start
  return t;
}

struct Variant {
  const char* name;
  DType dtype;
  void (*edit)(arch::ModelDesc&);
};

const Variant kVariants[] = {
    {"pre_ln_fp16", DType::F16, [](arch::ModelDesc&) {}},
    {"post_ln_fp16", DType::F16, [](arch::ModelDesc& c) { c.pre_norm = false; }},
    {"proj_bf16", DType::BF16, [](arch::ModelDesc& c) { c.word_embed_proj_dim = 16; }},
    {"untied_fp32", DType::F32, [](arch::ModelDesc& c) { c.tie_word_embeddings = false; }},
    {"no_bias_no_affine_fp16", DType::F16,
     [](arch::ModelDesc& c) {
       c.qkv_bias = c.o_bias = c.mlp_bias = false;
       c.norm_affine = false;
     }},
};

class OptCpuVariants : public ::testing::TestWithParam<Variant> {};

TEST_P(OptCpuVariants, FullForwardMatchesFp64Reference) {
  test::RandomSpec spec;
  spec.config = test::tiny_config();
  GetParam().edit(spec.config);
  spec.dtype = GetParam().dtype;
  auto m = test::random_opt(spec);
  CpuEngine opt(*m);
  const auto tokens = some_tokens(23, spec.config.vocab_size);
  KvCache cache = opt.make_cache(spec.config.max_position_embeddings);
  const auto logits = opt.forward(tokens, cache, /*all_logits=*/true);
  const auto ref = test::reference_forward(*m, tokens);
  ASSERT_EQ(logits.size(), ref.size());
  EXPECT_LT(test::rel_l2(logits, ref), kTol);
  // The logits are not degenerate (otherwise the comparison would prove little).
  double sd = 0;
  for (double v : ref) sd += v * v;
  EXPECT_GT(std::sqrt(sd / double(ref.size())), 0.5);
  EXPECT_EQ(cache.length, 23);
}

TEST_P(OptCpuVariants, IncrementalDecodeEqualsFullRecompute) {
  test::RandomSpec spec;
  spec.config = test::tiny_config();
  GetParam().edit(spec.config);
  spec.dtype = GetParam().dtype;
  auto m = test::random_opt(spec);
  CpuEngine opt(*m);
  const int64_t V = spec.config.vocab_size;
  const auto tokens = some_tokens(30, V, 11);
  KvCache full_cache = opt.make_cache(30);
  const auto full = opt.forward(tokens, full_cache, true);
  // Prefill 9 tokens, one chunk of 5, then one token at a time.
  KvCache cache = opt.make_cache(30);
  std::vector<float> got;
  auto run = [&](size_t begin, size_t end) {
    auto l = opt.forward(std::span(tokens).subspan(begin, end - begin), cache, true);
    got.insert(got.end(), l.begin(), l.end());
  };
  run(0, 9);
  run(9, 14);
  for (size_t i = 14; i < tokens.size(); ++i) run(i, i + 1);
  EXPECT_LT(test::rel_l2(got, full), kTol);
  // The last-position-only output is the last row.
  KvCache c2 = opt.make_cache(30);
  const auto last = opt.forward(tokens, c2, false);
  ASSERT_EQ(last.size(), size_t(V));
  EXPECT_LT(test::rel_l2(last, std::vector<float>(full.end() - V, full.end())), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(All, OptCpuVariants, ::testing::ValuesIn(kVariants),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(OptCpu24, DecodeWithCacheEqualsRecomputeAndDecompressedDense) {
  test::RandomSpec spec;
  spec.config = test::tiny_config();
  spec.dtype = DType::F16;
  spec.sparse24 = true;
  auto sparse = test::random_opt(spec);
  ASSERT_TRUE(sparse->is_sparse());
  ASSERT_NE(sparse->linear("model.decoder.layers.1.fc2").sparse, nullptr);
  auto dense = sparse->densified();
  ASSERT_FALSE(dense->is_sparse());

  CpuEngine s(*sparse), d(*dense);
  const auto tokens = some_tokens(25, spec.config.vocab_size, 5);
  KvCache sc = s.make_cache(25), dc = d.make_cache(25);
  const auto s_full = s.forward(tokens, sc, true);
  const auto d_full = d.forward(tokens, dc, true);
  EXPECT_LT(test::rel_l2(s_full, d_full), kTol);
  EXPECT_LT(test::rel_l2(s_full, test::reference_forward(*sparse, tokens)), kTol);

  KvCache inc = s.make_cache(25);
  std::vector<float> got = s.forward(std::span(tokens).subspan(0, 6), inc, true);
  for (size_t i = 6; i < tokens.size(); ++i) {
    auto l = s.forward(std::span(tokens).subspan(i, 1), inc, true);
    got.insert(got.end(), l.begin(), l.end());
  }
  EXPECT_LT(test::rel_l2(got, s_full), kTol);
}

TEST(CpuEngine, RejectsBadInput) {
  test::RandomSpec spec;
  spec.config = test::tiny_config();
  auto m = test::random_opt(spec);
  CpuEngine opt(*m);
  KvCache cache = opt.make_cache(spec.config.max_position_embeddings);
  const std::vector<int32_t> bad_id = {2, int32_t(spec.config.vocab_size)};
  EXPECT_THROW(opt.forward(bad_id, cache), Error);
  const std::vector<int32_t> neg = {2, -1};
  EXPECT_THROW(opt.forward(neg, cache), Error);
  EXPECT_THROW(opt.forward(std::span<const int32_t>(), cache), Error);
  EXPECT_EQ(cache.length, 0);
  // One past max_position_embeddings.
  KvCache big(spec.config, spec.config.max_position_embeddings + 1);
  const auto too_long =
      some_tokens(spec.config.max_position_embeddings + 1, spec.config.vocab_size);
  try {
    opt.forward(too_long, big);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_position_embeddings"), std::string::npos) << e.what();
  }
  KvCache small = opt.make_cache(4);
  EXPECT_THROW(opt.forward(some_tokens(5, spec.config.vocab_size), small), Error);
}

TEST(CpuEngine, RejectsModelWithWrongShape) {
  test::RandomSpec spec;
  spec.config = test::tiny_config();
  auto m = test::random_opt(spec);
  auto cfg = spec.config;
  cfg.ffn_dim = 48;  // the weights say 64
  m->set_config(cfg);
  try {
    CpuEngine opt(*m);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fc1"), std::string::npos) << e.what();
  }
}

TEST(ActivationNorms, MatchReferenceInputs) {
  test::RandomSpec spec;
  spec.config = test::tiny_config();
  spec.config.max_position_embeddings = 16;  // so 40 tokens span 3 windows
  auto m = test::random_opt(spec);
  const auto tokens = some_tokens(40, spec.config.vocab_size, 3);
  const auto norms = collect_activation_norms(*m, tokens);
  std::map<std::string, std::vector<double>> sumsq;
  for (size_t start = 0; start < tokens.size(); start += 16) {
    std::vector<int32_t> w(tokens.begin() + ptrdiff_t(start),
                           tokens.begin() + ptrdiff_t(std::min(tokens.size(), start + 16)));
    std::map<std::string, std::vector<double>> inputs;
    test::reference_forward(*m, w, &inputs);
    for (const auto& [name, x] : inputs) {
      const size_t in = x.size() / w.size();
      auto& acc = sumsq[name];
      acc.resize(in, 0.0);
      for (size_t t = 0; t < w.size(); ++t)
        for (size_t j = 0; j < in; ++j) acc[j] += x[t * in + j] * x[t * in + j];
    }
  }
  for (const auto& prefix : m->linear_prefixes()) {
    ASSERT_TRUE(norms.count(prefix)) << prefix;
    const auto& got = norms.at(prefix);
    const auto& want = sumsq.at(prefix);
    ASSERT_EQ(got.size(), want.size()) << prefix;
    std::vector<double> want_norm(want.size());
    for (size_t j = 0; j < want.size(); ++j) want_norm[j] = std::sqrt(want[j]);
    EXPECT_LT(test::rel_l2(got, want_norm), kTol) << prefix;
  }
  // fc2's input is post-ReLU: some channels fire on some tokens only, all norms are finite, >= 0.
  for (float v : norms.at("model.decoder.layers.0.fc2")) EXPECT_TRUE(std::isfinite(v) && v >= 0.0f);
}

TEST(Generate, GreedyEqualsArgmaxOfFullRecomputeAndStopsAtEos) {
  test::RandomSpec spec;
  spec.config = test::tiny_config();
  auto m = test::random_opt(spec);
  CpuEngine opt(*m);
  const auto prompt = some_tokens(5, spec.config.vocab_size, 9);
  Sampler greedy(SamplingParams{});
  std::vector<int32_t> streamed;
  const auto res = generate(opt, prompt, 12, greedy, [&](int32_t t) { streamed.push_back(t); });
  std::vector<int32_t> seq = prompt;
  std::vector<int32_t> want;
  for (int i = 0; i < 12; ++i) {
    const auto ref = test::reference_forward(*m, seq);
    const auto row = std::vector<double>(ref.end() - spec.config.vocab_size, ref.end());
    const int32_t next = int32_t(std::max_element(row.begin(), row.end()) - row.begin());
    want.push_back(next);
    seq.push_back(next);
    if (next == spec.config.eos_token_id) break;
  }
  EXPECT_EQ(res.ids, want);
  EXPECT_EQ(streamed, res.ids);
  EXPECT_EQ(res.decode_steps, int64_t(res.ids.size()) - 1);

  // With the first greedy token declared EOS, generation stops right after it.
  auto cfg = spec.config;
  cfg.eos_token_id = want[0];
  m->set_config(cfg);
  CpuEngine opt2(*m);
  const auto res2 = generate(opt2, prompt, 12, greedy);
  EXPECT_EQ(res2.ids, std::vector<int32_t>{want[0]});
  EXPECT_THROW(generate(opt2, prompt, spec.config.max_position_embeddings, greedy), Error);
}

TEST(Perplexity, MatchesReferenceLogSoftmaxWholeAndWindowed) {
  test::RandomSpec spec;
  spec.config = test::tiny_config();
  auto m = test::random_opt(spec);
  CpuEngine opt(*m);
  const auto ids = some_tokens(21, spec.config.vocab_size, 4);
  const int64_t V = spec.config.vocab_size;
  auto nll = [&](const std::vector<int32_t>& w) {
    const auto logits = test::reference_forward(*m, w);
    double s = 0;
    for (size_t i = 0; i + 1 < w.size(); ++i) {
      double mx = -1e300, z = 0;
      for (int64_t j = 0; j < V; ++j) mx = std::max(mx, logits[i * size_t(V) + size_t(j)]);
      for (int64_t j = 0; j < V; ++j) z += std::exp(logits[i * size_t(V) + size_t(j)] - mx);
      s += mx + std::log(z) - logits[i * size_t(V) + size_t(w[i + 1])];
    }
    return s;
  };
  const auto whole = perplexity(opt, ids);
  EXPECT_EQ(whole.predicted, 20);
  EXPECT_EQ(whole.windows, 1);
  EXPECT_NEAR(whole.mean_nll(), nll(ids) / 20.0, 1e-4);
  // Windows of 8: [0,8) [8,16) [16,21): 7 + 7 + 4 predicted tokens.
  const auto win = perplexity(opt, ids, 8);
  EXPECT_EQ(win.windows, 3);
  EXPECT_EQ(win.predicted, 18);
  const double want = nll({ids.begin(), ids.begin() + 8}) +
                      nll({ids.begin() + 8, ids.begin() + 16}) + nll({ids.begin() + 16, ids.end()});
  EXPECT_NEAR(win.nll_sum, want, 1e-3);
  EXPECT_NEAR(win.perplexity(), std::exp(want / 18.0), 1e-3 * std::exp(want / 18.0));
  EXPECT_THROW(perplexity(opt, std::vector<int32_t>{2}), Error);
  EXPECT_THROW(perplexity(opt, ids, spec.config.max_position_embeddings + 1), Error);
}

}  // namespace
}  // namespace sf::model
