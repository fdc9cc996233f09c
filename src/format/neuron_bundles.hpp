// The on-disk layout of *neuron bundles*, the unit neuron-level offloading moves and caches
// (offload/neuron_store.hpp views a model's FFN through it).
//
// OPT's FFN is h = relu(x W1^T + b1) (W1 = fc1 [ffn, d]) and y = h W2^T + b2 (W2 = fc2 [d, ffn]).
// Neuron j owns fc1 row j, b1[j] and fc2 column j: everything it contributes to y. A bundle holds
// those three contiguously, so fetching a neuron is one contiguous read of `stride` bytes:
//
//   byte 0            fc1 row j      [d] elems of dtype           (fc1_offset = 0)
//   byte d*e          fc2 column j   [d] elems of dtype           (fc2_offset = d*e)
//   byte 2*d*e        fc1 bias b1[j] one elem of dtype            (bias_offset = 2*d*e)
//   byte 2*d*e + e    zero padding up to stride = round_up((2d+1)*e, 128)
//
// e = element size (2 for F16/BF16, 4 for F32). The 128-byte stride keeps every bundle on the same
// 128-byte phase as the first, so a warp's 16-byte vector loads of a bundle are whole 128-byte
// lines (4 full 32-byte sectors) and a bulk copy of bundles never splits a line between neurons;
// for d = 4096 (fp16) it costs 126 bytes per 16 KiB bundle (0.8%). In a .sf file the first bundle
// of a layer starts on the format's 64-byte part alignment; owned (packed) bundles start on a
// 4096-byte boundary. docs/FORMAT.md ("Neuron-major FFN") is the on-disk specification.
//
// Neuron index space: everything per-neuron that the store exposes (bundles, firing rates,
// predictor outputs and thresholds) is indexed by *bundle position* b in [0, ffn). neuron_order[b]
// is the original neuron index (fc1 row) the bundle came from. A hotness-ordered file has
// firing_rate non-increasing in b, so "the k hottest neurons" are bundle positions [0, k).
// Permuting an FFN's hidden neurons does not change its output, so the engine never needs the
// original index except to compare against a row-major copy of the same model.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.hpp"

namespace sf::format {

inline constexpr uint64_t kBundleAlign = 128;  // bundle stride is a multiple of this (see above)

// Byte layout of one bundle (identical for every neuron and layer of a model).
struct BundleLayout {
  int64_t hidden = 0;                                     // d
  DType dtype = DType::F16;                               // F16, BF16 or F32
  uint64_t elem = 2;                                      // bytes per element
  uint64_t fc1_offset = 0;                                // fc1 row: [d] elems
  uint64_t fc2_offset = 0;                                // fc2 column: [d] elems
  uint64_t bias_offset = 0;                               // b1[j]: 1 elem
  uint64_t stride = 0;                                    // bytes from one bundle to the next
  static BundleLayout make(int64_t hidden, DType dtype);  // throws Error(InvalidArgument)
};

// Packing (convert, synth and the store).
// Writes the bundles of one layer into out [ffn, layout.stride] (zero padding included).
// w1 [ffn, d], b1 [ffn] (null: zero bias), w2 [d, ffn], all of `layout.dtype`. order[b] = the
// original neuron stored at position b (empty: identity). Parallel over neurons.
void pack_bundles(const BundleLayout& layout, int64_t ffn, const void* w1, const void* b1,
                  const void* w2, std::span<const int32_t> order, uint8_t* out);

// Hotness order: bundle positions sorted by firing rate, highest first (stable: ties keep the
// lower neuron index first). rates.size() == ffn.
std::vector<int32_t> hotness_order(std::span<const float> rates);

// Names of the per-layer entries (docs/FORMAT.md).
std::string ffn_neurons_name(int64_t layer);                  // model.decoder.layers.N.ffn_neurons
std::string neuron_order_name(int64_t layer);                 // model.decoder.layers.N.neuron_order
std::string firing_rate_name(int64_t layer);                  // profile.layers.N.firing_rate
std::string predictor_name(int64_t layer, const char* part);  // predictor.layers.N.{u,v,threshold}
inline constexpr const char* kKindFfnNeurons = "ffn_neurons";
inline constexpr const char* kKindFfnNeuronsS24 = "ffn_neurons_s24";  // specified, not written yet
inline constexpr const char* kFeatureNeuronMajor = "ffn_neuron_major";

}  // namespace sf::format
