// A thin, header-only C++ layer over the C ABI (sparseflow.h): statuses become sparseflow::Error
// exceptions carrying the status and sf_last_error(), handles become move-only RAII objects.
// It adds no behaviour: every call is one C call.
#pragma once
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

// Writes the built-in default model (a tiny random-weight OPT) to `path`; see sf_synth_builtin.
inline void synth_builtin(const std::string& path, bool force = false) {
  check(sf_synth_builtin(path.c_str(), force ? 1 : 0));
}

// A model session (sf_session_*). Results are the C ABI's JSON text, for any JSON library.
class Session {
 public:
  // Called per new token with the UTF-8 text it completes; return false to stop.
  using TokenCallback = std::function<bool(int32_t token, std::string_view text)>;

  explicit Session(const std::string& path, const sf_session_options* options = nullptr) {
    check(sf_session_open(path.c_str(), options, &h_));
  }
  Session(Session&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Session& operator=(Session&& o) noexcept {
    if (this != &o) {
      sf_session_free(h_);
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session() { sf_session_free(h_); }

  sf_session* get() const noexcept { return h_; }

  std::string info_json() const {
    const char* j = nullptr;
    check(sf_session_info_json(h_, &j));
    return j;
  }
  // The result JSON (text, ids, prompt_ids, timing, stopped_by). An exception thrown by
  // on_token stops the generation and is rethrown here.
  std::string generate(const std::string& prompt, const sf_generate_params* params = nullptr,
                       const TokenCallback& on_token = {}) {
    return run(on_token, [&](sf_token_callback cb, void* user, const char** j) {
      return sf_session_generate(h_, prompt.c_str(), params, cb, user, j);
    });
  }
  std::string generate_ids(const std::vector<int32_t>& ids,
                           const sf_generate_params* params = nullptr,
                           const TokenCallback& on_token = {}) {
    return run(on_token, [&](sf_token_callback cb, void* user, const char** j) {
      return sf_session_generate_ids(h_, ids.data(), ids.size(), params, cb, user, j);
    });
  }
  double perplexity(const std::string& text, int64_t context = 0) {
    double p = 0;
    check(sf_session_perplexity(h_, text.c_str(), context, &p));
    return p;
  }
  double perplexity(const std::vector<int32_t>& ids, int64_t context = 0) {
    double p = 0;
    check(sf_session_perplexity_ids(h_, ids.data(), ids.size(), context, &p));
    return p;
  }
  std::vector<int32_t> tokenize(const std::string& text, bool add_bos = true) {
    size_t n = 0;
    check(sf_session_tokenize(h_, text.c_str(), add_bos ? 1 : 0, nullptr, 0, &n));
    std::vector<int32_t> ids(n);
    check(sf_session_tokenize(h_, text.c_str(), add_bos ? 1 : 0, ids.data(), ids.size(), &n));
    return ids;
  }
  std::string detokenize(const std::vector<int32_t>& ids) {
    const char* t = nullptr;
    check(sf_session_detokenize(h_, ids.data(), ids.size(), &t));
    return t;
  }
  // Throws Error(SF_ERR_NOT_FOUND) when the session is not offloaded.
  std::string offload_stats_json() const {
    const char* j = nullptr;
    check(sf_session_offload_stats_json(h_, &j));
    return j;
  }

 private:
  struct CallbackState {
    const TokenCallback* fn;
    std::exception_ptr error;
  };
  // An exception must not unwind through the C library: it is caught here, stops the run, and is
  // rethrown once the call has returned.
  static int trampoline(void* user, int32_t token, const char* text) {
    auto* st = static_cast<CallbackState*>(user);
    try {
      return (*st->fn)(token, text) ? 0 : 1;
    } catch (...) {
      st->error = std::current_exception();
      return 1;
    }
  }
  template <typename Call>
  std::string run(const TokenCallback& on_token, Call&& call) {
    CallbackState st{&on_token, nullptr};
    const char* j = nullptr;
    const sf_status status =
        on_token ? call(&Session::trampoline, &st, &j) : call(nullptr, nullptr, &j);
    if (st.error) std::rethrow_exception(st.error);
    check(status);
    return j;
  }

  sf_session* h_ = nullptr;
};

}  // namespace sparseflow
