// The CUDA engine on random tiny models of every architecture the model description covers (OPT
// pre- and post-norm, a Llama with grouped-query attention, a Qwen2-like with q/k/v biases and tied
// embeddings, a Mistral-like with head_dim != hidden / heads and a sliding window, a GPT-2-like
// with GELU-tanh and learned positions from row 0; tests/model/test_models.hpp), against the CPU
// engine on the same weights, dense and 2:4: prefill logits, graph decode at batch 1, greedy
// tokens at batch 1 and through the batched decode graph.
//
// Tolerances (relative L2 over logits). fp32_compute widens every weight and runs fp32 throughout,
// the CPU's arithmetic in another summation order: 1e-4, as for the HF fixtures
// (test_opt_cuda.cpp). The native modes round every product input, RMSNorm's output (twice, as
// HF does), the rotary terms and the attention probabilities to the weights' type while the CPU
// keeps fp32 activations; HF's own fp16 run of the OPT fixtures is 7e-4..9e-4 from its fp32 one,
// so fp16 gets 3e-3, and bf16 (8 bits of mantissa: 8x the rounding) 3e-2. A wrong position,
// mask, head mapping or gate/up pairing gives errors of order 1e-1 or more.
// Greedy ids must equal the CPU's wherever the CPU's top-1/top-2 margin along its path exceeds 20x
// the largest logit error measured on the prefill (in fp32 mode nearly always on these models;
// otherwise, rarely, the comparison is reported and skipped, a near tie not being a bug).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "core/error.hpp"
#include "model/cpu_engine.hpp"
#include "model/cuda_engine.hpp"
#include "test_models.hpp"

namespace sf::model {
namespace {

#define SKIP_WITHOUT_GPU()                                                                    \
  do {                                                                                        \
    if (const std::string why = cuda_unavailable_reason(); !why.empty()) GTEST_SKIP() << why; \
  } while (0)

using test::some_tokens;

double rel_err(const std::vector<float>& got, const std::vector<float>& ref,
               double* max_abs = nullptr) {
  EXPECT_EQ(got.size(), ref.size());
  double num = 0, den = 0, mx = 0;
  for (size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
    const double d = double(got[i]) - double(ref[i]);
    if (std::isnan(d)) return INFINITY;
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
    mx = std::max(mx, std::abs(d));
  }
  if (max_abs) *max_abs = mx;
  return std::sqrt(num / den);
}

// An OPT with head_dim 64 (what the fused prefill attention takes), pre- or post-norm.
arch::ModelDesc opt_config(bool pre_norm) {
  arch::ModelDesc c = test::tiny_config();
  c.hidden_size = c.word_embed_proj_dim = 128;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 0;
  c.head_dim = 0;
  c.ffn_dim = 256;
  c.max_position_embeddings = 64;
  c.pre_norm = pre_norm;
  c.final_norm = true;  // complete() drops it again for post-norm OPT, as HF does
  arch::complete(c);
  return c;
}
arch::ModelDesc opt_pre() {
  return opt_config(true);
}
arch::ModelDesc opt_post() {
  return opt_config(false);
}

struct Case {
  const char* arch;
  arch::ModelDesc (*config)();
  DType dtype;
  bool fp32;      // CudaOptions::fp32_compute
  bool sparse24;  // magnitude-pruned decoder linears
};

std::string case_name(const ::testing::TestParamInfo<Case>& i) {
  return std::string(i.param.arch) + "_" + std::string(dtype_name(i.param.dtype)) +
         (i.param.fp32 ? "_fp32" : "_native") + (i.param.sparse24 ? "_24" : "_dense");
}

double tolerance(const Case& c) {
  if (c.fp32) return 1e-4;
  return c.dtype == DType::BF16 ? 3e-2 : 3e-3;
}

// The CPU's greedy continuation of `prompt`, and the smallest top-1/top-2 logit margin along it.
struct Greedy {
  std::vector<int32_t> ids;
  double min_margin = INFINITY;
};
Greedy cpu_greedy(CpuEngine& cpu, const std::vector<int32_t>& prompt, int64_t new_tokens) {
  Greedy g;
  KvCache cache = cpu.make_cache(int64_t(prompt.size()) + new_tokens);
  std::vector<float> l = cpu.forward(prompt, cache);
  for (int64_t s = 0; s < new_tokens; ++s) {
    const auto top = std::max_element(l.begin(), l.end());  // the lowest id among ties
    const int32_t next = int32_t(top - l.begin());
    float second = -INFINITY;
    for (size_t i = 0; i < l.size(); ++i)
      if (int32_t(i) != next) second = std::max(second, l[i]);
    g.min_margin = std::min(g.min_margin, double(*top) - double(second));
    g.ids.push_back(next);
    if (s + 1 < new_tokens) l = cpu.forward(std::span<const int32_t>(&next, 1), cache);
  }
  return g;
}

class CudaEngineArch : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    test::RandomSpec spec;
    spec.config = GetParam().config();
    spec.dtype = GetParam().dtype;
    spec.sparse24 = GetParam().sparse24;
    spec.seed = 13;
    model_ = test::random_model(spec);
    cpu_ = std::make_unique<CpuEngine>(*model_);
    CudaOptions o;
    o.fp32_compute = GetParam().fp32;
    gpu_ = make_cuda_engine(*model_, o);
  }
  // Within every model's context and the Mistral-like model's window (48).
  static constexpr int64_t kTokens = 40;
  std::unique_ptr<test::MemModel> model_;
  std::unique_ptr<CpuEngine> cpu_;
  std::unique_ptr<CudaEngine> gpu_;
};

TEST_P(CudaEngineArch, PrefillAndGraphDecodeMatchTheCpu) {
  const auto& c = model_->config();
  EXPECT_EQ(gpu_->sparse(), GetParam().sparse24 && !GetParam().fp32);
  const auto tokens = some_tokens(kTokens, c.vocab_size, 7);
  KvCache cache = cpu_->make_cache(kTokens);
  const auto want = cpu_->forward(tokens, cache, /*all_logits=*/true);

  gpu_->reset(kTokens);
  double max_abs = 0;
  const double err_prefill = rel_err(gpu_->forward(tokens, true), want, &max_abs);
  EXPECT_LT(err_prefill, tolerance(GetParam()));

  // A 5-token prefill, then one token at a time through the decode graph (captured on the first
  // step, replayed on the others).
  gpu_->reset(kTokens);
  std::vector<float> inc = gpu_->forward(std::span(tokens).subspan(0, 5), true);
  for (int64_t i = 5; i < kTokens; ++i) {
    const auto l = gpu_->forward(std::span(tokens).subspan(size_t(i), 1), true);
    inc.insert(inc.end(), l.begin(), l.end());
  }
  EXPECT_EQ(gpu_->length(), kTokens);
  const double err_decode = rel_err(inc, want);
  EXPECT_LT(err_decode, tolerance(GetParam()));
  std::printf("%s: prefill vs CPU rel L2 %.3g (max abs %.3g), decode vs CPU %.3g\n",
              case_name({GetParam(), 0}).c_str(), err_prefill, max_abs, err_decode);
}

TEST_P(CudaEngineArch, GreedyAtBatchOneAndInTheBatchedGraphEqualsTheCpu) {
  const auto& c = model_->config();
  const auto tokens = some_tokens(kTokens, c.vocab_size, 7);
  KvCache cache = cpu_->make_cache(kTokens);
  const auto want = cpu_->forward(tokens, cache, true);
  gpu_->reset(kTokens);
  double max_abs = 0;
  rel_err(gpu_->forward(tokens, true), want, &max_abs);

  constexpr int64_t kPrompt = 6, kNew = 10;
  std::vector<std::vector<int32_t>> prompts;
  for (uint32_t b = 0; b < 4; ++b) prompts.push_back(some_tokens(kPrompt, c.vocab_size, 100 + b));
  std::vector<Greedy> ref;
  for (const auto& p : prompts) ref.push_back(cpu_greedy(*cpu_, p, kNew));
  auto comparable = [&](const Greedy& g) {
    if (g.min_margin > 20 * max_abs) return true;
    std::printf(
        "  greedy comparison skipped: the CPU's top-1/top-2 margin %.3g is within 20x the "
        "GPU's logit error %.3g\n",
        g.min_margin, max_abs);
    return false;
  };
  // Batch 1: the prefill's sampling, then graph replays. generate() stops after an EOS (the CPU
  // path above does not), so the GPU's ids are a prefix of the CPU's.
  for (size_t b = 0; b < prompts.size(); ++b) {
    const auto g = gpu_->generate(prompts[b], kNew, SamplingParams{});
    ASSERT_FALSE(g.ids.empty());
    ASSERT_LE(g.ids.size(), ref[b].ids.size());
    if (comparable(ref[b])) {
      EXPECT_TRUE(std::equal(g.ids.begin(), g.ids.end(), ref[b].ids.begin())) << "prompt " << b;
    }
  }
  // Batch 4 (and 2): every row's decode through the batched graph (M = batch in every product).
  for (int64_t B : {int64_t(2), int64_t(4)}) {
    const std::vector<std::vector<int32_t>> some(prompts.begin(), prompts.begin() + B);
    const auto r = gpu_->generate_batch(some, kNew, SamplingParams{});
    ASSERT_EQ(int64_t(r.ids.size()), B);
    EXPECT_EQ(r.decode_steps, kNew - 1);
    for (int64_t b = 0; b < B; ++b) {
      if (comparable(ref[size_t(b)])) {
        EXPECT_EQ(r.ids[size_t(b)], ref[size_t(b)].ids) << "batch " << B << " row " << b;
      }
    }
  }
}

const Case kCases[] = {
    // fp32 mode: the CPU's arithmetic, dense and 2:4 (decompressed on upload).
    {"opt_pre", opt_pre, DType::F16, true, false},
    {"opt_post", opt_post, DType::F16, true, false},
    {"llama", test::tiny_llama_config, DType::F16, true, false},
    {"qwen2", test::tiny_qwen2_config, DType::F16, true, false},
    {"mistral", test::tiny_mistral_config, DType::F16, true, false},
    {"gpt2", test::tiny_gpt2_config, DType::F16, true, false},
    {"llama", test::tiny_llama_config, DType::F16, true, true},
    {"gpt2", test::tiny_gpt2_config, DType::F16, true, true},
    // Native fp16: the GEMV, cuBLASLt and the fused prefill attention, dense.
    {"opt_pre", opt_pre, DType::F16, false, false},
    {"opt_post", opt_post, DType::F16, false, false},
    {"llama", test::tiny_llama_config, DType::F16, false, false},
    {"qwen2", test::tiny_qwen2_config, DType::F16, false, false},
    {"mistral", test::tiny_mistral_config, DType::F16, false, false},
    {"gpt2", test::tiny_gpt2_config, DType::F16, false, false},
    // Native 2:4: the fused q/k/v and gate/up weights through the 2:4 kernels.
    {"opt_pre", opt_pre, DType::F16, false, true},
    {"llama", test::tiny_llama_config, DType::F16, false, true},
    {"qwen2", test::tiny_qwen2_config, DType::F16, false, true},
    {"mistral", test::tiny_mistral_config, DType::F16, false, true},
    {"gpt2", test::tiny_gpt2_config, DType::F16, false, true},
    // bf16: RMSNorm's and the rotary's roundings in bf16.
    {"llama", test::tiny_llama_config, DType::BF16, false, false},
    {"llama", test::tiny_llama_config, DType::BF16, false, true},
};
INSTANTIATE_TEST_SUITE_P(Archs, CudaEngineArch, ::testing::ValuesIn(kCases), case_name);

std::unique_ptr<test::MemModel> random_of(arch::ModelDesc c, DType dt = DType::F16,
                                          bool sparse24 = false) {
  test::RandomSpec spec;
  spec.config = std::move(c);
  spec.dtype = dt;
  spec.sparse24 = sparse24;
  spec.seed = 21;
  return test::random_model(spec);
}

// The unfused prefill attention (cuBLAS scores per KV head and query head of the group, the causal
// softmax, cuBLAS P V) in the native type, which fp32 mode runs too but the fused kernel replaces
// by default: grouped-query models (q_dim == and != hidden), a whole prefill and one in two parts,
// the second over 17 cached tokens (its scores start past key 0).
TEST(CudaEngineAttention, UnfusedGqaPrefillMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  for (auto config : {test::tiny_llama_config, test::tiny_mistral_config}) {
    auto m = random_of(config());
    SCOPED_TRACE(m->config().arch);
    CpuEngine cpu(*m);
    CudaOptions o;
    o.fused_prefill_attention = false;
    auto gpu = make_cuda_engine(*m, o);
    const auto tokens = some_tokens(40, m->config().vocab_size, 3);
    KvCache cache = cpu.make_cache(40);
    const auto want = cpu.forward(tokens, cache, true);
    gpu->reset(40);
    EXPECT_LT(rel_err(gpu->forward(tokens, true), want), 3e-3);
    gpu->reset(40);
    std::vector<float> two = gpu->forward(std::span(tokens).subspan(0, 17), true);
    const auto rest = gpu->forward(std::span(tokens).subspan(17), true);
    two.insert(two.end(), rest.begin(), rest.end());
    EXPECT_LT(rel_err(two, want), 3e-3);
  }
}

// The gated MLP's gate and up live in device memory once, fused: the weights the engine holds are
// the checkpoint's matrices once each (tied lm_head shared) plus fp32 norms, biases, their 16-bit
// copies and the rotary table, far less than one more [ffn, hidden] matrix per layer.
TEST(CudaEngineMemory, GateAndUpAreOneCopy) {
  SKIP_WITHOUT_GPU();
  auto m = random_of(test::tiny_qwen2_config());
  const auto& c = m->config();
  auto gpu = make_cuda_engine(*m);
  size_t matrices = 0, vectors = 0;
  for (const auto& t : arch::expected_tensors(c, !c.tie_word_embeddings)) {
    size_t n = 1;
    for (int64_t d : t.shape) n *= size_t(d);
    (t.shape.size() == 2 ? matrices : vectors) += n;
  }
  const size_t low = matrices * 2, high = low + vectors * 6 + size_t(c.head_dim) * 2;
  const size_t got = gpu->memory().weights;
  EXPECT_GE(got, low);
  EXPECT_LE(got, high) << "one more gate or up matrix per layer would be "
                       << size_t(c.ffn_dim * c.hidden_size) * 2 << " bytes";
  EXPECT_LT(high - low, size_t(c.ffn_dim * c.hidden_size) * 2);
  // What a decode step reads: every matrix once (the tied lm_head is the embedding).
  EXPECT_EQ(gpu->weight_bytes_per_step(), low);
}

// Whole layers in mapped host memory (CudaOptions::host_layers, the layer streaming of gated
// models under a GPU budget): the same bytes read by the same kernels over PCIe, so the same
// logits (prefill and decode) and the same greedy ids, bit for bit, and the bytes counted apart.
TEST(CudaEngineHostLayers, EqualAllResidentBitForBit) {
  SKIP_WITHOUT_GPU();
  auto m = random_of(test::tiny_llama_config());
  const auto& c = m->config();
  const auto toks = some_tokens(14, c.vocab_size, 5);
  auto ref = make_cuda_engine(*m);
  ref->reset(int64_t(toks.size()));
  const auto want_prefill = ref->forward(toks, /*all_logits=*/true);
  ref->reset(int64_t(toks.size()));
  const auto want_ids = ref->generate(std::span<const int32_t>(toks.data(), 3), 10, {}).ids;
  const size_t per_layer =
      2 * size_t(c.hidden_size) * size_t(2 * c.q_dim() + 2 * c.kv_dim() + 3 * c.ffn_dim);
  for (int64_t k : {c.num_hidden_layers, int64_t(1)}) {
    CudaOptions o;
    o.host_layers = k;
    auto e = make_cuda_engine(*m, o);
    EXPECT_EQ(e->memory().host_weights, size_t(k) * per_layer) << "k " << k;
    EXPECT_EQ(e->memory().weights + e->memory().host_weights, ref->memory().weights);
    e->reset(int64_t(toks.size()));
    const auto got = e->forward(toks, true);
    ASSERT_EQ(got.size(), want_prefill.size());
    EXPECT_EQ(0, std::memcmp(got.data(), want_prefill.data(), got.size() * 4))
        << "prefill, k " << k;
    e->reset(int64_t(toks.size()));
    EXPECT_EQ(e->generate(std::span<const int32_t>(toks.data(), 3), 10, {}).ids, want_ids)
        << "k " << k;
  }
  CudaOptions bad;
  bad.host_layers = c.num_hidden_layers + 1;
  EXPECT_THROW(make_cuda_engine(*m, bad), Error);
  // 2:4 weights are read by the 2:4 kernels from device memory only: refused with a reason.
  auto sparse = random_of(test::tiny_llama_config(), DType::F16, /*sparse24=*/true);
  CudaOptions one;
  one.host_layers = 1;
  try {
    make_cuda_engine(*sparse, one);
    ADD_FAILURE() << "2:4 weights in host memory were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("2:4"), std::string::npos) << e.what();
  }
}

// The stage profiles name the gated product, agree between eager and graph, and leave the engine
// decoding as before.
TEST(CudaEngineProfile, GatedModelProfilesAgreeAndDecodeIsUnchanged) {
  SKIP_WITHOUT_GPU();
  auto m = random_of(test::tiny_llama_config());
  const auto prompt = some_tokens(6, m->config().vocab_size, 4);
  std::vector<int32_t> want;
  {
    auto fresh = make_cuda_engine(*m);
    want = fresh->generate(prompt, 8, SamplingParams{}).ids;
  }
  auto gpu = make_cuda_engine(*m);
  const auto eager = gpu->profile_decode(6, 4, 2);
  const auto graph = gpu->profile_decode_graph(6, 4, 2);
  ASSERT_EQ(eager.size(), graph.size());
  bool gate_up = false;
  for (const auto& e : eager) {
    gate_up |= e.stage == "gate_up";
    const auto g = std::find_if(graph.begin(), graph.end(),
                                [&](const StageProfile& s) { return s.stage == e.stage; });
    ASSERT_NE(g, graph.end()) << e.stage;
    EXPECT_EQ(g->launches, e.launches) << e.stage;
    EXPECT_DOUBLE_EQ(g->bytes, e.bytes) << e.stage;
  }
  EXPECT_TRUE(gate_up);
  const auto prefill = gpu->profile_prefill(20);
  EXPECT_FALSE(prefill.empty());
  EXPECT_GT(gpu->dense_gemm_prefill_ms(20), 0.0);
  EXPECT_EQ(gpu->generate(prompt, 8, SamplingParams{}).ids, want);
}

// What the kernels do not run is refused up front with the reason.
TEST(CudaEngineErrors, RefusesWhatTheKernelsDoNotRun) {
  SKIP_WITHOUT_GPU();
  // A context past the sliding window.
  {
    auto m = random_of(test::tiny_mistral_config());
    auto gpu = make_cuda_engine(*m);
    gpu->reset(48);
    try {
      gpu->reset(49);
      ADD_FAILURE() << "a context past the window must be refused";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::UnsupportedShape);
      EXPECT_NE(std::string(e.what()).find("sliding"), std::string::npos) << e.what();
    }
    EXPECT_THROW(gpu->generate(some_tokens(40, 96, 1), 20, SamplingParams{}), Error);
  }
  // A head_dim past what the attention kernels hold.
  {
    arch::ModelDesc c = test::tiny_llama_config();
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.head_dim = 0;  // 512 / 2 = 256
    c.rope.dims = 0;
    arch::complete(c);
    auto m = random_of(c);
    try {
      make_cuda_engine(*m);
      ADD_FAILURE() << "head_dim 256 must be refused";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::UnsupportedShape);
    }
  }
  // An FFN provider (offloading) for a gated MLP; for OPT the same provider is taken.
  struct NoLayers final : FfnProvider {
    bool owns_ffn(int64_t) const override { return false; }
    void before_attention(int64_t, const void*, int64_t, void*) override {}
    void ffn(int64_t, const void*, int64_t, const float*, float*, bool, void*) override {}
  } provider;
  CudaOptions o;
  o.ffn_provider = &provider;
  {
    auto m = random_of(test::tiny_llama_config());
    try {
      make_cuda_engine(*m, o);
      ADD_FAILURE() << "an FfnProvider for a gated MLP must be refused";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::UnsupportedShape);
      EXPECT_NE(std::string(e.what()).find("gated"), std::string::npos) << e.what();
    }
  }
  {
    auto m = random_of(opt_pre());
    EXPECT_NO_THROW(make_cuda_engine(*m, o));
  }
}

}  // namespace
}  // namespace sf::model
