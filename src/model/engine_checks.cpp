#include "model/engine_checks.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.hpp"

namespace sf::model {

std::string shape_str(const std::vector<int64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

void expect_shape(const Tensor& t, const std::string& name, const std::vector<int64_t>& want) {
  if (t.shape != want)
    fail(Status::Format,
         "tensor {} has shape {}, expected {} from the model's config. The checkpoint and its "
         "config.json disagree: re-export the model or fix config.json.",
         name, shape_str(t.shape), shape_str(want));
  if (!dtype_is_float(t.dtype))
    fail(Status::Format, "tensor {} has dtype {}, expected a float type (F32, F16 or BF16).", name,
         dtype_name(t.dtype));
}

s24::Activation s24_activation(arch::Act a) {
  switch (a) {
    case arch::Act::ReLU:
      return s24::Activation::ReLU;
    case arch::Act::GELU:
      return s24::Activation::GELU;
    case arch::Act::GELUTanh:
      return s24::Activation::GELUTanh;
    case arch::Act::SiLU:
      return s24::Activation::SiLU;
  }
  return s24::Activation::ReLU;
}

}  // namespace sf::model
