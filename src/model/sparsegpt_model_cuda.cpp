// SparseGPT over a whole model on one GPU (sparsegpt_model.hpp): the sequential procedure of the
// CPU run, with every heavy step on the device. The calibration samples' residual streams stay in
// device memory between layers; per layer, one pass with layer l dense accumulates the Hessian of
// each distinct linear input (q/k/v share one, gate/up another) as x^T x products, then each linear
// is solved and its pruned weight written into the engine, then a second pass through the pruned
// layer gives the next layer its inputs.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <chrono>
#include <map>
#include <memory>

#include "core/error.hpp"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/sparsegpt_cuda.hpp"
#include "kernels/cuda/sparsegpt_kernels.hpp"
#include "model/cuda_engine.hpp"
#include "model/sparsegpt_model.hpp"

namespace sf::model {

namespace {

std::string gib(size_t b) {
  return fmt::format("{:.2f} GiB", double(b) / double(1ull << 30));
}

// Device memory freed when it goes out of scope, so that an error anywhere cleans up.
struct DeviceBuffer {
  void* p = nullptr;
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes, const char* what) {
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      cudaGetLastError();
      size_t fr = 0, tot = 0;
      cudaMemGetInfo(&fr, &tot);
      fail(Status::OutOfMemory,
           "SparseGPT on the GPU: {} needs {}, but only {} of {} is free.\n---> HINT: calibrate on "
           "fewer tokens (--calibration-tokens), or run with --device cpu.",
           what, gib(bytes), gib(fr), gib(tot));
    }
  }
  ~DeviceBuffer() {
    if (p) cudaFree(p);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p(o.p) { o.p = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(p, o.p);
    return *this;
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

cudaDataType cuda_type(DType t) {
  switch (t) {
    case DType::F16:
      return CUDA_R_16F;
    case DType::BF16:
      return CUDA_R_16BF;
    default:
      return CUDA_R_32F;
  }
}

// The fp32 sums x^T x of one linear input, and the linears that read it.
struct InputHessian {
  std::vector<std::string> linears;
  int64_t in = 0, rows = 0;
  DeviceBuffer xtx;  // [in, in] fp32
};

}  // namespace

std::map<std::string, PrunedWeight> sparsegpt_prune_model_cuda(const Model& src,
                                                               std::span<const int32_t> tokens,
                                                               const SparseGptModelOptions& opt,
                                                               const LayerProgress& progress,
                                                               int device) {
  check_sparsegpt_inputs(src, tokens, opt);
  const arch::ModelDesc& c = src.config();
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  CudaOptions co;
  co.device = device;
  co.use_graph = false;
  const std::unique_ptr<CudaEngine> engine = make_cuda_engine(src, co);
  if (engine->sparse())
    fail(Status::UnsupportedShape,
         "the model is already 2:4-compressed; SparseGPT prunes from the dense checkpoint");
  const auto windows = calibration_windows(c, tokens, opt.window);
  engine->reset(int64_t(windows[0].size()), 1);
  auto* stream = static_cast<cudaStream_t>(engine->stream_handle());
  const cudaDataType act = cuda_type(engine->activation_dtype());  // what the observer sees

  // Every sample's residual stream, [tokens, hidden] fp32, side by side.
  const int64_t H = c.hidden_size;
  DeviceBuffer hidden(tokens.size() * size_t(H) * 4, "the calibration activations");
  {
    int64_t row = 0;
    for (const auto& w : windows) {
      engine->embed_rows(w, hidden.as<float>() + row * H);
      row += int64_t(w.size());
    }
  }

  cublasHandle_t blas = nullptr;
  SF_CUBLAS_CHECK(cublasCreate(&blas));
  const std::unique_ptr<cublasContext, decltype(&cublasDestroy)> blas_owner(blas, cublasDestroy);
  SF_CUBLAS_CHECK(cublasSetStream(blas, stream));
  cuda::SparseGptSolver solver(stream);

  std::map<std::string, PrunedWeight> out;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    std::map<std::string, InputHessian> inputs;  // by the first linear reading the input
    engine->set_input_observer([&](int64_t layer, const std::vector<std::string>& linears,
                                   const void* x, int64_t rows, int64_t in, void* st) {
      if (layer != l) return;
      InputHessian& ih = inputs[linears.at(0)];
      if (!ih.xtx.p) {
        ih.linears = linears;
        ih.in = in;
        ih.xtx = DeviceBuffer(size_t(in * in) * 4, "a layer's input Hessian");
        SF_CUDA_CHECK(cudaMemsetAsync(ih.xtx.p, 0, size_t(in * in) * 4, cudaStream_t(st)));
      }
      // x row-major [rows, in] is column-major [in, rows]: xtx += x^T x, fp32 accumulation.
      const float one = 1.0f;
      SF_CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_N, CUBLAS_OP_T, int(in), int(in), int(rows),
                                   &one, x, act, int(in), x, act, int(in), &one, ih.xtx.p,
                                   CUDA_R_32F, int(in), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      ih.rows += rows;
    });
    {
      int64_t row = 0;
      for (const auto& w : windows) {
        engine->run_layer(l, hidden.as<float>() + row * H, nullptr, int64_t(w.size()));
        row += int64_t(w.size());
      }
    }
    engine->set_input_observer({});
    for (auto& [first, ih] : inputs) {
      DeviceBuffer h64(size_t(ih.in * ih.in) * 8, "a layer's fp64 Hessian");
      for (size_t i = 0; i < ih.linears.size(); ++i) {
        const std::string name = ih.linears[i] + ".weight";
        // The solver overwrites its Hessian: each linear gets a fresh copy.
        cuda::sgpt::launch_scale_to_f64(ih.xtx.as<float>(), ih.in * ih.in, 2.0 / double(ih.rows),
                                        h64.as<double>(), stream);
        const Tensor& t = src.tensor(name);
        if (t.shape.size() != 2 || t.shape[1] != ih.in)
          fail(Status::UnsupportedShape, "SparseGPT: {} is not a [out, {}] matrix", name, ih.in);
        s24::SparseGptResult r;
        try {
          r = solver.prune({t.data, t.dtype, t.shape[0], t.shape[1]}, h64.as<double>(), opt.solver);
        } catch (const Error& e) {
          fail(e.status(), "{}: {}", name, e.what());
        }
        PrunedWeight& p = out[name] = pruned_weight(r, t, opt.dtype);
        engine->replace_weight(name, p.values.data(), p.dtype);
      }
    }
    inputs.clear();
    {
      int64_t row = 0;
      for (const auto& w : windows) {
        float* hw = hidden.as<float>() + row * H;
        engine->run_layer(l, hw, hw, int64_t(w.size()));
        row += int64_t(w.size());
      }
    }
    SF_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (progress) progress(l + 1, c.num_hidden_layers, seconds());
  }
  return out;
}

}  // namespace sf::model
