#include "format/neuron_bundles.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/error.hpp"

namespace sf::format {

BundleLayout BundleLayout::make(int64_t hidden, DType dtype) {
  if (hidden <= 0 || (dtype != DType::F16 && dtype != DType::BF16 && dtype != DType::F32))
    fail(Status::InvalidArgument,
         "neuron bundles need hidden > 0 and dtype F16, BF16 or F32; got hidden {} and {}", hidden,
         dtype_name(dtype));
  BundleLayout l;
  l.hidden = hidden;
  l.dtype = dtype;
  l.elem = dtype_size(dtype);
  l.fc1_offset = 0;
  l.fc2_offset = uint64_t(hidden) * l.elem;
  l.bias_offset = 2 * uint64_t(hidden) * l.elem;
  l.stride = (l.bias_offset + l.elem + kBundleAlign - 1) / kBundleAlign * kBundleAlign;
  return l;
}

void pack_bundles(const BundleLayout& L, int64_t ffn, const void* w1, const void* b1,
                  const void* w2, std::span<const int32_t> order, uint8_t* out) {
  if (!order.empty() && int64_t(order.size()) != ffn)
    fail(Status::InvalidArgument, "pack_bundles: {} order entries for {} neurons", order.size(),
         ffn);
  const int64_t d = L.hidden;
  const size_t e = L.elem;
  const auto* w1b = static_cast<const uint8_t*>(w1);
  const auto* w2b = static_cast<const uint8_t*>(w2);
  const auto* b1b = static_cast<const uint8_t*>(b1);
#pragma omp parallel for schedule(static) if (ffn * d > (1 << 16))
  for (int64_t b = 0; b < ffn; ++b) {
    const int64_t j = order.empty() ? b : order[size_t(b)];
    uint8_t* dst = out + uint64_t(b) * L.stride;
    std::memcpy(dst + L.fc1_offset, w1b + uint64_t(j) * uint64_t(d) * e, size_t(d) * e);
    uint8_t* col = dst + L.fc2_offset;
    // fc2 is [d, ffn] row-major: column j is strided; this transpose is the one copy per convert.
    for (int64_t i = 0; i < d; ++i)
      std::memcpy(col + size_t(i) * e, w2b + (uint64_t(i) * uint64_t(ffn) + uint64_t(j)) * e, e);
    if (b1b)
      std::memcpy(dst + L.bias_offset, b1b + uint64_t(j) * e, e);
    else
      std::memset(dst + L.bias_offset, 0, e);
    std::memset(dst + L.bias_offset + e, 0, L.stride - L.bias_offset - e);
  }
}

std::vector<int32_t> hotness_order(std::span<const float> rates) {
  std::vector<int32_t> order(rates.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return rates[size_t(a)] > rates[size_t(b)]; });
  return order;
}

std::string ffn_neurons_name(int64_t layer) {
  return fmt::format("model.decoder.layers.{}.ffn_neurons", layer);
}
std::string neuron_order_name(int64_t layer) {
  return fmt::format("model.decoder.layers.{}.neuron_order", layer);
}
std::string firing_rate_name(int64_t layer) {
  return fmt::format("profile.layers.{}.firing_rate", layer);
}
std::string predictor_name(int64_t layer, const char* part) {
  return fmt::format("predictor.layers.{}.{}", layer, part);
}

}  // namespace sf::format
