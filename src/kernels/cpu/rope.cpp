// The inverse-frequency tables of HF transformers' modeling_rope_utils.py, step by step in the
// dtype HF computes each step in: tensors are fp32, Python scalars (theta, factor, ...) enter an
// fp32 tensor operation as fp32, and the scalar-only arithmetic (llama3's wavelength bounds, yarn's
// correction range) is Python's fp64. `scalar / tensor` is torch's reciprocal(tensor) * scalar.
// torch's fp32 pow is replaced by the fp64 pow rounded to fp32 (within 1 ulp of torch's).
// Built with -ffp-contract=off (CMakeLists.txt): a fused multiply-add would skip HF's roundings.
#include "kernels/cpu/rope.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.hpp"

namespace sf::cpu {
namespace {

// theta ** (arange(0, dim, 2).float() / dim), element i.
float base_pow(double theta, int64_t dim, int64_t i) {
  const float e = float(2 * i) / float(dim);
  return float(std::pow(double(float(theta)), double(e)));
}

// 1.0 / base_pow: the unscaled table.
float base_inv_freq(double theta, int64_t dim, int64_t i) {
  return 1.0f / base_pow(theta, dim, i);
}

void check(const RopeParams& p) {
  if (p.rotary_dims < 2 || p.rotary_dims % 2 != 0)
    fail(Status::InvalidArgument, "rope: rotary_dims must be even and >= 2, got {}", p.rotary_dims);
  if (!(p.theta > 0.0)) fail(Status::InvalidArgument, "rope: theta must be > 0, got {}", p.theta);
  if (p.scaling != RopeParams::None && !(p.factor > 0.0))
    fail(Status::InvalidArgument, "rope: scaling factor must be > 0, got {}", p.factor);
  if ((p.scaling == RopeParams::Llama3 || p.scaling == RopeParams::Yarn) &&
      p.original_max_positions <= 0)
    fail(Status::InvalidArgument,
         "rope: {} scaling needs original_max_position_embeddings > 0, got {}",
         p.scaling == RopeParams::Llama3 ? "llama3" : "yarn", p.original_max_positions);
  if (p.scaling == RopeParams::Llama3 &&
      !(p.high_freq_factor > p.low_freq_factor && p.low_freq_factor > 0.0))
    fail(Status::InvalidArgument,
         "rope: llama3 scaling needs 0 < low_freq_factor < high_freq_factor, got {} and {}",
         p.low_freq_factor, p.high_freq_factor);
  if (p.scaling > RopeParams::Yarn)
    fail(Status::InvalidArgument, "rope: unknown scaling {}", int(p.scaling));
}

// _compute_llama3_parameters on one element of the base table.
float llama3(const RopeParams& p, float inv) {
  const double old_len = double(p.original_max_positions);
  const float low_wavelen = float(old_len / p.low_freq_factor);  // Python floats, compared as fp32
  const float high_wavelen = float(old_len / p.high_freq_factor);
  const float factor = float(p.factor);
  const float wavelen = (1.0f / inv) * float(2.0 * std::numbers::pi);
  const float scaled = wavelen > low_wavelen ? inv / factor : inv;
  const float t = (1.0f / wavelen) * float(old_len);
  const float smooth =
      (t - float(p.low_freq_factor)) / float(p.high_freq_factor - p.low_freq_factor);
  const float a = (1.0f - smooth) * scaled;
  const float b = smooth * scaled;
  const float smoothed = a / factor + b;
  const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
  return medium ? smoothed : scaled;
}

// find_correction_dim of _compute_yarn_parameters (Python fp64).
double yarn_correction_dim(double rotations, int64_t dim, double theta, int64_t max_positions) {
  return double(dim) * std::log(double(max_positions) / (rotations * 2.0 * std::numbers::pi)) /
         (2.0 * std::log(theta));
}

std::vector<float> yarn(const RopeParams& p) {
  const int64_t dim = p.rotary_dims, half = dim / 2;
  double low = yarn_correction_dim(p.beta_fast, dim, p.theta, p.original_max_positions);
  double high = yarn_correction_dim(p.beta_slow, dim, p.theta, p.original_max_positions);
  if (p.yarn_truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, double(dim - 1));
  if (low == high) high += 0.001;  // HF: "Prevent singularity"
  const float factor = float(p.factor);
  std::vector<float> out(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float pos_freq = base_pow(p.theta, dim, i);
    const float extrapolation = 1.0f / pos_freq;
    const float interpolation = 1.0f / (factor * pos_freq);
    const float ramp = std::clamp((float(i) - float(low)) / float(high - low), 0.0f, 1.0f);
    const float extra_factor = 1.0f - ramp;
    const float a = interpolation * (1.0f - extra_factor);
    const float b = extrapolation * extra_factor;
    out[size_t(i)] = a + b;
  }
  return out;
}

}  // namespace

std::vector<float> rope_inv_freq(const RopeParams& p) {
  check(p);
  if (p.scaling == RopeParams::Yarn) return yarn(p);
  const int64_t half = p.rotary_dims / 2;
  std::vector<float> out(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float inv = base_inv_freq(p.theta, p.rotary_dims, i);
    switch (p.scaling) {
      case RopeParams::Linear:
        out[size_t(i)] = inv / float(p.factor);
        break;
      case RopeParams::Llama3:
        out[size_t(i)] = llama3(p, inv);
        break;
      default:
        out[size_t(i)] = inv;
        break;
    }
  }
  return out;
}

float rope_attention_factor(const RopeParams& p) {
  if (p.scaling != RopeParams::Yarn) return 1.0f;
  if (p.attention_factor > 0.0) return float(p.attention_factor);
  return p.factor <= 1.0 ? 1.0f : float(0.1 * std::log(p.factor) + 1.0);
}

void rope_cos_sin(int64_t pos, std::span<const float> inv_freq, float attention_factor, float* cos,
                  float* sin) {
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const float f = float(pos) * inv_freq[i];
    cos[i] = float(std::cos(double(f))) * attention_factor;
    sin[i] = float(std::sin(double(f))) * attention_factor;
  }
}

void apply_rope_cpu(float* x, int64_t heads, int64_t head_dim, int64_t pos,
                    std::span<const float> inv_freq, float attention_factor) {
  const int64_t half = int64_t(inv_freq.size());
  if (half < 1 || 2 * half > head_dim)
    fail(Status::InvalidArgument,
         "apply_rope_cpu: {} rotary dims for head_dim {}: expected 2..head_dim", 2 * half,
         head_dim);
  std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
  rope_cos_sin(pos, inv_freq, attention_factor, c.data(), s.data());
  for (int64_t h = 0; h < heads; ++h) {
    float* xh = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const float a = xh[i], b = xh[i + half];
      const float ac = a * c[size_t(i)], bs = -b * s[size_t(i)];
      const float bc = b * c[size_t(i)], as = a * s[size_t(i)];
      xh[i] = ac + bs;
      xh[i + half] = bc + as;
    }
  }
}

}  // namespace sf::cpu
