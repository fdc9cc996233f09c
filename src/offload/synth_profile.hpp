// Synthetic OPT checkpoints whose FFN activations follow a stated profile: per-token sparsity,
// per-neuron hotness (the share of firings carried by the hottest neurons) and token-to-token
// correlation. No trained OPT can be downloaded here, so offloading is measured on these; the
// achieved statistics are measured by `sparseflow profile`, never assumed (docs/OFFLOAD.md gives
// the model and the measured numbers).
//
// The generative model, in one paragraph (docs/OFFLOAD.md has the derivation). The residual stream
// lives mostly in a random k-dimensional subspace B [d, k] (k = `latent`): token embeddings are
// B u_tok (a token's own latent) plus isotropic noise, position embeddings are B s_t where s_t is a
// stationary AR(1) process over positions (per-step correlation `rho`), so consecutive tokens share
// a slowly varying component; attention out_proj and fc2 write back into the same subspace. The
// FFN input x = LN2(h) is then close to Gaussian with a covariance known in closed form, so
// z_j = w_j.x is N(0, sigma_j^2) with sigma_j computed from the realised fc1 row, and
// b1[j] = -w_j.beta - sigma_j * Phi^-1(1 - p_j) makes neuron j fire with probability p_j. The p_j
// come from a log-normal (clipped at 1) fitted so that mean(p) = 1 - sparsity and the hottest
// `hot_fraction` of neurons carry `hot_share` of the firings.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.hpp"
#include "model/weights.hpp"

namespace sf::offload {

struct ActivationProfileSpec {
  double sparsity = 0.97;      // mean fraction of FFN neurons with relu(z) == 0 per token
  double hot_fraction = 0.26;  // the hottest 26% of neurons ...
  double hot_share = 0.80;     // ... carry 80% of all firings (PowerInfer's figure for OPT)
  double corr = 0.5;           // correlation of consecutive tokens' FFN inputs (shared component)
  double rho = 0.95;           // per-position correlation of the shared (positional) component
  double noise = 0.10;         // fraction of the residual stream's variance that is isotropic noise
  int64_t latent = 0;          // k, dimension of the residual stream's subspace; 0: max(8, hidden/32)
  std::string text;            // the spec as given
};
// "sparsity=0.97,hot=0.26:0.80,corr=0.5[,rho=0.95][,noise=0.1][,latent=128]"; any subset, the rest
// default; "default" or "" = all defaults. Throws Error(InvalidArgument) naming the bad key.
ActivationProfileSpec parse_activation_profile(std::string_view text);

// Target firing rates of `ffn` neurons in ascending order: the log-normal quantile grid
// p_i = min(p_max, exp(mu + sigma * Phi^-1((i + 0.5) / ffn))), (mu, sigma) fitted to the spec.
struct FiringRateFit {
  double mu = 0, sigma = 0, p_max = 0.999;
  double mean = 0, hot_share = 0;  // achieved by the grid (exact up to the fit tolerance)
  std::vector<float> rates;        // ascending
};
FiringRateFit fit_firing_rates(const ActivationProfileSpec& spec, int64_t ffn);

// Inverse of the standard normal CDF (Acklam's rational approximation refined by one Halley step).
double inv_norm_cdf(double p);
// The smallest fraction of neurons (hottest first) whose firing rates sum to `share` of the total.
double hot_fraction_for_share(std::vector<float> rates, double share);

struct ProfiledSynthOptions {
  std::string arch = "tiny";   // tiny (built-in tokenizer's vocab) or opt-125m ... opt-30b
  uint64_t seed = 0;
  DType dtype = DType::F16;
  ActivationProfileSpec profile;
  std::string format = "sf";   // "sf" (a .sf file) or "hf" (a checkpoint directory)
  bool neuron_major = false;   // sf only: FFN as neuron bundles (identity order)
  // 0: the arch's layer count; else only the first `layers` decoder layers of the arch's shapes
  // (e.g. 24 of OPT-30B's 48, whose 60 GB do not fit a 64 GB disk beside a build). The per-layer
  // weight scales follow the count written, so the residual stream stays as bounded as in a full
  // model; per-layer costs (bytes, time) are those of the full shape's layers.
  int64_t layers = 0;
};
// Streams the checkpoint to `output` (one layer's FFN in memory at a time; atomic). Returns the config.
arch::ModelDesc write_profiled_opt(const std::string& output, const ProfiledSynthOptions& o);

}  // namespace sf::offload
