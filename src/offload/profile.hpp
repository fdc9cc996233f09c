// `sparseflow profile`: run a model over calibration text and measure its FFN activation
// statistics: per-layer per-neuron firing rates (tokens with relu(z) > 0 / tokens), per-token
// sparsity, the fraction of neurons carrying 80% of firings, and the overlap (Jaccard) of
// consecutive tokens' active sets. The rates go into the .sf file as profile.layers.N.firing_rate
// (docs/FORMAT.md); the planner and `convert --neuron-major` use them.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "model/weights.hpp"
#include "offload/predictor_fit.hpp"

namespace sf::offload {

struct LayerProfile {
  std::vector<float> firing_rate;  // [ffn] by neuron index (bundle position for neuron-major files)
  double sparsity = 0;             // mean over tokens of the fraction of neurons not firing
  double sparsity_min = 1, sparsity_max = 0;  // over tokens
  double hot_fraction = 0;         // smallest fraction of neurons carrying `hot_share` of firings
  double jaccard = 0;              // mean |A_t & A_t+1| / |A_t | A_t+1| over consecutive tokens
};

struct ProfileResult {
  int64_t tokens = 0;
  double hot_share = 0.8;
  std::vector<LayerProfile> layers;
  // Averages over layers (min / max over layers and tokens for the sparsity range).
  double sparsity = 0, sparsity_min = 1, sparsity_max = 0, hot_fraction = 0, jaccard = 0;
};

struct ProfileOptions {
  int64_t window = 0;       // tokens per forward pass (a fresh sequence each); 0: max positions
  double hot_share = 0.8;   // the share for hot_fraction
  std::string device = "cpu";  // profile_activations runs the CPU backend; on a GPU see profile_collected
};

// Runs `tokens` through the model on the CPU backend (windows of opt.window tokens).
ProfileResult profile_activations(const model::Model& model, std::span<const int32_t> tokens,
                                  const ProfileOptions& opt = {});

// The same statistics from pre-activations already collected (collect_activations_cuda or _cpu of
// offload/predictor_fit.hpp, every layer): `profile --device cuda` and `calibrate --with-profile`,
// which measure the profile from the forward passes the predictors are fitted on.
ProfileResult profile_collected(const CollectedActivations& c, double hot_share = 0.8);

std::string profile_table(const ProfileResult& r);  // the summary `sparseflow profile` prints

// Writes profile.layers.N.firing_rate [ffn] F32 and metadata profile.* into the .sf file at `path`
// (replacing an earlier profile), atomically.
// (profile_entries below gives the same tensors and metadata, to write together with others in one rewrite.)
void write_profile(const std::string& path, const ProfileResult& r,
                   const std::string& calibration_name, const std::string& out = {});

// Rewrites the .sf file at `path` with extra dense tensors (replacing entries of the same name and
// every entry whose name `drop` accepts) and metadata keys merged in. Streams the other entries'
// bytes from the old file's mapping into a temporary in the same directory, then renames it over
// `path`: the old file stays intact until the new one is complete.
struct NewTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
// `out` (when not empty) receives the rewritten file instead of `path`, which is then left alone.
void rewrite_sf(const std::string& path, const std::vector<NewTensor>& add,
                const nlohmann::json& metadata,
                const std::function<bool(const std::string&)>& drop = {},
                const std::string& out = {});

// The profile's tensors and metadata (write_profile's), and which existing entries a new profile replaces.
void profile_entries(const ProfileResult& r, const std::string& calibration_name, std::vector<NewTensor>& add,
                     nlohmann::json& metadata);
bool is_profile_entry(const std::string& name);

}  // namespace sf::offload
