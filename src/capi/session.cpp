// The C ABI's sessions (sf_session_*, sparseflow.h) over session::Session: option structs read up
// to the caller's struct_size, JSON results kept in the handle until its next call, the token
// callback's non-zero return turned into the session's stop.
#include <cstddef>
#include <cstring>
#include <memory>
#include <string>

#include "capi/capi_internal.hpp"
#include "capi/error_state.hpp"
#include "core/error.hpp"
#include "offload/offloaded_opt.hpp"
#include "offload/planner.hpp"
#include "session/builtin_model.hpp"
#include "session/session.hpp"
#include "sparseflow/sparseflow.h"

struct sf_session {
  std::unique_ptr<sf::session::Session> s;
  std::string json;  // the last JSON or text result, valid until the next call
};

namespace {

using sf::capi::need;
using sf::capi::reject;

constexpr auto kDump = nlohmann::json::error_handler_t::replace;

// A copy of the caller's struct over the defaults: the fields its struct_size covers, the defaults
// for the rest (a caller built against an older header). A struct_size larger than this library
// knows would carry fields it would silently ignore, so it is refused.
template <typename T>
T read_struct(const char* fn, const char* what, const T* given, T defaults) {
  if (!given) return defaults;
  const size_t size = given->struct_size;
  if (size < sizeof(size_t) || size > sizeof(T))
    reject(
        fn,
        "{}->struct_size is {}; expected sizeof({}) = {} (fill it with the _init function), or the "
        "size of an older version of it; a larger size means the caller was built against a newer "
        "sparseflow.h than this library",
        what, size, what, sizeof(T));
  std::memcpy(static_cast<void*>(&defaults), static_cast<const void*>(given), size);
  defaults.struct_size = sizeof(T);
  return defaults;
}

sf_session_options default_options() {
  sf_session_options o{};
  o.struct_size = sizeof o;
  o.gpu_cache_ratio = -1;
  return o;
}

sf_generate_params default_params() {
  sf_generate_params p{};
  p.struct_size = sizeof p;
  p.max_new_tokens = 32;
  p.greedy = 1;
  p.temperature = 1.0f;
  p.top_p = 1.0f;
  return p;
}

sf::session::SessionOptions session_options(const char* fn, const sf_session_options& c) {
  sf::session::SessionOptions o;
  o.device = c.device ? c.device : "auto";
  o.threads = c.threads;
  if (c.context_tokens < 0)
    reject(fn, "context_tokens is {}; expected >= 0 (0: max_position_embeddings)",
           c.context_tokens);
  o.context_tokens = c.context_tokens;
  const bool offloaded = c.gpu_memory && *c.gpu_memory;
  if (!offloaded) {
    if (c.offload_policy || c.collect_stats || c.gpu_cache_ratio >= 0 || c.predictor)
      reject(fn,
             "gpu_cache_ratio, offload_policy, predictor and collect_stats configure offloaded "
             "inference; set gpu_memory too (e.g. \"6GiB\" or \"50%\" of the model), or leave them "
             "at their defaults");
    return o;
  }
  auto& off = o.offload;
  off.gpu_memory = sf::offload::parse_size_spec(c.gpu_memory, "gpu_memory");
  if (c.gpu_cache_ratio >= 0) {
    if (c.gpu_cache_ratio > 1)
      reject(fn, "gpu_cache_ratio is {}; expected a fraction in [0, 1]", c.gpu_cache_ratio);
    off.gpu_cache_ratio = c.gpu_cache_ratio;
  }
  if (c.offload_policy) {
    const auto p = sf::offload::policy_from_name(c.offload_policy);
    if (!p)
      reject(fn, "offload_policy is \"{}\"; expected fetch, cpu, auto or stream", c.offload_policy);
    off.policy = *p;
  }
  if (c.predictor) {
    const auto p = sf::offload::predictor_mode_from_name(c.predictor);
    if (!p) reject(fn, "predictor is \"{}\"; expected model or exact", c.predictor);
    off.predictor = *p;
  }
  off.stats = c.collect_stats != 0;
  return o;
}

sf::session::GenerateParams generate_params(const char* fn, const sf_generate_params* given) {
  const auto c = read_struct(fn, "params", given, default_params());
  if (c.max_new_tokens < 0)
    reject(fn, "params->max_new_tokens is {}; expected >= 0", c.max_new_tokens);
  sf::session::GenerateParams p;
  p.max_new_tokens = c.max_new_tokens;
  p.sampling.greedy = c.greedy != 0;
  p.sampling.temperature = c.temperature;
  p.sampling.top_k = c.top_k;
  p.sampling.top_p = c.top_p;
  p.sampling.seed = c.seed;
  return p;
}

sf::session::Session& session(const char* fn, sf_session* s) {
  need(fn, s, "the sf_session handle");
  return *s->s;
}

// The C callback as the session's: its text NUL-terminated, its non-zero return a stop.
sf::session::TokenCallback token_callback(sf_token_callback cb, void* user) {
  if (!cb) return {};
  return [cb, user](int32_t id, std::string_view piece) {
    const std::string text(piece);
    return cb(user, id, text.c_str()) == 0;
  };
}

void store_result(sf_session* s, const sf::session::Generation& g, const char** result_json) {
  s->json = g.to_json().dump(-1, ' ', false, kDump);
  if (result_json) *result_json = s->json.c_str();
}

}  // namespace

extern "C" {

SF_API sf_status sf_session_options_init(sf_session_options* options) {
  static constexpr const char* fn = "sf_session_options_init";
  return sf::capi::guard(fn, [&] {
    need(fn, options, "options");
    *options = default_options();
  });
}

SF_API sf_status sf_generate_params_init(sf_generate_params* params) {
  static constexpr const char* fn = "sf_generate_params_init";
  return sf::capi::guard(fn, [&] {
    need(fn, params, "params");
    *params = default_params();
  });
}

SF_API sf_status sf_session_open(const char* path, const sf_session_options* options,
                                 sf_session** out) {
  static constexpr const char* fn = "sf_session_open";
  if (out) *out = nullptr;
  return sf::capi::guard(fn, [&] {
    need(fn, path, "path");
    need(fn, out, "out");
    const auto o = session_options(fn, read_struct(fn, "options", options, default_options()));
    auto h = std::make_unique<sf_session>();
    h->s = sf::session::Session::open(path, o);
    h->s->start();  // errors (no GPU, a budget too small) at open, not at the first request
    *out = h.release();
  });
}

SF_API void sf_session_free(sf_session* s) {
  delete s;
}

SF_API sf_status sf_session_info_json(sf_session* s, const char** json) {
  static constexpr const char* fn = "sf_session_info_json";
  return sf::capi::guard(fn, [&] {
    auto& ss = session(fn, s);
    need(fn, json, "json");
    s->json = ss.info().dump(-1, ' ', false, kDump);
    *json = s->json.c_str();
  });
}

SF_API sf_status sf_session_generate(sf_session* s, const char* prompt_utf8,
                                     const sf_generate_params* params, sf_token_callback cb,
                                     void* user, const char** result_json) {
  static constexpr const char* fn = "sf_session_generate";
  return sf::capi::guard(fn, [&] {
    auto& ss = session(fn, s);
    need(fn, prompt_utf8, "prompt_utf8");
    const auto p = generate_params(fn, params);
    store_result(s, ss.generate(prompt_utf8, p, token_callback(cb, user)), result_json);
  });
}

SF_API sf_status sf_session_generate_ids(sf_session* s, const int32_t* ids, size_t n,
                                         const sf_generate_params* params, sf_token_callback cb,
                                         void* user, const char** result_json) {
  static constexpr const char* fn = "sf_session_generate_ids";
  return sf::capi::guard(fn, [&] {
    auto& ss = session(fn, s);
    if (n == 0) reject(fn, "n is 0; the prompt needs at least one token id");
    need(fn, ids, "ids");
    const auto p = generate_params(fn, params);
    store_result(s, ss.generate_ids({ids, n}, p, token_callback(cb, user)), result_json);
  });
}

SF_API sf_status sf_session_perplexity(sf_session* s, const char* text_utf8, int64_t context,
                                       double* perplexity) {
  static constexpr const char* fn = "sf_session_perplexity";
  return sf::capi::guard(fn, [&] {
    auto& ss = session(fn, s);
    need(fn, text_utf8, "text_utf8");
    need(fn, perplexity, "perplexity");
    if (context < 0)
      reject(fn, "context is {}; expected >= 0 (0: max_position_embeddings)", context);
    *perplexity = ss.perplexity_text(text_utf8, context).perplexity();
  });
}

SF_API sf_status sf_session_perplexity_ids(sf_session* s, const int32_t* ids, size_t n,
                                           int64_t context, double* perplexity) {
  static constexpr const char* fn = "sf_session_perplexity_ids";
  return sf::capi::guard(fn, [&] {
    auto& ss = session(fn, s);
    if (n) need(fn, ids, "ids");
    need(fn, perplexity, "perplexity");
    if (context < 0)
      reject(fn, "context is {}; expected >= 0 (0: max_position_embeddings)", context);
    *perplexity = ss.perplexity({ids, n}, context).perplexity();
  });
}

SF_API sf_status sf_session_tokenize(sf_session* s, const char* text_utf8, int add_bos,
                                     int32_t* ids, size_t capacity, size_t* n_ids) {
  static constexpr const char* fn = "sf_session_tokenize";
  return sf::capi::guard(fn, [&] {
    auto& ss = session(fn, s);
    need(fn, text_utf8, "text_utf8");
    need(fn, n_ids, "n_ids");
    if (capacity) need(fn, ids, "ids");
    const auto t = ss.tokenize(text_utf8, add_bos != 0);
    *n_ids = t.size();
    if (!ids && capacity == 0) return;  // the count alone
    if (t.size() > capacity)
      reject(fn, "the text is {} tokens, ids has room for {}; call with capacity >= *n_ids",
             t.size(), capacity);
    if (!t.empty()) std::memcpy(ids, t.data(), t.size() * sizeof(int32_t));
  });
}

SF_API sf_status sf_session_detokenize(sf_session* s, const int32_t* ids, size_t n,
                                       const char** text) {
  static constexpr const char* fn = "sf_session_detokenize";
  return sf::capi::guard(fn, [&] {
    auto& ss = session(fn, s);
    if (n) need(fn, ids, "ids");
    need(fn, text, "text");
    s->json = ss.detokenize({ids, n});
    *text = s->json.c_str();
  });
}

SF_API sf_status sf_session_offload_stats_json(sf_session* s, const char** json) {
  static constexpr const char* fn = "sf_session_offload_stats_json";
  return sf::capi::guard(fn, [&] {
    auto& ss = session(fn, s);
    need(fn, json, "json");
    const auto st = ss.offload_stats();
    if (!st)
      throw sf::Error(
          sf::Status::NotFound,
          fmt::format(
              "{}: the session is not offloaded (it runs on the {} without a GPU memory budget), "
              "so "
              "there are no offload statistics; open it with gpu_memory set to run offloaded",
              fn, ss.device()));
    s->json = st->to_json().dump(-1, ' ', false, kDump);
    *json = s->json.c_str();
  });
}

SF_API sf_status sf_synth_builtin(const char* out_path, int force) {
  static constexpr const char* fn = "sf_synth_builtin";
  return sf::capi::guard(fn, [&] {
    need(fn, out_path, "out_path");
    sf::session::write_builtin_model(out_path, force != 0);
  });
}

}  // extern "C"
