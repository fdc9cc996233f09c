// A thin, header-only C++ layer over the C ABI (sparseflow.h): statuses become sparseflow::Error
// exceptions carrying the status and sf_last_error(), handles become move-only RAII objects.
// It adds no behaviour: every call is one C call.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "sparseflow/sparseflow.h"

namespace sparseflow {

class Error : public std::runtime_error {
 public:
  Error(sf_status status, const std::string& message)
      : std::runtime_error(message.empty() ? std::string(sf_status_string(status)) : message),
        status_(status) {}
  sf_status status() const noexcept { return status_; }

 private:
  sf_status status_;
};

// Throws Error(status, sf_last_error()) unless status is SF_OK.
inline void check(sf_status status) {
  if (status != SF_OK) throw Error(status, sf_last_error());
}

inline std::string version() {
  return sf_version_string();
}

// Prune w [rows, cols] to 2:4 into out (out may equal w). act_norms: cols floats, only for wanda.
inline void prune_24(const void* w, sf_dtype dtype, int64_t rows, int64_t cols, void* out,
                     sf_prune_method method = SF_PRUNE_MAGNITUDE,
                     const float* act_norms = nullptr) {
  check(sf_prune_24(w, dtype, rows, cols, method, act_norms, out));
}

struct Check24 {
  bool is_24 = false;
  int64_t first_row = -1, first_group = -1;  // the first violation; -1 when is_24
};

inline Check24 check_24(const void* w, sf_dtype dtype, int64_t rows, int64_t cols) {
  int ok = 0;
  Check24 r;
  check(sf_check_24(w, dtype, rows, cols, &ok, &r.first_row, &r.first_group));
  r.is_24 = ok != 0;
  return r;
}

// Optional parts of y = act(x W^T + bias) + residual.
struct Epilogue {
  const void* bias = nullptr;
  sf_dtype bias_dtype = SF_DTYPE_F32;
  sf_activation act = SF_ACT_NONE;
  const void* residual = nullptr;
  sf_dtype residual_dtype = SF_DTYPE_F32;
};

// A compressed 2:4 matrix; owns its sf_sparse24 handle.
class Sparse24 {
 public:
  static Sparse24 compress(const void* w, sf_dtype dtype, int64_t rows, int64_t cols) {
    sf_sparse24* h = nullptr;
    check(sf_sparse24_compress(w, dtype, rows, cols, &h));
    return Sparse24(h);
  }

  Sparse24(Sparse24&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Sparse24& operator=(Sparse24&& o) noexcept {
    if (this != &o) {
      sf_sparse24_free(h_);
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  Sparse24(const Sparse24&) = delete;
  Sparse24& operator=(const Sparse24&) = delete;
  ~Sparse24() { sf_sparse24_free(h_); }

  sf_sparse24* get() const noexcept { return h_; }

  int64_t rows() const { return shape().first; }
  int64_t cols() const { return shape().second; }
  std::pair<int64_t, int64_t> shape() const {
    int64_t r = 0, c = 0;
    check(sf_sparse24_shape(h_, &r, &c));
    return {r, c};
  }
  std::pair<int64_t, int64_t> padded_shape() const {
    int64_t r = 0, c = 0;
    check(sf_sparse24_padded_shape(h_, &r, &c));
    return {r, c};
  }
  sf_dtype dtype() const {
    sf_dtype t = SF_DTYPE_F32;
    check(sf_sparse24_dtype(h_, &t));
    return t;
  }
  size_t compressed_bytes() const {
    size_t n = 0;
    check(sf_sparse24_compressed_bytes(h_, &n));
    return n;
  }
  std::pair<const void*, size_t> values() const {
    const void* p = nullptr;
    size_t n = 0;
    check(sf_sparse24_values(h_, &p, &n));
    return {p, n};
  }
  std::pair<const uint32_t*, size_t> meta() const {
    const uint32_t* p = nullptr;
    size_t n = 0;
    check(sf_sparse24_meta(h_, &p, &n));
    return {p, n};
  }

  void decompress(void* out) const { check(sf_sparse24_decompress(h_, out)); }

  // y[m, rows()] = act(x[m, cols()] W^T + bias) + residual on the CPU.
  void gemm_cpu(const void* x, sf_dtype x_dtype, int64_t m, void* y, sf_dtype y_dtype,
                const Epilogue& ep = {}) const {
    check(sf_sparse24_gemm_cpu(h_, x, x_dtype, m, y, y_dtype, ep.bias, ep.bias_dtype, ep.act,
                               ep.residual, ep.residual_dtype));
  }

 private:
  explicit Sparse24(sf_sparse24* h) noexcept : h_(h) {}
  sf_sparse24* h_ = nullptr;
};

}  // namespace sparseflow
