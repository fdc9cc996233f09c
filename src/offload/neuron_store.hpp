// A view of a model's FFN as *neuron bundles*, the unit neuron-level offloading moves and caches.
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
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "format/neuron_bundles.hpp"

namespace sf::model {
class Model;
struct Tensor;
}  // namespace sf::model

namespace sf::offload {

// The bundle layout and names are the file format's (format/neuron_bundles.hpp).
using format::BundleLayout;
using format::ffn_neurons_name;
using format::firing_rate_name;
using format::hotness_order;
using format::kBundleAlign;
using format::kFeatureNeuronMajor;
using format::kKindFfnNeurons;
using format::kKindFfnNeuronsS24;
using format::neuron_order_name;
using format::pack_bundles;
using format::predictor_name;

// One decoder layer's FFN, neuron-major.
struct NeuronLayer {
  BundleLayout layout;
  int64_t ffn = 0;                        // number of bundles (ffn_dim)
  const uint8_t* bundles = nullptr;       // [ffn, layout.stride] bytes, host memory (mmap or owned)
  const int32_t* neuron_order = nullptr;  // [ffn] bundle position -> original neuron index
  const float* firing_rate = nullptr;  // [ffn] per bundle position in [0, 1], or null (no profile)
  const void* fc2_bias = nullptr;      // b2 [d] of layout.dtype (stays resident; not in bundles)

  const uint8_t* bundle(int64_t b) const { return bundles + uint64_t(b) * layout.stride; }
  const void* fc1_row(int64_t b) const { return bundle(b) + layout.fc1_offset; }  // [d]
  const void* fc2_col(int64_t b) const { return bundle(b) + layout.fc2_offset; }  // [d]
  float fc1_bias(int64_t b) const {
    return load_as_float(bundle(b) + layout.bias_offset, layout.dtype, 0);
  }
  uint64_t bytes() const { return uint64_t(ffn) * layout.stride; }
};

// A per-layer activation predictor evaluated on the layer's attention input a [d] (the input of
// q_proj: LN1(h) for pre-LN models), so that its result is known before attention finishes:
//   score = (a U) V            U [d, rank], V [rank, ffn]  (fp16 in the file)
//   neuron b is predicted active  iff  score[b] > threshold[b]          (threshold fp32 [ffn])
// The fitted bias and the safety margin are folded into threshold. Indexed by bundle position.
struct PredictorLayer {
  int64_t rank = 0, hidden = 0, ffn = 0;
  const model::Tensor* u = nullptr;          // [d, rank]
  const model::Tensor* v = nullptr;          // [rank, ffn]
  const model::Tensor* threshold = nullptr;  // [ffn] F32
  uint64_t bytes() const;                    // what keeping it resident costs
};

struct PredictorInfo {
  std::string kind;  // "lowrank" (metadata predictor.kind)
  int64_t rank = 0;
  double recall = 0, precision = 0;  // measured on held-out calibration tokens
  double predicted_fraction = 0;     // mean fraction of neurons predicted active per token
  uint64_t bytes = 0;                // all layers
};

class NeuronStore {
 public:
  // Views `model`'s FFN as bundles. A neuron-major .sf model is viewed in place (its mmap; zero
  // copies). A row-major model (fc1/fc2 tensors) is packed into owned bundles (identity order,
  // 4096-byte aligned; the whole FFN in host memory) when pack_row_major, else
  // Error(UnsupportedShape) saying to convert with --neuron-major. Profile and predictor tensors
  // are picked up when present. The model must outlive the store. 2:4 models:
  // Error(UnsupportedShape) (see docs/OFFLOAD.md).
  static NeuronStore from_model(const model::Model& model, bool pack_row_major = true);

  int64_t layers() const { return int64_t(layers_.size()); }
  int64_t ffn() const { return ffn_; }
  int64_t hidden() const { return hidden_; }
  DType dtype() const { return layout_.dtype; }
  const BundleLayout& layout() const { return layout_; }
  const NeuronLayer& layer(int64_t l) const { return layers_.at(size_t(l)); }
  const uint8_t* bundle(int64_t layer, int64_t b) const { return layers_[size_t(layer)].bundle(b); }
  bool mapped_from_file() const { return mapped_; }  // bundles live in the .sf mmap
  bool has_profile() const { return has_profile_; }
  bool hotness_ordered() const { return hotness_ordered_; }  // firing_rate non-increasing in b
  bool has_predictor() const { return !predictors_.empty(); }
  const PredictorLayer& predictor(int64_t l) const { return predictors_.at(size_t(l)); }
  const PredictorInfo& predictor_info() const { return predictor_info_; }
  uint64_t bundle_bytes() const;  // all layers

  // The `count` bundle positions of `layer` with the highest firing rate (ties: lower position
  // first); the first `count` positions when there is no profile.
  std::vector<int32_t> hottest(int64_t layer, int64_t count) const;

 private:
  BundleLayout layout_;
  int64_t ffn_ = 0, hidden_ = 0;
  bool mapped_ = false, has_profile_ = false, hotness_ordered_ = false;
  std::vector<NeuronLayer> layers_;
  std::vector<PredictorLayer> predictors_;
  PredictorInfo predictor_info_;
  std::vector<std::shared_ptr<void>> owned_;  // packed bundles, identity orders
};

}  // namespace sf::offload
