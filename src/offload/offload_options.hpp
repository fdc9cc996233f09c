// What `--gpu-memory`, `--gpu-cache-ratio`, `--host-memory`, `--offload-policy`, `--predictor`
// and `--stats` on generate / perplexity / benchmark ask of the offloaded (CUDA) engine. The CLI
// fills it (src/cli/offload_flags.cpp); the engine and the planner (planner.hpp) read it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sf::offload {

// A size as the user typed it: bytes ("6GiB", "6GB", "6000MiB", "123456") or a fraction of the
// model's bytes ("0.5", "50%"). Parse with parse_size_spec (planner.hpp).
struct SizeSpec {
  double value = 0;        // bytes, or the fraction when `fraction`
  bool fraction = false;
  std::string text;        // as typed, for messages
  uint64_t resolve(uint64_t model_bytes) const {
    return fraction ? uint64_t(value * double(model_bytes)) : uint64_t(value);
  }
};

enum class OffloadPolicy {
  Fetch,   // copy missing predicted neurons into the GPU cache, compute there (default)
  Cpu,     // compute cold neurons on the CPU where their weights live (PowerInfer's choice)
  Auto,    // per layer, whichever a measured cost model says is cheaper
  Stream,  // naive baseline: stream every non-resident layer's FFN weights each token
};
enum class PredictorMode {
  Model,  // the calibrated predictors stored in the .sf file (`sparseflow calibrate`)
  Exact,  // oracle: the true active set (computes fc1 for all neurons; for testing only)
};

struct OffloadOptions {
  std::optional<SizeSpec> gpu_memory;   // set: run offloaded under this GPU budget
  double gpu_cache_ratio = 0.3;         // fraction of the FFN budget that is an LRU cache; the rest
                                        // pins the hottest neurons (the seed's 0.3)
  std::optional<SizeSpec> host_memory;  // host bytes for non-resident bundles; below their size the
                                        // bundles are read from the .sf mmap instead of pinned
  OffloadPolicy policy = OffloadPolicy::Fetch;
  PredictorMode predictor = PredictorMode::Model;
  bool stats = false;                   // per-token PCIe bytes, hit rate, recall/precision, time split

  bool enabled() const { return gpu_memory.has_value(); }
};

std::string_view policy_name(OffloadPolicy p);           // "fetch", ...
std::optional<OffloadPolicy> policy_from_name(std::string_view s);
std::string_view predictor_mode_name(PredictorMode p);   // "model", "exact"
std::optional<PredictorMode> predictor_mode_from_name(std::string_view s);

}  // namespace sf::offload
