#include "core/dtype.hpp"

#include <array>
#include <cmath>

namespace sf {

namespace {
struct Named { DType type; std::string_view st_name; std::string_view cli_name; };
constexpr std::array<Named, 10> kNames{{
    {DType::F32, "F32", "fp32"}, {DType::F16, "F16", "fp16"}, {DType::BF16, "BF16", "bf16"},
    {DType::F64, "F64", "fp64"}, {DType::I8, "I8", "i8"},     {DType::U8, "U8", "u8"},
    {DType::I16, "I16", "i16"},  {DType::I32, "I32", "i32"},  {DType::I64, "I64", "i64"},
    {DType::BOOL, "BOOL", "bool"},
}};
}  // namespace

std::string_view dtype_name(DType t) {
  for (const auto& n : kNames)
    if (n.type == t) return n.st_name;
  return "?";
}

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& n : kNames)
    if (n.st_name == name) return n.type;
  return std::nullopt;
}

std::optional<DType> dtype_from_cli(std::string_view name) {
  for (const auto& n : kNames)
    if (n.cli_name == name) return n.type;
  if (name == "float32" || name == "f32") return DType::F32;
  if (name == "float16" || name == "half" || name == "f16") return DType::F16;
  if (name == "bfloat16") return DType::BF16;
  return std::nullopt;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return bits_to_float(sign);
    // Subnormal: value = mant * 2^-24, exact in fp32.
    float v = std::ldexp(float(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0));
  return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t float_to_half(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // quiet NaN
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: Inf
  if (abs < 0x38800000u) {
    // Result is subnormal or zero in fp16: round abs * 2^24 to an integer, nearest even.
    const float scaled = bits_to_float(abs) * 16777216.0f;  // exact: a power-of-two scale
    return uint16_t(sign | uint16_t(std::nearbyint(scaled)));
  }
  // Normal: re-bias the exponent, round the 13 dropped mantissa bits to nearest even.
  uint32_t r = abs - 0x38000000u;
  r += 0x0fffu + ((r >> 13) & 1u);
  return uint16_t(sign | uint16_t(r >> 13));
}

}  // namespace sf
