// compress / decompress / group_indices: the values + metadata layout of docs/SPARSE24.md.
#include <algorithm>
#include <cstring>

#include "core/error.hpp"
#include "sparse24/internal.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::s24 {

namespace {

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Nonzero exactly where a 4-bit field of w is not i0 | i1 << 2 with i0 < i1. Per field,
// d = (i1 + 4) - i0 lies in 1..7, so the subtraction never borrows from the next field, and
// i0 < i1 exactly when d >= 5: bit 2 set and bit 0 or bit 1 set. Branch-free, so the loop over
// the words vectorises.
constexpr uint32_t bad_fields(uint32_t w) {
  const uint32_t lo = w & 0x33333333u, hi = (w >> 2) & 0x33333333u;
  const uint32_t d = (hi | 0x44444444u) - lo;
  return (~d & 0x44444444u) | (~(d | (d >> 1)) & 0x11111111u);
}

constexpr bool bad_fields_matches_definition() {
  for (uint32_t f = 0; f < 16; ++f)
    for (int shift = 0; shift < 32; shift += 4) {
      const uint32_t w = (kPaddingMetaWord & ~(0xfu << shift)) | (f << shift);
      if ((bad_fields(w) != 0) != ((f & 3) >= (f >> 2))) return false;
    }
  return true;
}
static_assert(bad_fields_matches_definition());

inline bool raw_bits_nonzero(const uint8_t* p, size_t es) {
  for (size_t b = 0; b < es; ++b)
    if (p[b] != 0) return true;
  return false;
}

}  // namespace

Compressed compress(const MatrixView& w) {
  check_shape(w, "compress");
  if (auto v = find_violation(w))
    fail(Status::InvalidArgument,
         "compress: expected a 2:4 matrix (at most 2 nonzeros in every group of 4 columns), but "
         "row {} group {} (columns {}..{}) has {} nonzeros; prune it first (magnitude_mask or "
         "wanda_mask, then apply_mask)",
         v->row, v->group, 4 * v->group, 4 * v->group + 3, v->nonzeros);
  Compressed c;
  c.dtype = w.dtype;
  c.rows = w.rows;
  c.cols = w.cols;
  c.rows_padded = round_up(w.rows, 16);
  c.cols_padded = round_up(w.cols, 32);
  const size_t es = dtype_size(w.dtype);
  const size_t half = size_t(c.cols_padded / 2);
  c.values.assign(size_t(c.rows_padded) * half * es, 0);
  c.meta.assign(size_t(c.rows_padded / 16) * size_t(c.cols_padded / 32) * 16, kPaddingMetaWord);
  const auto* src = static_cast<const uint8_t*>(w.data);
  const int64_t groups = w.cols / 4;
  // Rows r and r + 8 of a tile share metadata words, so each 16-row block belongs to one thread.
#pragma omp parallel for schedule(static)
  for (int64_t rb = 0; rb < c.rows_padded / 16; ++rb) {
    for (int64_t r = 16 * rb; r < std::min(16 * rb + 16, w.rows); ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const size_t base = size_t(r) * size_t(w.cols) + size_t(4 * g);
      // Stored positions, by priority: the nonzeros (at most 2), then signed zeros (so -0.0
      // survives the round trip whenever it fits), then the lowest free positions.
      bool take[4] = {false, false, false, false};
      int n = 0;
      for (int i = 0; i < 4 && n < 2; ++i)
        if (is_nonzero_bits(w.data, w.dtype, base + i)) take[i] = true, ++n;
      for (int i = 0; i < 4 && n < 2; ++i)
        if (!take[i] && raw_bits_nonzero(src + (base + i) * es, es)) take[i] = true, ++n;
      for (int i = 0; i < 4 && n < 2; ++i)
        if (!take[i]) take[i] = true, ++n;
      int idx[2], k = 0;
      for (int i = 0; i < 4; ++i)
        if (take[i]) idx[k++] = i;
      uint8_t* dst = c.values.data() + (size_t(r) * half + size_t(2 * g)) * es;
      std::memcpy(dst, src + (base + size_t(idx[0])) * es, es);
      std::memcpy(dst + es, src + (base + size_t(idx[1])) * es, es);
      const MetaPos p = meta_pos(c.cols_padded, r, g);
      const uint32_t nibble = uint32_t(idx[0]) | (uint32_t(idx[1]) << 2);
      c.meta[p.word] = (c.meta[p.word] & ~(0xfu << p.shift)) | (nibble << p.shift);
    }
    }
  }
  return c;
}

namespace {

void check_compressed(const Compressed& c, const char* what) {
  const size_t es = dtype_size(c.dtype);
  const bool ok_dtype = c.dtype == DType::F32 || c.dtype == DType::F16 || c.dtype == DType::BF16;
  if (!ok_dtype || c.rows <= 0 || c.cols <= 0 || c.cols % 4 != 0 || c.rows_padded % 16 != 0 ||
      c.cols_padded % 32 != 0 || c.rows_padded < c.rows || c.cols_padded < c.cols ||
      c.rows_padded - c.rows >= 16 || c.cols_padded - c.cols >= 32 ||
      c.values.size() != size_t(c.rows_padded) * size_t(c.cols_padded / 2) * es ||
      c.meta.size() != size_t(c.rows_padded / 16) * size_t(c.cols_padded / 32) * 16)
    fail(Status::InvalidArgument,
         "{}: the Compressed object is inconsistent (dtype {}, [{}, {}] padded to [{}, {}], {} value "
         "bytes, {} metadata words); build it with compress() or check the loader",
         what, dtype_name(c.dtype), c.rows, c.cols, c.rows_padded, c.cols_padded, c.values.size(),
         c.meta.size());
}

}  // namespace

void validate_compressed(const Compressed& c, const char* what) { check_compressed(c, what); }

void decompress(const Compressed& c, void* out) {
  check_compressed(c, "decompress");
  if (out == nullptr) fail(Status::InvalidArgument, "decompress: the output pointer is null");
  const size_t es = dtype_size(c.dtype);
  const size_t half = size_t(c.cols_padded / 2);
  auto* dst = static_cast<uint8_t*>(out);
  const int64_t groups = c.cols / 4;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < c.rows; ++r) {
    uint8_t* row = dst + size_t(r) * size_t(c.cols) * es;
    std::memset(row, 0, size_t(c.cols) * es);
    for (int64_t g = 0; g < groups; ++g) {
      const MetaPos p = meta_pos(c.cols_padded, r, g);
      const uint32_t nib = (c.meta[p.word] >> p.shift) & 0xfu;
      const uint8_t* v = c.values.data() + (size_t(r) * half + size_t(2 * g)) * es;
      std::memcpy(row + size_t(4 * g + (nib & 3)) * es, v, es);
      std::memcpy(row + size_t(4 * g + (nib >> 2)) * es, v + es, es);
    }
  }
}

std::pair<int, int> group_indices(const Compressed& c, int64_t row, int64_t group) {
  check_compressed(c, "group_indices");
  if (row < 0 || row >= c.rows_padded || group < 0 || group >= c.cols_padded / 4)
    fail(Status::InvalidArgument,
         "group_indices: expected row in [0, {}) and group in [0, {}), found row {} group {}",
         c.rows_padded, c.cols_padded / 4, row, group);
  const MetaPos p = meta_pos(c.cols_padded, row, group);
  const uint32_t nib = (c.meta[p.word] >> p.shift) & 0xfu;
  return {int(nib & 3), int(nib >> 2)};
}

std::optional<BadMetadata> find_bad_metadata(std::span<const uint32_t> meta, int64_t rows_padded,
                                             int64_t cols_padded) {
  if (rows_padded <= 0 || cols_padded <= 0 || rows_padded % 16 != 0 || cols_padded % 32 != 0 ||
      meta.size() != size_t(rows_padded / 16) * size_t(cols_padded / 32) * 16)
    fail(Status::InvalidArgument,
         "find_bad_metadata: expected a padded shape of multiples of [16, 32] and rows * cols / 32 "
         "words, found [{}, {}] and {} words",
         rows_padded, cols_padded, meta.size());
  const uint32_t* m = meta.data();
  const int64_t words = int64_t(meta.size());
  uint32_t bad = 0;
#pragma omp parallel for reduction(| : bad) schedule(static) if (words > (1 << 20))
  for (int64_t i = 0; i < words; ++i) bad |= bad_fields(m[i]);
  if (bad == 0) return std::nullopt;
  // Damaged: find the first bad group in row-major order (the words are in tile order).
  for (int64_t r = 0; r < rows_padded; ++r)
    for (int64_t g = 0; g < cols_padded / 4; ++g) {
      const MetaPos p = meta_pos(cols_padded, r, g);
      const uint32_t nib = (m[p.word] >> p.shift) & 0xfu;
      if ((nib & 3) >= (nib >> 2)) return BadMetadata{r, g, int(nib & 3), int(nib >> 2)};
    }
  fail(Status::Internal, "find_bad_metadata: a word failed the fast check but no group is bad");
}

std::optional<BadMetadata> find_bad_metadata(const Compressed& c) {
  check_compressed(c, "find_bad_metadata");
  return find_bad_metadata(c.meta, c.rows_padded, c.cols_padded);
}

}  // namespace sf::s24
