// The GGUF tensor types SparseFlow reads, and their dequantization to fp32.
//
// A quantized type packs `block_size` consecutive weights of a row into `block_bytes` bytes: fp16
// scale(s), then the packed integers. Dequantization follows ggml's reference dequantizers
// (dequantize_row_* in ggml-quants.c, and gguf-py's gguf.quants.dequantize): the fp16 scales are
// widened to fp32 exactly, then the same fp32 operations run in the same order, each rounded on
// its own (never fused into an FMA), so the result is bit-identical to theirs.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace sf::format {

// Values are ggml's type numbers (enum ggml_type), as stored in a GGUF tensor info.
enum class GgufType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30,
};

struct GgufTypeInfo {
  GgufType type;
  std::string_view name;  // as ggml spells it: "Q4_K"
  int64_t block_size;     // weights per block
  int64_t block_bytes;    // bytes per block
  double bits_per_weight() const { return 8.0 * double(block_bytes) / double(block_size); }
};

// The types SparseFlow reads, in the order messages list them.
std::span<const GgufTypeInfo> gguf_supported_types();
// "F32, F16, BF16, Q8_0, ...": for messages that list what is supported.
std::string gguf_supported_type_names();
// nullptr for a type number SparseFlow does not read (known to ggml or not).
const GgufTypeInfo* gguf_find_type(uint32_t type);
// Throws Error(InvalidArgument) for a value outside the enum.
const GgufTypeInfo& gguf_type_info(GgufType type);
// ggml's name for any type number it defines ("Q5_0", "IQ2_XS"), or "" for one it does not.
std::string_view ggml_type_name(uint32_t type);

// Dequantizes n consecutive weights of type t (n a multiple of its block size) from src, which
// holds n / block_size blocks, into dst. Throws Error(InvalidArgument) when n is negative or not
// a multiple of the block size.
void dequantize_row(GgufType t, const uint8_t* src, int64_t n, float* dst);

}  // namespace sf::format
