// The least time one offloaded decode token can take, from the placement plan and the run's own
// counters: what the step reads from GPU memory at the measured HBM read bandwidth, and what crosses
// PCIe at the measured DMA bandwidth, the two perfectly overlapped (the larger of the two). The
// offloaded engine's counterpart of the resident engine's HBM limit; `benchmark --gpu-memory`
// prints the fraction of it a run reached.
//
// GPU-memory bytes per token, as the engine reads them: the attention weights that stay on the GPU,
// the head (lm_head, or the tied token embeddings), layer norms, fc2 biases, the predictors, the KV
// cache at the run's mean length, and per listed neuron its fc1 row, plus its fc2 column when it
// fired (the run's precision, which only --stats measures). PCIe bytes per token: the run's own count
// (fetched bundles, direct host reads, host attention, streamed layers).
#pragma once
#include <cstdint>
#include <optional>

#include "offload/offloaded_opt.hpp"
#include "offload/planner.hpp"

namespace sf::offload {

struct DecodeLimit {
  double gpu_bytes = 0, pcie_bytes = 0;  // per token
  double hbm_ms = 0, pcie_ms = 0;        // each at its bandwidth
  double ms() const { return hbm_ms > pcie_ms ? hbm_ms : pcie_ms; }
  // The share of the limit a run at `tokens_per_s` reached (limit time over measured time).
  double fraction(double tokens_per_s) const { return tokens_per_s > 0 ? ms() * tokens_per_s / 1000.0 : 0.0; }
};

struct DecodeLimitInput {
  uint64_t head_bytes = 0;      // the output projection's weights (the token embeddings when tied)
  double act_bytes = 2;         // bytes per element of the activations and bundles
  double kv_share = 1;          // mean cached length over the context the plan reserved, in (0, 1]
  double hbm_GBps = 0, pcie_GBps = 0;
};

// Empty when the run did not measure its precision (no --stats check) or a bandwidth is unknown:
// without the share of listed neurons that fired, fc2's bytes are not known.
std::optional<DecodeLimit> decode_limit(const Plan& plan, const OffloadStats& st, const DecodeLimitInput& in);

}  // namespace sf::offload
