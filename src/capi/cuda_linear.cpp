// The C ABI's GPU linear layer (sf_cuda_*), in every build: the arguments are checked here and the
// work is the CUDA backend's (backend::CudaBackend::upload_linear). Without a CUDA backend, or
// without a usable GPU, each call that returns a status says why (SF_ERR_NO_DEVICE).
#include <cstring>
#include <memory>
#include <vector>

#include "backend/backends.hpp"
#include "capi/capi_internal.hpp"

struct sf_cuda_linear {
  std::unique_ptr<sf::backend::CudaLinear> w;  // [N, K] on one GPU, kernel layout
};

namespace {

using sf::DType;
using sf::Error;
using sf::Status;
using sf::capi::float_dtype;
using sf::capi::matrix_bytes;
using sf::capi::need;
using sf::capi::overlaps;
using sf::capi::reject;

// The CUDA backend, usable now, or Error(NoDevice) with the reason (no backend in this build, no
// GPU, a GPU without sparse tensor cores).
const sf::backend::CudaBackend& gpu() {
  const std::string why = sf::backend::cuda_unavailable_reason();
  if (!why.empty()) throw Error(Status::NoDevice, why);
  const auto& b = *sf::backend::cuda();
  if (const std::string k = b.sparse_kernels_unavailable_reason(); !k.empty())
    throw Error(Status::NoDevice, k);
  return b;
}

const sf::backend::CudaLinear& linear(const char* fn, const sf_cuda_linear* h) {
  need(fn, h, "the sf_cuda_linear handle");
  return *h->w;
}

DType gpu_weight_dtype(const char* fn, sf_dtype d) {
  const DType t = float_dtype(fn, "w", d);
  if (t == DType::F32)
    sf::fail(Status::UnsupportedShape,
             "{}: w has dtype F32; the GPU kernels take F16 or BF16 weights: convert it first "
             "(bf16 keeps fp32's range, fp16 three more bits of precision)",
             fn);
  return t;
}

sf_cuda_linear* upload(const char* fn, const sf::s24::Compressed& c, int device, void* stream) {
  auto h = std::make_unique<sf_cuda_linear>();
  h->w = gpu().upload_linear(fn, c, device, stream);
  return h.release();
}

}  // namespace

extern "C" {

SF_API sf_status sf_cuda_check(void) {
  return sf::capi::guard("sf_cuda_check", [] { (void)gpu(); });
}

SF_API sf_status sf_cuda_linear_create(const sf_sparse24* w, int device, void* stream,
                                       sf_cuda_linear** out) {
  static constexpr const char* fn = "sf_cuda_linear_create";
  if (out) *out = nullptr;
  return sf::capi::guard(fn, [&] {
    need(fn, out, "out");
    const auto& c = sf::capi::handle(fn, w).c;
    gpu_weight_dtype(fn, static_cast<sf_dtype>(c.dtype));
    *out = upload(fn, c, device, stream);
  });
}

SF_API sf_status sf_cuda_linear_create_dense(const void* w, sf_dtype dtype, int64_t rows,
                                             int64_t cols, int w_on_device, sf_prune_method method,
                                             const float* act_norms, int device, void* stream,
                                             sf_cuda_linear** out) {
  static constexpr const char* fn = "sf_cuda_linear_create_dense";
  if (out) *out = nullptr;
  return sf::capi::guard(fn, [&] {
    need(fn, out, "out");
    need(fn, w, "w");
    const DType t = gpu_weight_dtype(fn, dtype);
    const size_t bytes = matrix_bytes(fn, "w", rows, cols, t);
    if (w_on_device != 0 && w_on_device != 1)
      reject(fn, "w_on_device is {}; expected 0 (host memory) or 1 (device memory)", w_on_device);
    if (method != SF_PRUNE_MAGNITUDE && method != SF_PRUNE_WANDA)
      reject(fn, "method is {}; expected SF_PRUNE_MAGNITUDE (0) or SF_PRUNE_WANDA (1)",
             int(method));
    const auto& b = gpu();
    const int dev = b.resolve_device(fn, device);
    // Pruning and compression run on the host: one host copy of w, dropped on return.
    std::vector<uint8_t> host(bytes);
    if (w_on_device)
      b.download(fn, "w", host.data(), w, bytes, dev, stream);
    else
      std::memcpy(host.data(), w, bytes);
    const sf::s24::MatrixView view{host.data(), t, rows, cols};
    const auto mask = sf::capi::prune_mask(fn, view, method, act_norms);
    sf::s24::apply_mask(host.data(), t, rows, cols, mask);
    const auto c = sf::s24::compress(view);
    *out = upload(fn, c, dev, stream);
  });
}

SF_API void sf_cuda_linear_free(sf_cuda_linear* h) {
  delete h;  // the backend's destructor frees the device memory
}

SF_API sf_status sf_cuda_linear_info(const sf_cuda_linear* h, int64_t* rows, int64_t* cols,
                                     sf_dtype* dtype, int* device, size_t* device_bytes) {
  static constexpr const char* fn = "sf_cuda_linear_info";
  return sf::capi::guard(fn, [&] {
    const auto& l = linear(fn, h);
    if (rows) *rows = l.rows();
    if (cols) *cols = l.cols();
    if (dtype) *dtype = static_cast<sf_dtype>(l.dtype());
    if (device) *device = l.device();
    if (device_bytes) *device_bytes = l.device_bytes();
  });
}

SF_API sf_status sf_cuda_linear_forward(const sf_cuda_linear* h, const void* x, sf_dtype x_dtype,
                                        int64_t m, void* y, sf_dtype y_dtype, const void* bias,
                                        sf_dtype bias_dtype, sf_activation act,
                                        const void* residual, sf_dtype residual_dtype,
                                        void* stream) {
  static constexpr const char* fn = "sf_cuda_linear_forward";
  return sf::capi::guard(fn, [&] {
    const auto& l = linear(fn, h);
    need(fn, x, "x");
    need(fn, y, "y");
    if (m < 0) reject(fn, "m is {}; expected the number of rows of x (>= 0)", m);
    const DType xt = float_dtype(fn, "x", x_dtype), yt = float_dtype(fn, "y", y_dtype);
    if (xt != l.dtype())
      reject(fn,
             "x has dtype {}, but the weight is {}; convert x to {} (the kernels multiply in "
             "the weight's type)",
             sf::dtype_name(xt), sf::dtype_name(l.dtype()), sf::dtype_name(l.dtype()));
    const size_t x_bytes = matrix_bytes(fn, "x", m, l.cols(), xt);
    const size_t y_bytes = matrix_bytes(fn, "y", m, l.rows(), yt);
    if (act < SF_ACT_NONE || act > SF_ACT_SILU)
      reject(fn, "act is {}; expected an sf_activation value (0 to 3)", int(act));
    sf::backend::LinearEpilogue ep;
    ep.act = static_cast<sf::s24::Activation>(act);
    if (bias) {
      ep.bias = bias;
      ep.bias_dtype = float_dtype(fn, "bias", bias_dtype);
    }
    if (residual) {
      ep.residual = residual;
      ep.residual_dtype = float_dtype(fn, "residual", residual_dtype);
      const size_t r_bytes = matrix_bytes(fn, "residual", m, l.rows(), ep.residual_dtype);
      if (overlaps(y, y_bytes, residual, r_bytes))
        reject(fn, "y overlaps residual; write y to a separate buffer");
    }
    if (overlaps(x, x_bytes, y, y_bytes)) reject(fn, "y overlaps x; write y to a separate buffer");
    if (m == 0) return;
    l.forward(fn, x, m, y, yt, ep, stream);
  });
}

SF_API sf_status sf_cuda_linear_decompress(const sf_cuda_linear* h, void* out, void* stream) {
  static constexpr const char* fn = "sf_cuda_linear_decompress";
  return sf::capi::guard(fn, [&] {
    const auto& l = linear(fn, h);
    need(fn, out, "out");
    l.decompress(fn, out, stream);
  });
}

SF_API void sf_cuda_release_workspaces(void) {
  if (const auto* b = sf::backend::cuda()) b->release_linear_workspaces();
}

}  // extern "C"
