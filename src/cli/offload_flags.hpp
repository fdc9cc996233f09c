// The offloading flags shared by generate, perplexity and benchmark: --gpu-memory,
// --gpu-cache-ratio, --host-memory, --offload-policy, --predictor, --stats, --plan. They fill an
// offload::OffloadOptions for the offloaded CUDA engine (offload/offloaded_opt.hpp).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "offload/offload_options.hpp"

namespace CLI {
class App;
}
namespace sf::model {
class Model;
}

namespace sf::cli {

struct OffloadFlags {
  std::string gpu_memory, host_memory, policy = "fetch", predictor = "model";
  double gpu_cache_ratio = 0.3;
  bool stats = false, plan = false;
  bool any_set = false;  // some offload flag other than --gpu-memory was given
};

void add_offload_flags(CLI::App* cmd, const std::shared_ptr<OffloadFlags>& f);

// Validates the flags (Error(InvalidArgument) naming the bad one; offload flags without
// --gpu-memory are an error) and returns the options; enabled() is false without --gpu-memory.
offload::OffloadOptions offload_options(const OffloadFlags& f);

// When --gpu-memory is set: --plan prints the placement plan for `context_tokens` and returns true
// (the command then stops); otherwise the device must be cuda (Error(InvalidArgument) saying that
// the offloaded engine needs it) and it returns false so the command runs the offloaded engine.
bool handle_plan_or_require_cuda(const offload::OffloadOptions& o, const OffloadFlags& f,
                                 const std::string& device, const model::Model& model,
                                 int64_t context_tokens);

// benchmark --model M --gpu-memory B: offloaded decode speed and --stats, one table line and JSON;
// --profile adds the decode step by stage (cli/decode_profile.hpp).
void run_offloaded_benchmark(const std::string& model_path, const offload::OffloadOptions& o,
                             int64_t prompt_tokens, int64_t new_tokens,
                             const std::string& json_path, bool profile = false);

}  // namespace sf::cli
