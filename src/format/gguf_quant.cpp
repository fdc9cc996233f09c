// Block layouts (ggml-common.h; offsets in bytes, fp16 values little-endian):
//   Q4_0 (32 weights, 18 B): d, qs[16]            y[j] = (lo(qs[j]) - 8) * d, y[j+16] = hi ...
//   Q4_1 (32 weights, 20 B): d, m, qs[16]         y = q * d + m
//   Q8_0 (32 weights, 34 B): d, int8 qs[32]       y = qs[j] * d
//   Q4_K (256 weights, 144 B): d, dmin, scales[12], qs[128]
//   Q5_K (256 weights, 176 B): d, dmin, scales[12], qh[32], qs[128]
//   Q6_K (256 weights, 210 B): ql[128], qh[64], int8 scales[16], d
// The K types split a block into sub-blocks (8 of 32 weights for Q4_K/Q5_K, 16 of 16 for Q6_K),
// each with its own integer scale (and min) multiplied by the block's fp16 d (and dmin).
//
// This file is compiled with -ffp-contract=off (src/format/CMakeLists.txt): `q * d + m` must round
// twice, as ggml's reference and numpy do, or an FMA-capable target would differ in the last bit.
#include "format/gguf_quant.hpp"

#include <array>
#include <bit>
#include <cstring>

#include "core/dtype.hpp"
#include "core/error.hpp"

namespace sf::format {

namespace {

// F32 tensors are copied as they lie in the file; GGUF files read here are little-endian.
static_assert(std::endian::native == std::endian::little,
              "the GGUF reader assumes a little-endian host");

constexpr int64_t kQK = 32;    // block of the legacy types
constexpr int64_t kQKK = 256;  // super-block of the K types

constexpr std::array<GgufTypeInfo, 9> kTypes = {{
    {GgufType::F32, "F32", 1, 4},
    {GgufType::F16, "F16", 1, 2},
    {GgufType::BF16, "BF16", 1, 2},
    {GgufType::Q8_0, "Q8_0", kQK, 2 + kQK},
    {GgufType::Q4_0, "Q4_0", kQK, 2 + kQK / 2},
    {GgufType::Q4_1, "Q4_1", kQK, 2 + 2 + kQK / 2},
    {GgufType::Q4_K, "Q4_K", kQKK, 2 + 2 + 12 + kQKK / 2},
    {GgufType::Q5_K, "Q5_K", kQKK, 2 + 2 + 12 + kQKK / 8 + kQKK / 2},
    {GgufType::Q6_K, "Q6_K", kQKK, kQKK / 2 + kQKK / 4 + kQKK / 16 + 2},
}};

// ggml's enum ggml_type, for naming types this reader does not support. Gaps are numbers ggml
// retired (Q4_2, Q4_3, the Q4_0_4_4-style repacked types).
constexpr std::string_view kGgmlNames[] = {
    "F32",     "F16",   "Q4_0",   "Q4_1",  "",      "",       "Q5_0", "Q5_1",    "Q8_0",
    "Q8_1",    "Q2_K",  "Q3_K",   "Q4_K",  "Q5_K",  "Q6_K",   "Q8_K", "IQ2_XXS", "IQ2_XS",
    "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8",   "I16",     "I32",
    "I64",     "F64",   "IQ1_M",  "BF16",  "",      "",       "",     "TQ1_0",   "TQ2_0",
    "",        "",      "",       "MXFP4", "NVFP4", "Q1_0",
};

float fp16_at(const uint8_t* p) {
  return half_to_float(uint16_t(p[0] | p[1] << 8));
}

void block_q4_0(const uint8_t* b, float* y) {
  const float d = fp16_at(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = float(int(qs[j] & 0x0f) - 8) * d;
    y[j + kQK / 2] = float(int(qs[j] >> 4) - 8) * d;
  }
}

void block_q4_1(const uint8_t* b, float* y) {
  const float d = fp16_at(b), m = fp16_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = float(qs[j] & 0x0f) * d + m;
    y[j + kQK / 2] = float(qs[j] >> 4) * d + m;
  }
}

void block_q8_0(const uint8_t* b, float* y) {
  const float d = fp16_at(b);
  for (int j = 0; j < kQK; ++j) y[j] = float(int8_t(b[2 + j])) * d;
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block: the first four sit in the
// low 6 bits of bytes 0-3 (scales) and 4-7 (mins); the last four take their low 4 bits from
// bytes 8-11 and their top 2 bits from the spare high bits of bytes 0-7.
void scale_min_k4(int j, const uint8_t* s, int& sc, int& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

void block_q4_k(const uint8_t* b, float* y) {
  const float d = fp16_at(b), dmin = fp16_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int j = 0; j < 8; j += 2, q += 32) {  // 64 weights: low nibbles, then high nibbles
    int sc, m;
    scale_min_k4(j, scales, sc, m);
    const float d1 = d * float(sc), m1 = dmin * float(m);
    scale_min_k4(j + 1, scales, sc, m);
    const float d2 = d * float(sc), m2 = dmin * float(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0x0f) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
  }
}

void block_q5_k(const uint8_t* b, float* y) {
  const float d = fp16_at(b), dmin = fp16_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;  // bit j of qh[l] is the fifth bit of weight l of sub-block j
  const uint8_t* ql = b + 48;
  for (int j = 0; j < 8; j += 2, ql += 32) {
    int sc, m;
    scale_min_k4(j, scales, sc, m);
    const float d1 = d * float(sc), m1 = dmin * float(m);
    scale_min_k4(j + 1, scales, sc, m);
    const float d2 = d * float(sc), m2 = dmin * float(m);
    const uint8_t u1 = uint8_t(1u << j), u2 = uint8_t(2u << j);
    for (int l = 0; l < 32; ++l) *y++ = d1 * float((ql[l] & 0x0f) + ((qh[l] & u1) ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
  }
}

void block_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = fp16_at(b + 208);
  // Two halves of 128 weights; weight l of each 32-wide quarter k takes a nibble of ql and two
  // bits (2k, 2k+1) of qh[l], and the scale of its group of 16.
  for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, y += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = int((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = int((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * float(sc[is]) * float(q1);
      y[l + 32] = d * float(sc[is + 2]) * float(q2);
      y[l + 64] = d * float(sc[is + 4]) * float(q3);
      y[l + 96] = d * float(sc[is + 6]) * float(q4);
    }
  }
}

template <void (*Block)(const uint8_t*, float*)>
void blocks(const uint8_t* src, int64_t n, float* dst, int64_t block_size, int64_t block_bytes) {
  for (int64_t i = 0; i < n / block_size; ++i) Block(src + i * block_bytes, dst + i * block_size);
}

}  // namespace

std::span<const GgufTypeInfo> gguf_supported_types() {
  return kTypes;
}

std::string gguf_supported_type_names() {
  std::string s;
  for (const auto& t : kTypes) s += fmt::format("{}{}", s.empty() ? "" : ", ", t.name);
  return s;
}

const GgufTypeInfo* gguf_find_type(uint32_t type) {
  for (const auto& t : kTypes)
    if (uint32_t(t.type) == type) return &t;
  return nullptr;
}

const GgufTypeInfo& gguf_type_info(GgufType type) {
  if (const GgufTypeInfo* t = gguf_find_type(uint32_t(type))) return *t;
  fail(Status::InvalidArgument, "GGUF tensor type {} is not one SparseFlow reads ({})",
       uint32_t(type), gguf_supported_type_names());
}

std::string_view ggml_type_name(uint32_t type) {
  return type < std::size(kGgmlNames) ? kGgmlNames[type] : std::string_view();
}

void dequantize_row(GgufType t, const uint8_t* src, int64_t n, float* dst) {
  const GgufTypeInfo& info = gguf_type_info(t);
  if (n < 0 || n % info.block_size != 0)
    fail(Status::InvalidArgument,
         "dequantize_row: {} weights of {}, expected a non-negative multiple of its block size {}",
         n, info.name, info.block_size);
  const int64_t bs = info.block_size, bb = info.block_bytes;
  switch (t) {
    case GgufType::F32:
      if (n) std::memcpy(dst, src, size_t(n) * sizeof(float));
      return;
    case GgufType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_at(src + 2 * i);
      return;
    case GgufType::BF16:
      for (int64_t i = 0; i < n; ++i)
        dst[i] = bf16_to_float(uint16_t(src[2 * i] | src[2 * i + 1] << 8));
      return;
    case GgufType::Q8_0:
      return blocks<block_q8_0>(src, n, dst, bs, bb);
    case GgufType::Q4_0:
      return blocks<block_q4_0>(src, n, dst, bs, bb);
    case GgufType::Q4_1:
      return blocks<block_q4_1>(src, n, dst, bs, bb);
    case GgufType::Q4_K:
      return blocks<block_q4_k>(src, n, dst, bs, bb);
    case GgufType::Q5_K:
      return blocks<block_q5_k>(src, n, dst, bs, bb);
    case GgufType::Q6_K:
      return blocks<block_q6_k>(src, n, dst, bs, bb);
  }
}

}  // namespace sf::format
