#include "offload/synth_profile.hpp"

#include <cblas.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>

#include <fmt/format.h>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "format/hf_config.hpp"
#include "format/sf_file.hpp"
#include "model/convert.hpp"
#include "model/synth.hpp"
#include "model/synth_large.hpp"
#include "offload/neuron_store.hpp"

namespace sf::offload {

namespace {

namespace fs = std::filesystem;

constexpr double kPi = 3.14159265358979323846;
constexpr double kFc1Std = 0.02;       // HF's OPT initialisation std, for fc1 and q/k
constexpr double kAttnVariance = 0.2;  // all layers' attention outputs together add this much
constexpr double kFfnVariance = 0.5;   // all layers' FFN outputs together add this much
constexpr double kAttnDecay = 0.5;     // attention averages over the prefix: assume half survives

double norm_cdf(double x) {
  return 0.5 * std::erfc(-x / std::sqrt(2.0));
}
double norm_pdf(double x) {
  return std::exp(-0.5 * x * x) / std::sqrt(2.0 * kPi);
}

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ uint8_t(c)) * 1099511628211ull;
  return h;
}

// A standard normal from 32 uniform bits by the inverse CDF: a table of Phi^-1 at 2^14 + 1 equally
// spaced points, linear interpolation between them (relative error below 1e-5 where it is used),
// the outermost 16 bins at each end (u < 2^-10 or u > 1 - 2^-10, 1 draw in 512), where Phi^-1 bends
// fast, computed exactly. Box-Muller in double (log, sin, cos per pair) was 40% of `synth`'s time.
struct NormalTable {
  static constexpr int kBits = 14, kN = 1 << kBits, kExactBins = 16;
  std::vector<float> x;
  NormalTable() : x(size_t(kN) + 1) {
    for (int i = 1; i < kN; ++i) x[size_t(i)] = float(inv_norm_cdf(double(i) / kN));
  }
};
float standard_normal(uint32_t r) {
  static const NormalTable t;
  const uint32_t bin = r >> (32 - NormalTable::kBits);
  if (bin < uint32_t(NormalTable::kExactBins) ||
      bin >= uint32_t(NormalTable::kN - NormalTable::kExactBins))
    return float(inv_norm_cdf((double(r) + 0.5) * 0x1.0p-32));
  const float f = (float(r & ((1u << (32 - NormalTable::kBits)) - 1)) + 0.5f) * 0x1.0p-18f;
  return t.x[bin] + f * (t.x[bin + 1] - t.x[bin]);
}

// n standard normals * scale into out, one stream per 4096-element block so that the values do
// not depend on the thread count. `stream` names the tensor (the seed is mixed in).
void fill_normal(float* out, int64_t n, uint64_t seed, std::string_view stream, double scale) {
  const uint64_t base = seed ^ fnv1a(stream);
  const float s = float(scale);
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t b = 0; b < (n + 4095) / 4096; ++b) {
    uint64_t st = base + uint64_t(b) * 0x632be59bd9b4e019ull;
    const int64_t i1 = std::min(n, (b + 1) * 4096);
    for (int64_t i = b * 4096; i < i1; i += 2) {
      const uint64_t r = splitmix(st);
      out[i] = s * standard_normal(uint32_t(r));
      if (i + 1 < i1) out[i + 1] = s * standard_normal(uint32_t(r >> 32));
    }
  }
}

// E[relu(z)^2] / sigma^2 for z ~ N(m * sigma, sigma^2).
double relu_second_moment(double m) {
  return (m * m + 1.0) * norm_cdf(m) + m * norm_pdf(m);
}

double parse_number(std::string_view key, std::string_view v) {
  double x = 0;
  const auto r = std::from_chars(v.data(), v.data() + v.size(), x);
  if (r.ec != std::errc() || r.ptr != v.data() + v.size() || !std::isfinite(x))
    fail(Status::InvalidArgument, "--activation-profile: {}={} is not a number", key, v);
  return x;
}

std::vector<uint8_t> to_dtype(const float* v, int64_t n, DType dt) {
  std::vector<uint8_t> out(size_t(n) * dtype_size(dt));
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) store_from_float(out.data(), dt, size_t(i), v[i]);
  return out;
}

bool ends_with(const std::string& s, std::string_view suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

int64_t layer_of(const std::string& name) {
  const std::string key = "model.decoder.layers.";
  if (name.rfind(key, 0) != 0) return -1;
  return std::stoll(name.substr(key.size()));
}

// ---- the generator -----------------------------------------------------------------------------

class Generator {
 public:
  Generator(const arch::ModelDesc& c, uint64_t seed, DType dt, const ActivationProfileSpec& p)
      : c_(c), seed_(seed), dt_(dt), p_(p) {
    d_ = c.hidden_size;
    F_ = c.ffn_dim;
    k_ = p.latent > 0 ? p.latent : std::max<int64_t>(8, d_ / 32);
    if (k_ > d_)
      fail(Status::InvalidArgument, "--activation-profile latent={} exceeds hidden size {}", k_,
           d_);
    fit_ = fit_firing_rates(p, F_);
    // Variance budget of the residual stream at the embeddings: noise, then the shared positional
    // part (lag-1 correlation rho each) so that consecutive inputs correlate by `corr`.
    a_noise_ = std::sqrt(p.noise);
    const double pos_var = std::min(1.0 - p.noise, p.corr / p.rho);
    a_pos_ = std::sqrt(pos_var);
    a_tok_ = std::sqrt(std::max(0.0, 1.0 - p.noise - pos_var));
    v_attn_ = kAttnVariance / double(c.num_hidden_layers);
    v_ffn_ = kFfnVariance / double(c.num_hidden_layers);
    basis_.resize(size_t(d_ * k_));
    fill_normal(basis_.data(), d_ * k_, seed_, "synth.basis", 1.0 / std::sqrt(double(k_)));
  }

  int64_t latent() const { return k_; }
  const FiringRateFit& fit() const { return fit_; }
  nlohmann::json info() const {
    return {{"spec", p_.text.empty() ? "default" : p_.text},
            {"sparsity", p_.sparsity},
            {"hot_fraction", p_.hot_fraction},
            {"hot_share", p_.hot_share},
            {"corr", p_.corr},
            {"rho", p_.rho},
            {"noise", p_.noise},
            {"latent", k_},
            {"lognormal_mu", fit_.mu},
            {"lognormal_sigma", fit_.sigma},
            {"p_max", fit_.p_max},
            {"note",
             "targets; the achieved statistics are measured by `sparseflow profile` "
             "(docs/OFFLOAD.md)"}};
  }

  // A non-FFN tensor in fp32.
  std::vector<float> dense(const arch::ExpectedTensor& e) {
    int64_t n = 1;
    for (auto x : e.shape) n *= x;
    std::vector<float> v(static_cast<size_t>(n), 0.0f);
    const std::string& name = e.name;
    if (ends_with(name, "layer_norm.weight")) {
      fill_normal(v.data(), n, seed_, name, 0.05);
      for (auto& x : v) x += 1.0f;
    } else if (ends_with(name, "layer_norm.bias")) {
      fill_normal(v.data(), n, seed_, name, 0.02);
    } else if (ends_with(name, "embed_tokens.weight")) {
      // a_tok * U B^T + a_noise * N: each token's own latent plus isotropic noise.
      const int64_t V = e.shape[0];
      std::vector<float> u(static_cast<size_t>(V * k_));
      fill_normal(u.data(), V * k_, seed_, name + "#latent", 1.0);
      fill_normal(v.data(), n, seed_, name, a_noise_);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(V), int(d_), int(k_), float(a_tok_),
                  u.data(), int(k_), basis_.data(), int(k_), 1.0f, v.data(), int(d_));
    } else if (ends_with(name, "embed_positions.weight")) {
      // a_pos * S B^T with s_t a stationary AR(1) over positions: the slowly varying component.
      const int64_t P = e.shape[0];
      std::vector<float> s(static_cast<size_t>(P * k_));
      fill_normal(s.data(), P * k_, seed_, name + "#latent", 1.0);
      const float r = float(p_.rho), q = float(std::sqrt(1.0 - p_.rho * p_.rho));
      for (int64_t t = 1; t < P; ++t)
        for (int64_t j = 0; j < k_; ++j)
          s[size_t(t * k_ + j)] = r * s[size_t((t - 1) * k_ + j)] + q * s[size_t(t * k_ + j)];
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(P), int(d_), int(k_), float(a_pos_),
                  s.data(), int(k_), basis_.data(), int(k_), 0.0f, v.data(), int(d_));
    } else if (ends_with(name, "q_proj.weight") || ends_with(name, "k_proj.weight")) {
      fill_normal(v.data(), n, seed_, name, kFc1Std);
    } else if (ends_with(name, "v_proj.weight")) {
      fill_normal(v.data(), n, seed_, name, 1.0 / std::sqrt(double(d_)));
    } else if (ends_with(name, "out_proj.weight")) {
      // B G: attention writes back into the subspace, v_attn of variance per layer.
      std::vector<float> g(static_cast<size_t>(k_ * d_));
      fill_normal(g.data(), k_ * d_, seed_, name, std::sqrt(v_attn_ / double(d_)));
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(d_), int(d_), int(k_), 1.0f,
                  basis_.data(), int(k_), g.data(), int(d_), 0.0f, v.data(), int(d_));
    } else if (ends_with(name, ".bias")) {
      // q/k/v/out_proj and fc2 biases are zero: a constant offset would shift every z_j.
    } else {
      fail(Status::Internal, "synth: no rule for tensor {}", name);
    }
    return v;
  }

  struct Ffn {
    std::vector<float> w1, b1, w2;  // [F, d], [F], [d, F]
    std::vector<float> target;      // p_j
  };
  Ffn ffn(int64_t l) {
    const std::string p = fmt::format("model.decoder.layers.{}.", l);
    Ffn f;
    f.w1.resize(size_t(F_ * d_));
    fill_normal(f.w1.data(), F_ * d_, seed_, p + "fc1.weight", kFc1Std);
    const auto gamma = dense({p + "final_layer_norm.weight", {d_}, false});
    const auto beta = dense({p + "final_layer_norm.bias", {d_}, false});
    // sigma_j^2 = w~_j' Sigma_x w~_j with w~ = gamma * w and Sigma_x = c_s B B' + c_n I (unit
    // diagonal).
    std::vector<float> wt(f.w1.size());
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < F_; ++j)
      for (int64_t i = 0; i < d_; ++i)
        wt[size_t(j * d_ + i)] = f.w1[size_t(j * d_ + i)] * gamma[size_t(i)];
    std::vector<float> proj(static_cast<size_t>(F_ * k_));  // [F, k] = W~ B
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(F_), int(k_), int(d_), 1.0f,
                wt.data(), int(d_), basis_.data(), int(k_), 0.0f, proj.data(), int(k_));
    const double structured =
        (1.0 - p_.noise) + double(l + 1) * v_attn_ * kAttnDecay + double(l) * v_ffn_;
    const double cs = structured / (structured + p_.noise), cn = p_.noise / (structured + p_.noise);
    // This layer's rates: the fitted grid in a random order of neurons.
    f.target = fit_.rates;
    uint64_t st = seed_ ^ fnv1a(p + "#rates");
    for (int64_t j = F_ - 1; j > 0; --j)
      std::swap(f.target[size_t(j)], f.target[size_t(splitmix(st) % uint64_t(j + 1))]);
    f.b1.resize(size_t(F_));
    double second_moment = 0;
#pragma omp parallel for schedule(static) reduction(+ : second_moment)
    for (int64_t j = 0; j < F_; ++j) {
      double r2 = 0, n2 = 0, mean = 0;
      for (int64_t m = 0; m < k_; ++m)
        r2 += double(proj[size_t(j * k_ + m)]) * proj[size_t(j * k_ + m)];
      for (int64_t i = 0; i < d_; ++i) {
        n2 += double(wt[size_t(j * d_ + i)]) * wt[size_t(j * d_ + i)];
        mean += double(f.w1[size_t(j * d_ + i)]) * beta[size_t(i)];
      }
      const double sigma = std::sqrt(cs * r2 + cn * n2);
      const double pj = f.target[size_t(j)];
      f.b1[size_t(j)] = float(-mean - sigma * inv_norm_cdf(1.0 - pj));
      second_moment += sigma * sigma * relu_second_moment(inv_norm_cdf(pj));
    }
    // fc2 = B G2 with G2 scaled so that the FFN adds v_ffn of variance to the residual stream.
    std::vector<float> g(static_cast<size_t>(k_ * F_));
    fill_normal(g.data(), k_ * F_, seed_, p + "fc2.weight",
                std::sqrt(v_ffn_ / std::max(second_moment, 1e-12)));
    f.w2.resize(size_t(d_ * F_));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(d_), int(F_), int(k_), 1.0f,
                basis_.data(), int(k_), g.data(), int(F_), 0.0f, f.w2.data(), int(F_));
    return f;
  }

 private:
  arch::ModelDesc c_;
  uint64_t seed_;
  DType dt_;
  ActivationProfileSpec p_;
  int64_t d_ = 0, F_ = 0, k_ = 0;
  FiringRateFit fit_;
  double a_noise_ = 0, a_pos_ = 0, a_tok_ = 0, v_attn_ = 0, v_ffn_ = 0;
  std::vector<float> basis_;  // [d, k], entries N(0, 1/k): B B' has a unit diagonal on average
};

arch::ModelDesc config_for(const std::string& arch) {
  if (const model::LargeShape* s = model::find_large_shape(arch)) {
    if (s->arch != "opt")
      fail(Status::UnsupportedShape,
           "--activation-profile shapes OPT models (ReLU FFNs); {} is a {} model (a gated FFN, "
           "which "
           "the offloading experiments do not model yet).\n---> HINT: use an opt-* shape.",
           arch, s->arch);
    return model::large_config(*s);
  }
  model::SynthOptions so;
  so.arch = arch;
  return model::synth_config(so);  // throws naming the known shapes
}

}  // namespace

// ---- spec and rate fit
// ---------------------------------------------------------------------------

ActivationProfileSpec parse_activation_profile(std::string_view text) {
  ActivationProfileSpec s;
  s.text = std::string(text);
  if (text.empty() || text == "default") return s;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string_view item = text.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      fail(Status::InvalidArgument,
           "--activation-profile: \"{}\" is not key=value; expected e.g. "
           "sparsity=0.97,hot=0.26:0.80,corr=0.5",
           item);
    const std::string_view key = item.substr(0, eq), val = item.substr(eq + 1);
    if (key == "sparsity") {
      s.sparsity = parse_number(key, val);
    } else if (key == "hot") {
      const size_t colon = val.find(':');
      if (colon == std::string_view::npos)
        fail(Status::InvalidArgument,
             "--activation-profile: hot={} should be FRACTION:SHARE, e.g. hot=0.26:0.80", val);
      s.hot_fraction = parse_number(key, val.substr(0, colon));
      s.hot_share = parse_number(key, val.substr(colon + 1));
    } else if (key == "corr") {
      s.corr = parse_number(key, val);
    } else if (key == "rho") {
      s.rho = parse_number(key, val);
    } else if (key == "noise") {
      s.noise = parse_number(key, val);
    } else if (key == "latent") {
      s.latent = int64_t(parse_number(key, val));
    } else {
      fail(Status::InvalidArgument,
           "--activation-profile: unknown key \"{}\"; known: sparsity, hot, corr, rho, "
           "noise, latent",
           key);
    }
  }
  if (!(s.sparsity > 0 && s.sparsity < 1))
    fail(Status::InvalidArgument, "--activation-profile: sparsity={} must be in (0, 1)",
         s.sparsity);
  if (!(s.hot_fraction > 0 && s.hot_fraction < 1 && s.hot_share > s.hot_fraction &&
        s.hot_share < 1))
    fail(Status::InvalidArgument,
         "--activation-profile: hot={}:{} needs 0 < fraction < share < 1 (the hottest "
         "fraction of neurons carries a larger share of firings)",
         s.hot_fraction, s.hot_share);
  if (!(s.corr >= 0 && s.corr < 1))
    fail(Status::InvalidArgument, "--activation-profile: corr={} must be in [0, 1)", s.corr);
  if (!(s.rho > 0 && s.rho < 1))
    fail(Status::InvalidArgument, "--activation-profile: rho={} must be in (0, 1)", s.rho);
  if (!(s.noise > 0 && s.noise < 1))
    fail(Status::InvalidArgument, "--activation-profile: noise={} must be in (0, 1)", s.noise);
  if (s.corr / s.rho > 1 - s.noise)
    fail(Status::InvalidArgument,
         "--activation-profile: corr={} needs a shared component of corr/rho = {:.3f} of "
         "the variance, more than the 1 - noise = {:.3f} available; lower corr or noise, or raise "
         "rho",
         s.corr, s.corr / s.rho, 1 - s.noise);
  if (s.latent < 0)
    fail(Status::InvalidArgument, "--activation-profile: latent={} must be positive", s.latent);
  return s;
}

double inv_norm_cdf(double p) {
  if (p <= 0) return -INFINITY;
  if (p >= 1) return INFINITY;
  // Acklam's approximation (relative error 1.15e-9), then one Halley step on erfc.
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                             1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  const double plow = 0.02425;
  double x;
  if (p < plow) {
    const double q = std::sqrt(-2 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= 1 - plow) {
    const double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    const double q = std::sqrt(-2 * std::log(1 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  const double e = norm_cdf(x) - p, u = e * std::sqrt(2 * kPi) * std::exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

double hot_fraction_for_share(std::vector<float> rates, double share) {
  if (rates.empty()) return 0;
  std::sort(rates.begin(), rates.end(), std::greater<float>());
  double total = 0;
  for (float r : rates) total += r;
  if (total <= 0) return 0;
  double acc = 0;
  for (size_t i = 0; i < rates.size(); ++i) {
    acc += rates[i];
    if (acc >= share * total) return double(i + 1) / double(rates.size());
  }
  return 1.0;
}

FiringRateFit fit_firing_rates(const ActivationProfileSpec& spec, int64_t ffn) {
  if (ffn < 8)
    fail(Status::InvalidArgument, "an activation profile needs at least 8 neurons, got {}", ffn);
  FiringRateFit f;
  std::vector<double> z(static_cast<size_t>(ffn));
  for (int64_t i = 0; i < ffn; ++i) z[size_t(i)] = inv_norm_cdf((double(i) + 0.5) / double(ffn));
  const double target_mean = 1.0 - spec.sparsity;
  const int64_t hot = std::max<int64_t>(1, int64_t(std::llround(spec.hot_fraction * double(ffn))));
  auto grid = [&](double mu, double sigma, std::vector<float>* out) {
    double sum = 0, top = 0;
    for (int64_t i = 0; i < ffn; ++i) {
      const double p = std::min(f.p_max, std::exp(mu + sigma * z[size_t(i)]));
      sum += p;
      if (i >= ffn - hot) top += p;
      if (out) (*out)[size_t(i)] = float(p);
    }
    return std::pair<double, double>{sum / double(ffn), sum > 0 ? top / sum : 0};
  };
  auto mu_for = [&](double sigma) {  // mean is increasing in mu
    double lo = -60, hi = std::log(f.p_max) + 60;
    for (int it = 0; it < 64; ++it) {
      const double mid = 0.5 * (lo + hi);
      (grid(mid, sigma, nullptr).first < target_mean ? lo : hi) = mid;
    }
    return 0.5 * (lo + hi);
  };
  double lo = 1e-3, hi = 8;  // the hot share grows with sigma at a fixed mean
  if (grid(mu_for(hi), hi, nullptr).second < spec.hot_share)
    fail(Status::InvalidArgument,
         "--activation-profile: hot={}:{} with sparsity={} is not reachable with rates <= "
         "{} for {} neurons; lower the share or raise the fraction",
         spec.hot_fraction, spec.hot_share, spec.sparsity, f.p_max, ffn);
  for (int it = 0; it < 48; ++it) {
    const double mid = 0.5 * (lo + hi);
    (grid(mu_for(mid), mid, nullptr).second < spec.hot_share ? lo : hi) = mid;
  }
  f.sigma = 0.5 * (lo + hi);
  f.mu = mu_for(f.sigma);
  f.rates.resize(size_t(ffn));
  const auto [mean, share] = grid(f.mu, f.sigma, &f.rates);
  f.mean = mean;
  f.hot_share = share;
  return f;
}

// ---- writers
// -------------------------------------------------------------------------------------

arch::ModelDesc write_profiled_opt(const std::string& output, const ProfiledSynthOptions& o) {
  if (o.dtype != DType::F16 && o.dtype != DType::BF16 && o.dtype != DType::F32)
    fail(Status::InvalidArgument, "synthetic weights are fp16, bf16 or fp32, not {}",
         dtype_name(o.dtype));
  if (o.format != "sf" && o.format != "hf")
    fail(Status::InvalidArgument, "--format {}: expected hf or sf", o.format);
  if (o.neuron_major && o.format != "sf")
    fail(Status::InvalidArgument, "--neuron-major writes a .sf file; add --format sf");
  arch::ModelDesc c = config_for(o.arch);
  if (o.layers != 0) {
    if (o.layers < 1 || o.layers > c.num_hidden_layers)
      fail(Status::InvalidArgument,
           "--layers {}: {} has {} decoder layers; give 1..{} (or leave it out for all)", o.layers,
           o.arch, c.num_hidden_layers, c.num_hidden_layers);
    c.num_hidden_layers = o.layers;
  }
  Generator gen(c, o.seed, o.dtype, o.profile);
  const auto expected = arch::expected_tensors(c, /*untied_lm_head=*/false);
  const int64_t F = c.ffn_dim, H = c.hidden_size;
  nlohmann::json synth_info = {
      {"random_weights", true},
      {"arch", o.arch},
      {"seed", o.seed},
      {"layers", c.num_hidden_layers},
      {"activation_profile", gen.info()},
      {"note",
       "synthetic weights with a stated activation profile, made by `sparseflow synth "
       "--activation-profile`; not a trained model"}};

  // The layer whose FFN is in memory (generated once, used by fc1.weight, fc1.bias, fc2.weight).
  int64_t cached = -1;
  Generator::Ffn ffn;
  auto layer_ffn = [&](int64_t l) -> const Generator::Ffn& {
    if (cached != l) {
      ffn = gen.ffn(l);
      cached = l;
    }
    return ffn;
  };
  auto tensor_bytes = [&](const arch::ExpectedTensor& e) -> std::vector<uint8_t> {
    const int64_t l = layer_of(e.name);
    if (l >= 0 && ends_with(e.name, ".fc1.weight"))
      return to_dtype(layer_ffn(l).w1.data(), F * H, o.dtype);
    if (l >= 0 && ends_with(e.name, ".fc1.bias"))
      return to_dtype(layer_ffn(l).b1.data(), F, o.dtype);
    if (l >= 0 && ends_with(e.name, ".fc2.weight"))
      return to_dtype(layer_ffn(l).w2.data(), F * H, o.dtype);
    const auto v = gen.dense(e);
    return to_dtype(v.data(), int64_t(v.size()), o.dtype);
  };
  const std::string vocab = model::synth_vocab_json(c.vocab_size);
  const std::string_view merges = model::builtin_merges_txt();

  if (o.format == "hf") {
    const fs::path dir(output);
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) fail(Status::Io, "cannot create directory '{}': {}", output, ec.message());
    nlohmann::ordered_json header;
    header["__metadata__"] = {{"format", "pt"}, {"synthetic", synth_info["note"]}};
    uint64_t offset = 0;
    const size_t es = dtype_size(o.dtype);
    for (const auto& t : expected) {
      int64_t n = 1;
      for (auto x : t.shape) n *= x;
      header[t.name] = {{"dtype", std::string(dtype_name(o.dtype))},
                        {"shape", t.shape},
                        {"data_offsets", {offset, offset + uint64_t(n) * es}}};
      offset += uint64_t(n) * es;
    }
    std::string htext = header.dump();
    htext.append((8 - htext.size() % 8) % 8, ' ');
    AtomicFile f((dir / "model.safetensors").string());
    uint8_t le[8];
    for (int i = 0; i < 8; ++i) le[i] = uint8_t(uint64_t(htext.size()) >> (8 * i));
    f.write(le, 8);
    f.write(htext.data(), htext.size());
    for (const auto& t : expected) {
      const auto b = tensor_bytes(t);
      f.write(b.data(), b.size());
    }
    f.commit();
    nlohmann::json cj = format::hf_config_json(c);
    cj["torch_dtype"] = o.dtype == DType::F32    ? "float32"
                        : o.dtype == DType::BF16 ? "bfloat16"
                                                 : "float16";
    cj["sparseflow_synthetic"] = synth_info;
    for (const auto& [name, text] :
         {std::pair<std::string, std::string>{"config.json", cj.dump(2) + "\n"},
          {"vocab.json", std::string(vocab)},
          {"merges.txt", std::string(merges)}}) {
      AtomicFile t((dir / name).string());
      t.write(text.data(), text.size());
      t.commit();
    }
    return c;
  }

  // .sf: the table first (shapes only), then each tensor in order.
  std::vector<sff::EntrySpec> specs;
  const auto layout = BundleLayout::make(H, o.dtype);
  for (const auto& e : expected) {
    const int64_t l = layer_of(e.name);
    const bool ffn_part =
        l >= 0 && (ends_with(e.name, ".fc1.weight") || ends_with(e.name, ".fc1.bias") ||
                   ends_with(e.name, ".fc2.weight"));
    if (o.neuron_major && ffn_part) {
      if (!ends_with(e.name, ".fc1.weight")) continue;
      sff::EntrySpec sp{ffn_neurons_name(l), kKindFfnNeurons, o.dtype, {F, 2 * H + 1}, {}, {}};
      sp.parts = {{"bundles", uint64_t(F) * layout.stride}};
      specs.push_back(sp);
      specs.push_back(sff::dense_spec(neuron_order_name(l), DType::I32, {F}));
    } else {
      specs.push_back(sff::dense_spec(e.name, o.dtype, e.shape));
    }
  }
  specs.push_back(sff::bytes_spec("tokenizer.vocab.json", vocab.size()));
  specs.push_back(sff::bytes_spec("tokenizer.merges.txt", merges.size()));
  nlohmann::json meta = {
      {"sparseflow.converter_version", model::kConverterVersion},
      {"sparsity.pattern", "none"},
      {"sparsity.method", "none"},
      {"weights.dtype", std::string(dtype_name(o.dtype))},
      {"weights.synthetic", true},
      {"weights.synthetic_info", synth_info},
      {"synth.activation_profile", gen.info()},
      {"source.format", "synth"},
      {"source.path",
       fmt::format("sparseflow synth --arch {} --seed {} --activation-profile {}", o.arch, o.seed,
                   o.profile.text.empty() ? "default" : o.profile.text)},
      {"tokenizer.type", "gpt2-byte-level-bpe"}};
  std::vector<std::string> req;
  if (o.neuron_major) {
    meta["ffn.layout"] = "neuron_major";
    meta["ffn.bundle_stride"] = layout.stride;
    meta["ffn.neuron_order"] = "identity";
    req.push_back(kFeatureNeuronMajor);
  }
  sff::Writer w(output, "opt", format::hf_config_json(c), meta, specs, req);
  std::vector<int32_t> identity(static_cast<size_t>(F));
  std::iota(identity.begin(), identity.end(), 0);
  for (const auto& e : expected) {
    const int64_t l = layer_of(e.name);
    const bool ffn_part =
        l >= 0 && (ends_with(e.name, ".fc1.weight") || ends_with(e.name, ".fc1.bias") ||
                   ends_with(e.name, ".fc2.weight"));
    if (o.neuron_major && ffn_part) {
      if (!ends_with(e.name, ".fc1.weight")) continue;
      const auto& f = layer_ffn(l);
      const auto w1 = to_dtype(f.w1.data(), F * H, o.dtype), b1 = to_dtype(f.b1.data(), F, o.dtype),
                 w2 = to_dtype(f.w2.data(), F * H, o.dtype);
      std::vector<uint8_t> bundles(size_t(F) * layout.stride);
      pack_bundles(layout, F, w1.data(), b1.data(), w2.data(), {}, bundles.data());
      w.write(bundles);
      w.write({reinterpret_cast<const uint8_t*>(identity.data()), identity.size() * 4});
    } else {
      w.write(tensor_bytes(e));
    }
  }
  w.write({reinterpret_cast<const uint8_t*>(vocab.data()), vocab.size()});
  w.write({reinterpret_cast<const uint8_t*>(merges.data()), merges.size()});
  w.finish();
  return c;
}

}  // namespace sf::offload
