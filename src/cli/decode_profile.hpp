// The per-stage decode profile `sparseflow benchmark --profile` prints (resident and offloaded).
#pragma once
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <utility>

#include "model/cuda_engine.hpp"

namespace sf::cli {

// Runs CudaEngine::profile_decode (eager steps, an event after every stage, up to 32 steps after a
// `prompt_tokens` prompt) and profile_decode_graph (the same marks inside the replayed decode
// graph), prints both tables (ms, share of the step, GB and GB/s against the HBM read bandwidth
// `bw` in bytes/s) to `human`, returns the stages as JSON: {eager, graph}.
std::pair<nlohmann::ordered_json, nlohmann::ordered_json> print_decode_profile(
    model::CudaEngine& gpu, int64_t prompt_tokens, int64_t new_tokens, double bw, std::FILE* human);

}  // namespace sf::cli
