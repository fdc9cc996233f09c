// The fused gate/up weight of a gated MLP (sparse24.hpp, "gated products"): rows 2j, 2j + 1 = gate
// row j, up row j, dense or compressed.
#include <algorithm>
#include <cstring>

#include "core/error.hpp"
#include "sparse24/internal.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::s24 {

void fuse_gate_up(const MatrixView& gate, const MatrixView& up, void* out) {
  auto is_float = [](DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; };
  if (!gate.data || !up.data || !out)
    fail(Status::InvalidArgument, "fuse_gate_up: gate, up and out must not be null");
  if (!is_float(gate.dtype) || gate.dtype != up.dtype)
    fail(Status::InvalidArgument,
         "fuse_gate_up: gate and up must share one of F32/F16/BF16; found {} and {}",
         dtype_name(gate.dtype), dtype_name(up.dtype));
  if (gate.rows <= 0 || gate.cols <= 0 || gate.rows != up.rows || gate.cols != up.cols)
    fail(Status::InvalidArgument,
         "fuse_gate_up: gate [{}, {}] and up [{}, {}] must have the same non-empty shape",
         gate.rows, gate.cols, up.rows, up.cols);
  const size_t row_bytes = size_t(gate.cols) * dtype_size(gate.dtype);
  auto* dst = static_cast<uint8_t*>(out);
  const auto* g = static_cast<const uint8_t*>(gate.data);
  const auto* u = static_cast<const uint8_t*>(up.data);
  for (int64_t j = 0; j < gate.rows; ++j) {
    std::memcpy(dst + size_t(2 * j) * row_bytes, g + size_t(j) * row_bytes, row_bytes);
    std::memcpy(dst + size_t(2 * j + 1) * row_bytes, u + size_t(j) * row_bytes, row_bytes);
  }
}

Compressed fuse_gate_up(const Compressed& gate, const Compressed& up) {
  validate_compressed(gate, "fuse_gate_up (gate)");
  validate_compressed(up, "fuse_gate_up (up)");
  if (gate.dtype != up.dtype || gate.rows != up.rows || gate.cols != up.cols)
    fail(Status::InvalidArgument,
         "fuse_gate_up: gate ({} [{}, {}]) and up ({} [{}, {}]) must agree in dtype and shape",
         dtype_name(gate.dtype), gate.rows, gate.cols, dtype_name(up.dtype), up.rows, up.cols);
  Compressed c;
  c.dtype = gate.dtype;
  c.rows = 2 * gate.rows;
  c.cols = gate.cols;
  c.rows_padded = (c.rows + 15) / 16 * 16;
  c.cols_padded = gate.cols_padded;
  const int64_t kblocks = c.cols_padded / 32;
  const size_t row_bytes = size_t(c.cols_padded / 2) * dtype_size(c.dtype);
  c.values.assign(size_t(c.rows_padded) * row_bytes, 0);
  c.meta.assign(size_t(c.rows_padded / 16) * size_t(kblocks) * 16, kPaddingMetaWord);
  // Rows r and r ^ 8 share metadata words, so a 16-row block of the output belongs to one thread.
#pragma omp parallel for schedule(static)
  for (int64_t rb = 0; rb < c.rows_padded / 16; ++rb)
    for (int64_t r = 16 * rb; r < std::min(16 * rb + 16, c.rows); ++r) {
      const Compressed& src = (r & 1) ? up : gate;
      const int64_t sr = r / 2;
      std::memcpy(c.values.data() + size_t(r) * row_bytes,
                  src.values.data() + size_t(sr) * row_bytes, row_bytes);
      for (int64_t kb = 0; kb < kblocks; ++kb)
        set_row_block_indices(c.meta.data(), c.cols_padded, r, kb,
                              row_block_indices(src.meta.data(), src.cols_padded, sr, kb));
    }
  return c;
}

}  // namespace sf::s24
