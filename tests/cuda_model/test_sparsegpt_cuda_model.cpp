// SparseGPT over whole tiny models on the GPU against the CPU run, and the engine calls it is built
// on: one layer at a time equals the CPU's layer-at-a-time pass, the observer sees every decoder
// linear's input under its HF names, and replace_weight changes exactly the weight it names.
//
// fp32 models run fp32 on both sides, so the calibration inputs agree to about 1e-6 and the
// masks nearly everywhere (a near tie may flip; 99% must agree) and each layer's output error
// within 5%. fp16 models run fp16 activations on the GPU against fp32 on the CPU: the weights come
// back 2:4 and each layer's output error within 25% of the CPU's. Skips with the reason when no
// GPU is present.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cmath>
#include <set>

#include "core/error.hpp"
#include "model/cpu_engine.hpp"
#include "model/cuda_engine.hpp"
#include "model/sparsegpt_model.hpp"
#include "sparse24/sparse24.hpp"
#include "test_models.hpp"

namespace sf::model {
namespace {

#define SKIP_WITHOUT_GPU()                                                                    \
  do {                                                                                        \
    if (const std::string why = cuda_unavailable_reason(); !why.empty()) GTEST_SKIP() << why; \
  } while (0)

using test::some_tokens;

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    s += double(b[i]) * b[i];
  }
  return std::sqrt(d / s);
}

std::unique_ptr<test::MemModel> model_of(const arch::ModelDesc& c, DType dt, uint64_t seed) {
  test::RandomSpec spec;
  spec.config = c;
  spec.dtype = dt;
  spec.seed = seed;
  return test::random_model(spec);
}

TEST(SparseGptCudaModel, LayerByLayerEqualsTheCpuAndObservesEveryLinear) {
  SKIP_WITHOUT_GPU();
  for (const arch::ModelDesc& cfg : {test::tiny_llama_config(), test::tiny_gpt2_config()}) {
    auto m = model_of(cfg, DType::F32, 3);
    const auto& c = m->config();
    const auto tokens = some_tokens(40, c.vocab_size, 9);
    CpuEngine cpu(*m);
    KvCache cache = cpu.make_cache(40);
    std::vector<float> want = cpu.embed(tokens, cache);
    auto gpu = make_cuda_engine(*m);
    gpu->reset(40, 1);
    const size_t bytes = want.size() * 4;
    float* h = nullptr;
    ASSERT_EQ(cudaMalloc(&h, bytes), cudaSuccess);
    gpu->embed_rows(tokens, h);
    std::set<std::string> seen;
    gpu->set_input_observer([&](int64_t layer, const std::vector<std::string>& linears, const void*,
                                int64_t rows, int64_t, void*) {
      EXPECT_EQ(rows, 40);
      for (const auto& n : linears) {
        EXPECT_EQ(n.rfind(c.layer_prefix(layer), 0), 0u) << n;
        seen.insert(n);
      }
    });
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      cpu.run_layer(l, want, cache);
      gpu->run_layer(l, h, h, 40);
    }
    std::vector<float> got(want.size());
    ASSERT_EQ(cudaMemcpy(got.data(), h, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
    cudaFree(h);
    EXPECT_LT(rel_l2(got, want), 1e-4) << arch::summary(c);
    EXPECT_EQ(seen.size(), size_t(c.num_hidden_layers) * c.layer_linears().size());
    for (int64_t l = 0; l < c.num_hidden_layers; ++l)
      for (const auto& s : c.layer_linears()) EXPECT_TRUE(seen.count(c.layer_prefix(l) + s)) << s;
    EXPECT_EQ(gpu->length(), 0);
  }
}

TEST(SparseGptCudaModel, ReplaceWeightChangesOnlyWhatItNames) {
  SKIP_WITHOUT_GPU();
  auto m = model_of(test::tiny_llama_config(), DType::F16, 4);
  const auto& c = m->config();
  const auto tokens = some_tokens(12, c.vocab_size, 2);
  auto gpu = make_cuda_engine(*m);
  gpu->reset(16, 1);
  const auto before = gpu->forward(tokens);
  for (const std::string suffix : {c.names.k, c.names.up}) {
    const std::string name = c.layer_prefix(1) + suffix + ".weight";
    const Tensor& t = m->tensor(name);
    std::vector<uint8_t> zeros(size_t(t.numel()) * dtype_size(t.dtype), 0);
    gpu->replace_weight(name, zeros.data(), t.dtype);
    gpu->reset(16, 1);
    EXPECT_GT(rel_l2(gpu->forward(tokens), before), 1e-3) << name;
    gpu->replace_weight(name, t.data, t.dtype);
    gpu->reset(16, 1);
    EXPECT_EQ(gpu->forward(tokens), before) << name;
  }
  EXPECT_THROW(gpu->replace_weight("model.layers.0.nope.weight", nullptr, DType::F16), Error);
}

void compare_runs(const Model& m, std::span<const int32_t> tokens, double min_agree,
                  double err_tol) {
  SparseGptModelOptions opt;
  const auto cpu = sparsegpt_prune_model(m, tokens, opt);
  const auto gpu = sparsegpt_prune_model_cuda(m, tokens, opt, {}, 0);
  ASSERT_EQ(gpu.size(), cpu.size());
  for (const auto& [name, want] : cpu) {
    const PrunedWeight& got = gpu.at(name);
    ASSERT_EQ(got.shape, want.shape) << name;
    ASSERT_EQ(got.dtype, want.dtype) << name;
    const s24::MatrixView gv{got.values.data(), got.dtype, got.shape[0], got.shape[1]};
    EXPECT_FALSE(s24::find_violation(gv).has_value()) << name;
    size_t agree = 0, n = size_t(got.shape[0] * got.shape[1]);
    for (size_t i = 0; i < n; ++i)
      agree += (load_as_float(got.values.data(), got.dtype, i) != 0.0f) ==
               (load_as_float(want.values.data(), want.dtype, i) != 0.0f);
    EXPECT_GE(double(agree) / double(n), min_agree) << name;
    EXPECT_NEAR(got.relative_output_error, want.relative_output_error,
                err_tol * want.relative_output_error)
        << name;
  }
}

TEST(SparseGptCudaModel, Fp32EqualsTheCpuRun) {
  SKIP_WITHOUT_GPU();
  for (const arch::ModelDesc& cfg : {test::tiny_llama_config(), test::tiny_gpt2_config()}) {
    auto m = model_of(cfg, DType::F32, 5);
    SCOPED_TRACE(arch::summary(m->config()));
    compare_runs(*m, some_tokens(150, m->config().vocab_size, 3), 0.99, 0.05);
  }
}

TEST(SparseGptCudaModel, Fp16IsCloseToTheCpuRun) {
  SKIP_WITHOUT_GPU();
  auto m = model_of(test::tiny_llama_config(), DType::F16, 6);
  compare_runs(*m, some_tokens(150, m->config().vocab_size, 4), 0.9, 0.25);
}

}  // namespace
}  // namespace sf::model
