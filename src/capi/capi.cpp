// The C ABI (include/sparseflow/sparseflow.h) over the C++ engine. Each function checks its
// arguments, calls into sf::, and lets guard() turn exceptions into a status and a message.
#include <cstdint>
#include <cstring>

#include "backend/backends.hpp"
#include "capi/capi_internal.hpp"
#include "capi/error_state.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "sparse24/sparse24.hpp"
#include "sparseflow/sparseflow.h"

// ---- the ABI mirrors the engine's enums value for value ---------------------------------------
static_assert(SF_OK == int(sf::Status::Ok));
static_assert(SF_ERR_INVALID_ARGUMENT == int(sf::Status::InvalidArgument));
static_assert(SF_ERR_UNSUPPORTED_SHAPE == int(sf::Status::UnsupportedShape));
static_assert(SF_ERR_IO == int(sf::Status::Io));
static_assert(SF_ERR_FORMAT == int(sf::Status::Format));
static_assert(SF_ERR_OUT_OF_MEMORY == int(sf::Status::OutOfMemory));
static_assert(SF_ERR_CUDA == int(sf::Status::Cuda));
static_assert(SF_ERR_NO_DEVICE == int(sf::Status::NoDevice));
static_assert(SF_ERR_NOT_FOUND == int(sf::Status::NotFound));
static_assert(SF_ERR_INTERNAL == int(sf::Status::Internal));
static_assert(SF_DTYPE_F32 == int(sf::DType::F32) && SF_DTYPE_F16 == int(sf::DType::F16) &&
              SF_DTYPE_BF16 == int(sf::DType::BF16) && SF_DTYPE_F64 == int(sf::DType::F64) &&
              SF_DTYPE_I8 == int(sf::DType::I8) && SF_DTYPE_U8 == int(sf::DType::U8) &&
              SF_DTYPE_I16 == int(sf::DType::I16) && SF_DTYPE_I32 == int(sf::DType::I32) &&
              SF_DTYPE_I64 == int(sf::DType::I64) && SF_DTYPE_BOOL == int(sf::DType::BOOL));
static_assert(SF_ACT_NONE == int(sf::s24::Activation::None) &&
              SF_ACT_RELU == int(sf::s24::Activation::ReLU) &&
              SF_ACT_GELU == int(sf::s24::Activation::GELU) &&
              SF_ACT_SILU == int(sf::s24::Activation::SiLU));
// The header's version macros must follow project(VERSION) in CMakeLists.txt.
static_assert(SF_VERSION_MAJOR == SF_PROJECT_VERSION_MAJOR &&
                  SF_VERSION_MINOR == SF_PROJECT_VERSION_MINOR &&
                  SF_VERSION_PATCH == SF_PROJECT_VERSION_PATCH,
              "update SF_VERSION_* in include/sparseflow/sparseflow.h to the project version");

namespace {

using sf::DType;
using sf::capi::float_dtype;
using sf::capi::handle;
using sf::capi::matrix_bytes;
using sf::capi::need;
using sf::capi::overlaps;
using sf::capi::reject;

}  // namespace

extern "C" {

SF_API const char* sf_status_string(sf_status status) {
  const int v = static_cast<int>(status);
  if (v < SF_OK || v > SF_ERR_INTERNAL) return "unknown status";
  return sf::status_name(static_cast<sf::Status>(v));
}

SF_API const char* sf_last_error(void) {
  return sf::capi::last_error();
}

SF_API int sf_version(void) {
  return SF_VERSION;
}

SF_API const char* sf_version_string(void) {
  return SPARSEFLOW_VERSION_STRING;
}

SF_API const char* sf_backends(void) {
  static const std::string names = [] {
    std::string out;
    for (const auto& b : sf::backend::backends())
      if (b.compiled) out += (out.empty() ? "" : ",") + b.name;
    return out;
  }();
  return names.c_str();
}

SF_API sf_status sf_backend_check(const char* name) {
  static constexpr const char* fn = "sf_backend_check";
  return sf::capi::guard(fn, [&] {
    sf::capi::need(fn, name, "name");
    const auto b = sf::backend::find_backend(name);
    if (!b) sf::capi::reject(fn, "no backend is called '{}'; expected cpu or cuda", name);
    if (!b->unavailable.empty()) throw sf::Error(sf::Status::NoDevice, b->unavailable);
  });
}

SF_API sf_status sf_prune_24(const void* w, sf_dtype dtype, int64_t rows, int64_t cols,
                             sf_prune_method method, const float* act_norms, void* out) {
  static constexpr const char* fn = "sf_prune_24";
  return sf::capi::guard(fn, [&] {
    need(fn, w, "w");
    need(fn, out, "out");
    const DType t = float_dtype(fn, "w", dtype);
    const size_t bytes = matrix_bytes(fn, "w", rows, cols, t);
    if (out != w && overlaps(w, bytes, out, bytes))
      reject(fn, "out overlaps w without being equal to it; pass out == w to prune in place");
    const sf::s24::MatrixView view{w, t, rows, cols};
    const auto mask = sf::capi::prune_mask(fn, view, method, act_norms);
    // The mask is computed before out is written, so out == w works.
    if (out != w) std::memcpy(out, w, bytes);
    sf::s24::apply_mask(out, t, rows, cols, mask);
  });
}

SF_API sf_status sf_check_24(const void* w, sf_dtype dtype, int64_t rows, int64_t cols, int* is_24,
                             int64_t* first_row, int64_t* first_group) {
  static constexpr const char* fn = "sf_check_24";
  return sf::capi::guard(fn, [&] {
    need(fn, w, "w");
    need(fn, is_24, "is_24");
    const DType t = float_dtype(fn, "w", dtype);
    matrix_bytes(fn, "w", rows, cols, t);
    const auto v = sf::s24::find_violation({w, t, rows, cols});
    *is_24 = v ? 0 : 1;
    if (first_row) *first_row = v ? v->row : -1;
    if (first_group) *first_group = v ? v->group : -1;
  });
}

SF_API sf_status sf_sparse24_compress(const void* w, sf_dtype dtype, int64_t rows, int64_t cols,
                                      sf_sparse24** out) {
  static constexpr const char* fn = "sf_sparse24_compress";
  if (out) *out = nullptr;
  return sf::capi::guard(fn, [&] {
    need(fn, out, "out");
    need(fn, w, "w");
    const DType t = float_dtype(fn, "w", dtype);
    matrix_bytes(fn, "w", rows, cols, t);
    *out = new sf_sparse24{sf::s24::compress({w, t, rows, cols})};
  });
}

SF_API void sf_sparse24_free(sf_sparse24* h) {
  delete h;
}

SF_API sf_status sf_sparse24_shape(const sf_sparse24* h, int64_t* rows, int64_t* cols) {
  static constexpr const char* fn = "sf_sparse24_shape";
  return sf::capi::guard(fn, [&] {
    const auto& c = handle(fn, h).c;
    if (rows) *rows = c.rows;
    if (cols) *cols = c.cols;
  });
}

SF_API sf_status sf_sparse24_padded_shape(const sf_sparse24* h, int64_t* rows_padded,
                                          int64_t* cols_padded) {
  static constexpr const char* fn = "sf_sparse24_padded_shape";
  return sf::capi::guard(fn, [&] {
    const auto& c = handle(fn, h).c;
    if (rows_padded) *rows_padded = c.rows_padded;
    if (cols_padded) *cols_padded = c.cols_padded;
  });
}

SF_API sf_status sf_sparse24_dtype(const sf_sparse24* h, sf_dtype* dtype) {
  static constexpr const char* fn = "sf_sparse24_dtype";
  return sf::capi::guard(fn, [&] {
    const auto& c = handle(fn, h).c;
    need(fn, dtype, "dtype");
    *dtype = static_cast<sf_dtype>(c.dtype);
  });
}

SF_API sf_status sf_sparse24_compressed_bytes(const sf_sparse24* h, size_t* bytes) {
  static constexpr const char* fn = "sf_sparse24_compressed_bytes";
  return sf::capi::guard(fn, [&] {
    const auto& c = handle(fn, h).c;
    need(fn, bytes, "bytes");
    *bytes = c.compressed_bytes();
  });
}

SF_API sf_status sf_sparse24_values(const sf_sparse24* h, const void** data, size_t* bytes) {
  static constexpr const char* fn = "sf_sparse24_values";
  return sf::capi::guard(fn, [&] {
    const auto& c = handle(fn, h).c;
    if (data) *data = c.values.data();
    if (bytes) *bytes = c.value_bytes();
  });
}

SF_API sf_status sf_sparse24_meta(const sf_sparse24* h, const uint32_t** data, size_t* bytes) {
  static constexpr const char* fn = "sf_sparse24_meta";
  return sf::capi::guard(fn, [&] {
    const auto& c = handle(fn, h).c;
    if (data) *data = c.meta.data();
    if (bytes) *bytes = c.meta_bytes();
  });
}

SF_API sf_status sf_sparse24_decompress(const sf_sparse24* h, void* out) {
  static constexpr const char* fn = "sf_sparse24_decompress";
  return sf::capi::guard(fn, [&] {
    const auto& c = handle(fn, h).c;
    need(fn, out, "out");
    sf::s24::decompress(c, out);
  });
}

SF_API sf_status sf_sparse24_gemm_cpu(const sf_sparse24* h, const void* x, sf_dtype x_dtype,
                                      int64_t m, void* y, sf_dtype y_dtype, const void* bias,
                                      sf_dtype bias_dtype, sf_activation act, const void* residual,
                                      sf_dtype residual_dtype) {
  static constexpr const char* fn = "sf_sparse24_gemm_cpu";
  return sf::capi::guard(fn, [&] {
    const auto& c = handle(fn, h).c;
    need(fn, x, "x");
    need(fn, y, "y");
    if (m < 0) reject(fn, "m is {}; expected the number of rows of x (>= 0)", m);
    const DType xt = float_dtype(fn, "x", x_dtype), yt = float_dtype(fn, "y", y_dtype);
    const size_t x_bytes = matrix_bytes(fn, "x", m, c.cols, xt);
    const size_t y_bytes = matrix_bytes(fn, "y", m, c.rows, yt);
    if (act < SF_ACT_NONE || act > SF_ACT_SILU)
      reject(fn, "act is {}; expected an sf_activation value (0 to 3)", int(act));
    sf::s24::Epilogue ep;
    ep.act = static_cast<sf::s24::Activation>(act);
    if (bias) {
      ep.bias = bias;
      ep.bias_dtype = float_dtype(fn, "bias", bias_dtype);
    }
    if (residual) {
      ep.residual = residual;
      ep.residual_dtype = float_dtype(fn, "residual", residual_dtype);
      const size_t r_bytes = matrix_bytes(fn, "residual", m, c.rows, ep.residual_dtype);
      if (overlaps(y, y_bytes, residual, r_bytes))
        reject(fn, "y overlaps residual; write y to a separate buffer");
    }
    if (overlaps(x, x_bytes, y, y_bytes)) reject(fn, "y overlaps x; write y to a separate buffer");
    if (m == 0) return;
    sf::s24::gemm_cpu(c, x, xt, m, y, yt, ep);
  });
}

}  // extern "C"
