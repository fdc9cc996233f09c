// What every engine (CPU, CUDA) checks of the tensors a model description implies, and the
// description's activation as the products' epilogue names it: one wording of each error.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "arch/model_desc.hpp"
#include "model/weights.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::model {

std::string shape_str(const std::vector<int64_t>& s);  // "[576, 49152]"
// Throws Error(Format) unless t has shape `want` and a float dtype.
void expect_shape(const Tensor& t, const std::string& name, const std::vector<int64_t>& want);
s24::Activation s24_activation(arch::Act a);

}  // namespace sf::model
