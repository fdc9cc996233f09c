// `sparseflow calibrate --device cuda`: the (attention input, fc1 pre-activation) pairs predictors
// are fitted on, collected by the GPU engine's own prefill instead of the CPU backend's forward
// pass (OPT-6.7B: 20 s for 192 tokens on 16 CPU threads; the fit needs thousands of tokens, several
// per hidden dimension, to generalise: bench/results/2026-12-03-cpu-predictor-quality-opt-125m.md).
//
// CudaEngine runs the model with every layer's FFN handed to the collector (an FfnProvider). Per
// layer and window, the collector uploads the layer's neuron bundles (one device buffer, reused:
// any model size fits), computes z = x W1^T + b1 with cuBLAS straight from the bundles (fc1 rows at
// stride bytes apart), copies z and the attention input to host memory, and finishes the FFN like
// the resident engine: relu(z) W2^T + b2 + residual, fc2 columns read from the same bundles.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/progress.hpp"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/decode_kernels.hpp"
#include "model/cuda_engine.hpp"
#include "model/weights.hpp"
#include "offload/neuron_store.hpp"
#include "offload/predictor_fit.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::offload {

namespace {

cudaDataType cuda_type(DType t) {
  return t == DType::F32 ? CUDA_R_32F : t == DType::F16 ? CUDA_R_16F : CUDA_R_16BF;
}

class Collector final : public model::FfnProvider {
 public:
  Collector(const NeuronStore& store, CollectedActivations& col, DType act)
      : store_(store), col_(col), act_(act) {
    const NeuronLayer& L0 = store_.layer(col_.layers.front());
    if (L0.layout.dtype != act_)
      fail(Status::UnsupportedShape,
           "calibrate --device cuda: the FFN is stored as {} but the engine computes in {}; "
           "calibrate with --device cpu",
           dtype_name(L0.layout.dtype), dtype_name(act_));
    const int64_t d = col_.hidden, F = col_.ffn;
    esize_ = dtype_size(act_);
    SF_CUDA_CHECK(cudaMalloc(&bundles_, L0.bytes()));
    bundle_bytes_ = L0.bytes();
    SF_CUDA_CHECK(cudaMalloc(&b1_, size_t(F) * 4));
    SF_CUDA_CHECK(cudaMalloc(&b2_, size_t(d) * 4));
    SF_CUBLAS_CHECK(cublasCreate(&cublas_));
    owned_.assign(size_t(store_.layers()), false);
    for (int64_t l : col_.layers) owned_[size_t(l)] = true;
    rows_done_.assign(size_t(store_.layers()), 0);
    a_rows_done_.assign(size_t(store_.layers()), 0);
  }
  ~Collector() override {
    for (void* p : {static_cast<void*>(bundles_), static_cast<void*>(b1_), static_cast<void*>(b2_),
                    static_cast<void*>(z_), static_cast<void*>(ff_), static_cast<void*>(acc_)})
      if (p) cudaFree(p);
    if (cublas_) cublasDestroy(cublas_);
  }
  Collector(const Collector&) = delete;
  Collector& operator=(const Collector&) = delete;

  // Every layer is owned, collected or not: a neuron-major file has no fc1/fc2 for the engine.
  bool owns_ffn(int64_t) const override { return true; }
  void before_attention(int64_t, const void*, int64_t, void*) override {}

  void prefill_attention_input(int64_t layer, const void* x, int64_t rows, void* stream) override {
    if (!owned_[size_t(layer)] || col_.a[size_t(layer)].empty()) return;  // a not asked for
    const int64_t d = col_.hidden, t0 = a_rows_done_[size_t(layer)];
    if (t0 + rows > col_.tokens)
      fail(Status::Internal, "calibration collected more rows than tokens");
    host_act_.resize(size_t(rows * d) * esize_);
    auto s = static_cast<cudaStream_t>(stream);
    SF_CUDA_CHECK(
        cudaMemcpyAsync(host_act_.data(), x, host_act_.size(), cudaMemcpyDeviceToHost, s));
    SF_CUDA_CHECK(cudaStreamSynchronize(s));
    float* dst = col_.a[size_t(layer)].data() + t0 * d;
    for (int64_t i = 0; i < rows * d; ++i)
      dst[i] = load_as_float(host_act_.data(), act_, size_t(i));
    a_rows_done_[size_t(layer)] = t0 + rows;
  }

  void ffn(int64_t layer, const void* x, int64_t rows, const float* residual, float* out,
           bool /*decode*/, void* stream) override {
    auto s = static_cast<cudaStream_t>(stream);
    const int64_t d = col_.hidden, F = col_.ffn;
    const NeuronLayer& L = store_.layer(layer);
    if (L.bytes() > bundle_bytes_ || L.ffn != F)
      fail(Status::Format, "layer {}: its FFN differs from layer {}'s", layer, col_.layers.front());
    reserve(rows);
    // This layer's bundles and biases (the previous layer's work on the stream is done: the copies
    // below are ordered after it by the synchronisation at the end of ffn()).
    SF_CUDA_CHECK(cudaMemcpyAsync(bundles_, L.bundles, L.bytes(), cudaMemcpyHostToDevice, s));
    std::vector<float> b1(static_cast<size_t>(F)), b2(static_cast<size_t>(d), 0.0f);
    for (int64_t j = 0; j < F; ++j) b1[size_t(j)] = L.fc1_bias(j);
    if (L.fc2_bias)
      for (int64_t i = 0; i < d; ++i)
        b2[size_t(i)] = load_as_float(L.fc2_bias, L.layout.dtype, size_t(i));
    SF_CUDA_CHECK(cudaMemcpyAsync(b1_, b1.data(), b1.size() * 4, cudaMemcpyHostToDevice, s));
    SF_CUDA_CHECK(cudaMemcpyAsync(b2_, b2.data(), b2.size() * 4, cudaMemcpyHostToDevice, s));

    // z^T [F, rows] (column-major) = W1 x^T: W1's rows are the bundles' first d elements, stride
    // apart.
    SF_CUBLAS_CHECK(cublasSetStream(cublas_, s));
    const float one = 1.0f, zero = 0.0f;
    const int lda = int(L.layout.stride / uint64_t(esize_));
    const auto* w = static_cast<const uint8_t*>(bundles_);
    SF_CUBLAS_CHECK(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, int(F), int(rows), int(d), &one,
                                 w + L.layout.fc1_offset, cuda_type(act_), lda, x, cuda_type(act_),
                                 int(d), &zero, acc_, CUDA_R_32F, int(F), CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
    sf::cuda::EpilogueParams pre;  // z = acc + b1 (fp32), what the predictor is fitted to
    pre.bias = b1_;
    pre.y = z_;
    pre.ldy = F;
    sf::cuda::launch_epilogue(acc_, rows, F, pre, s);
    sf::cuda::EpilogueParams act = pre;  // relu(acc + b1) in the activation type, fc2's input
    act.y = ff_;
    act.y_dt = int(act_);
    act.act = int(s24::Activation::ReLU);
    sf::cuda::launch_epilogue(acc_, rows, F, act, s);
    // out^T [d, rows] = W2 ff^T + b2 + residual: W2 [d, F] column-major = the bundles' fc2 columns.
    SF_CUBLAS_CHECK(cublasGemmEx(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, int(d), int(rows), int(F), &one,
                                 w + L.layout.fc2_offset, cuda_type(act_), lda, ff_,
                                 cuda_type(act_), int(F), &zero, acc_, CUDA_R_32F, int(d),
                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    sf::cuda::EpilogueParams post;
    post.bias = b2_;
    post.residual = residual;
    post.y = out;
    post.ldy = d;
    sf::cuda::launch_epilogue(acc_, rows, d, post, s);
    if (owned_[size_t(layer)]) {
      const int64_t t0 = rows_done_[size_t(layer)];
      if (t0 + rows > col_.tokens)
        fail(Status::Internal, "calibration collected more rows than tokens");
      SF_CUDA_CHECK(cudaMemcpyAsync(col_.z[size_t(layer)].data() + t0 * F, z_, size_t(rows * F) * 4,
                                    cudaMemcpyDeviceToHost, s));
      rows_done_[size_t(layer)] = t0 + rows;
    }
    SF_CUDA_CHECK(cudaStreamSynchronize(s));  // b1/b2 host vectors and the bundle buffer are reused
  }

  // Rows collected per layer: every collected layer must have seen `tokens` rows of a and z.
  void check_complete(int64_t tokens) const {
    for (int64_t l : col_.layers)
      if (rows_done_[size_t(l)] != tokens || (!col_.a[size_t(l)].empty() && a_rows_done_[size_t(l)] != tokens))
        fail(Status::Internal, "calibration: layer {} collected {} / {} rows of {} tokens", l,
             a_rows_done_[size_t(l)], rows_done_[size_t(l)], tokens);
  }

 private:
  void reserve(int64_t rows) {
    if (rows <= rows_cap_) return;
    for (void* p : {static_cast<void*>(z_), static_cast<void*>(ff_), static_cast<void*>(acc_)})
      if (p) cudaFree(p);
    const int64_t d = col_.hidden, F = col_.ffn;
    SF_CUDA_CHECK(cudaMalloc(&z_, size_t(rows * F) * 4));
    SF_CUDA_CHECK(cudaMalloc(&ff_, size_t(rows * F) * esize_));
    SF_CUDA_CHECK(cudaMalloc(&acc_, size_t(rows * std::max(F, d)) * 4));
    rows_cap_ = rows;
  }

  const NeuronStore& store_;
  CollectedActivations& col_;
  DType act_;
  size_t esize_ = 2;
  void* bundles_ = nullptr;
  uint64_t bundle_bytes_ = 0;
  float *b1_ = nullptr, *b2_ = nullptr, *z_ = nullptr, *acc_ = nullptr;
  void* ff_ = nullptr;
  int64_t rows_cap_ = 0;
  cublasHandle_t cublas_ = nullptr;
  std::vector<bool> owned_;
  std::vector<int64_t> rows_done_, a_rows_done_;
  std::vector<uint8_t> host_act_;
};

}  // namespace

CollectedActivations collect_activations_cuda(const model::Model& model,
                                              std::span<const int32_t> tokens,
                                              const PredictorFitOptions& opt, int device) {
  if (const std::string why = model::cuda_unavailable_reason(); !why.empty())
    fail(Status::NoDevice, "collecting activations on the GPU (--device cuda): {}", why);
  const auto& c = model.config();
  const int64_t window =
      opt.window > 0 ? std::min(opt.window, c.max_position_embeddings) : c.max_position_embeddings;
  int64_t T = int64_t(tokens.size());
  if (T % window == 1) --T;  // a one-token window would be a decode step (a CUDA graph): dropped
  CollectedActivations col;
  col.hidden = c.hidden_size;
  col.ffn = c.ffn_dim;
  col.tokens = T;
  col.window = window;
  col.layers = calibration_layers(opt.layers, c.num_hidden_layers);
  col.a.resize(size_t(c.num_hidden_layers));
  col.z.resize(size_t(c.num_hidden_layers));
  for (int64_t l : col.layers) {
    if (opt.attention_inputs) col.a[size_t(l)].resize(size_t(T * col.hidden));
    col.z[size_t(l)].resize(size_t(T * col.ffn));
  }
  const NeuronStore store = NeuronStore::from_model(model);
  model::CudaOptions o;
  o.device = device;
  const DType act = model.dtype();
  Collector collector(store, col, act);
  o.ffn_provider = &collector;
  const auto engine = model::make_cuda_engine(model, o);
  model::CudaEngine& gpu = *engine;
  const auto t0 = std::chrono::steady_clock::now();
  Progress bar("forward passes", double(T), "tokens");
  for (int64_t start = 0; start < T; start += window) {
    const int64_t len = std::min(T - start, window);
    gpu.reset(window);
    (void)gpu.forward(tokens.subspan(size_t(start), size_t(len)));
    bar.update(double(start + len));
  }
  bar.finish();
  collector.check_complete(T);
  col.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return col;
}

}  // namespace sf::offload
