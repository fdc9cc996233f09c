// Helpers shared by the sparse24 sources (not part of the public contract).
#pragma once
#include <cstddef>
#include <cstdint>

#include "sparse24/sparse24.hpp"

namespace sf::s24 {

// Throws Error(InvalidArgument / UnsupportedShape) unless w is a non-empty F32/F16/BF16 matrix
// with cols % 4 == 0. `what` names the calling function in the message.
void check_shape(const MatrixView& w, const char* what);
// True when element i is numerically nonzero (NaN and Inf included, -0.0 excluded).
bool is_nonzero_bits(const void* data, DType dtype, size_t i);

// Throws Error(InvalidArgument) unless c's sizes agree with each other (as compress makes them).
void validate_compressed(const Compressed& c, const char* what);

// Where the 2-bit index pair of group g (columns [4g, 4g+4)) of row r lives in the metadata:
// word index into Compressed::meta and the bit offset of its 4-bit nibble (i0 | i1 << 2).
struct MetaPos {
  size_t word;
  int shift;
};
inline MetaPos meta_pos(int64_t cols_padded, int64_t r, int64_t g) {
  const int64_t rb = r >> 4, rr = r & 15, kb = g >> 3, gc = g & 7;
  const size_t tile = size_t(rb * (cols_padded / 32) + kb) * 16;
  return {tile + size_t(2 * (rr & 7) + (gc >> 2)), int(16 * (rr >> 3) + 4 * (gc & 3))};
}

// The 16 index pairs of row r in 32-column block kb as one word: bits [2j, 2j+2) hold the in-group
// index of kept value j (values[r][16 kb + j]), whose column is 32 kb + 4 (j / 2) + that index.
inline uint32_t row_block_indices(const uint32_t* meta, int64_t cols_padded, int64_t r, int64_t kb) {
  const int64_t rr = r & 15;
  const uint32_t* t = meta + size_t((r >> 4) * (cols_padded / 32) + kb) * 16 + 2 * (rr & 7);
  const int sh = int(16 * (rr >> 3));
  return ((t[0] >> sh) & 0xffffu) | (((t[1] >> sh) & 0xffffu) << 16);
}

// The inverse of row_block_indices: writes row r's 16 index pairs of block kb, leaving row r ^ 8's
// halves of the shared words as they are.
inline void set_row_block_indices(uint32_t* meta, int64_t cols_padded, int64_t r, int64_t kb,
                                  uint32_t word) {
  const int64_t rr = r & 15;
  uint32_t* t = meta + size_t((r >> 4) * (cols_padded / 32) + kb) * 16 + 2 * (rr & 7);
  const int sh = int(16 * (rr >> 3));
  const uint32_t keep = ~(0xffffu << sh);
  t[0] = (t[0] & keep) | ((word & 0xffffu) << sh);
  t[1] = (t[1] & keep) | ((word >> 16) << sh);
}

// Every group stores indices (0, 1) until compress overwrites it: nibble 0b0100 in all 8 places.
constexpr uint32_t kPaddingMetaWord = 0x44444444u;

}  // namespace sf::s24
