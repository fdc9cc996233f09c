// The rotary parameters of a model description, in the form the rotary kernels take
// (kernels/cpu/rope.hpp), for the CPU and CUDA engines alike.
#pragma once
#include "arch/model_desc.hpp"
#include "kernels/cpu/rope.hpp"

namespace sf::model {

inline cpu::RopeParams rope_params(const arch::ModelDesc& d) {
  const arch::Rope& r = d.rope;
  cpu::RopeParams p;
  p.theta = r.theta;
  p.rotary_dims = r.dims;
  switch (r.scaling) {
    case arch::RopeScaling::None:
      p.scaling = cpu::RopeParams::None;
      break;
    case arch::RopeScaling::Linear:
      p.scaling = cpu::RopeParams::Linear;
      break;
    case arch::RopeScaling::Llama3:
      p.scaling = cpu::RopeParams::Llama3;
      break;
    case arch::RopeScaling::Yarn:
      p.scaling = cpu::RopeParams::Yarn;
      break;
  }
  p.factor = r.factor;
  p.low_freq_factor = r.low_freq_factor;
  p.high_freq_factor = r.high_freq_factor;
  p.original_max_positions = r.original_max_positions;
  p.beta_fast = r.beta_fast;
  p.beta_slow = r.beta_slow;
  p.attention_factor = r.attention_factor;
  return p;
}

}  // namespace sf::model
