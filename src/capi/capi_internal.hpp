// What the C ABI's source files share: the handle types behind the opaque pointers and the
// argument checks, each of which throws Error(InvalidArgument) "<fn>: <what was found>" that
// guard() turns into a status and sf_last_error().
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "capi/error_state.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "sparse24/sparse24.hpp"
#include "sparseflow/sparseflow.h"

struct sf_sparse24 {
  sf::s24::Compressed c;
};

namespace sf::capi {

inline constexpr int kDTypeCount = 10;

inline std::string dtype_label(sf_dtype d) {
  const int v = static_cast<int>(d);
  if (v < 0 || v >= kDTypeCount) return fmt::format("{} (not an sf_dtype value)", v);
  return std::string(sf::dtype_name(static_cast<DType>(v)));
}

// The 2:4 code takes the three float types that weights and activations come in.
inline DType float_dtype(const char* fn, const char* what, sf_dtype d) {
  if (d != SF_DTYPE_F32 && d != SF_DTYPE_F16 && d != SF_DTYPE_BF16)
    reject(fn, "{} has dtype {}; expected F32, F16 or BF16 (convert it first)", what,
           dtype_label(d));
  return static_cast<DType>(d);
}

inline void need(const char* fn, const void* p, const char* what) {
  if (!p) reject(fn, "{} is NULL", what);
}

// Bytes of a [rows, cols] matrix of dtype, checked so that no later size computation overflows.
inline size_t matrix_bytes(const char* fn, const char* what, int64_t rows, int64_t cols,
                           DType dtype) {
  if (rows < 0 || cols < 0)
    reject(fn, "{} has shape [{}, {}]; sizes must not be negative", what, rows, cols);
  int64_t elems = 0, bytes = 0;
  if (__builtin_mul_overflow(rows, cols, &elems) ||
      __builtin_mul_overflow(elems, int64_t(sf::dtype_size(dtype)), &bytes) ||
      bytes > PTRDIFF_MAX / 2)
    reject(fn, "{} has shape [{}, {}], too large to address", what, rows, cols);
  return size_t(bytes);
}

inline bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return a_bytes && b_bytes && pa < pb + b_bytes && pb < pa + a_bytes;
}

inline const sf_sparse24& handle(const char* fn, const sf_sparse24* h) {
  need(fn, h, "the sf_sparse24 handle");
  return *h;
}

// The keep-mask of sf_prune_24's `method` for w (1 = kept), checking method and act_norms.
inline std::vector<uint8_t> prune_mask(const char* fn, const s24::MatrixView& w,
                                       sf_prune_method method, const float* act_norms) {
  if (method == SF_PRUNE_MAGNITUDE) return s24::magnitude_mask(w);
  if (method == SF_PRUNE_WANDA) {
    if (!act_norms)
      reject(fn,
             "SF_PRUNE_WANDA needs act_norms ({} per-input-channel norms), got NULL; use "
             "SF_PRUNE_MAGNITUDE to prune without activation statistics",
             w.cols);
    return s24::wanda_mask(w, std::span<const float>(act_norms, size_t(w.cols)));
  }
  reject(fn, "method is {}; expected SF_PRUNE_MAGNITUDE (0) or SF_PRUNE_WANDA (1)", int(method));
}

}  // namespace sf::capi
