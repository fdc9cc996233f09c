#include "cli/tensor_view.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

namespace sf::cli {

bool is_2d_float(const st::TensorInfo& t) {
  return t.shape.size() == 2 && dtype_is_float(t.dtype);
}

std::string not_sparsifiable_reason(const st::TensorInfo& t) {
  if (t.numel() == 0) return "empty";
  if (t.shape[1] % 4 != 0)
    return fmt::format("last dimension {} is not a multiple of 4", t.shape[1]);
  return "";
}

std::vector<uint8_t> copy_bytes(std::span<const uint8_t> bytes) {
  return std::vector<uint8_t>(bytes.begin(), bytes.end());  // operator new aligns to 16 bytes
}

double load_as_double(const void* data, DType dtype, size_t i) {
  if (dtype == DType::F64) {
    double v;
    std::memcpy(&v, static_cast<const uint8_t*>(data) + i * 8, 8);
    return v;
  }
  return load_as_float(data, dtype, i);
}

MatrixCopy values_matrix(std::span<const uint8_t> bytes, DType dtype, int64_t rows, int64_t cols) {
  MatrixCopy m;
  if (dtype == DType::F64) {
    const size_t n = bytes.size() / 8;
    m.storage.resize(n * 4);
    for (size_t i = 0; i < n; ++i)
      store_from_float(m.storage.data(), DType::F32, i,
                       float(load_as_double(bytes.data(), dtype, i)));
    dtype = DType::F32;
  } else {
    m.storage = copy_bytes(bytes);
  }
  m.view = {m.storage.data(), dtype, rows, cols};
  return m;
}

MatrixCopy nonzero_matrix(std::span<const uint8_t> bytes, DType dtype, int64_t rows, int64_t cols) {
  MatrixCopy m;
  if (dtype != DType::F64) {
    if (reinterpret_cast<uintptr_t>(bytes.data()) % dtype_size(dtype) != 0)
      return values_matrix(bytes, dtype, rows, cols);
    m.view = {bytes.data(), dtype, rows, cols};  // aligned: read the mapping in place
    return m;
  }
  const size_t n = bytes.size() / 8;
  m.storage.resize(n * 4);
  for (size_t i = 0; i < n; ++i) {
    const double v = load_as_double(bytes.data(), dtype, i);
    store_from_float(m.storage.data(), DType::F32, i, std::isnan(v) ? NAN : v != 0 ? 1.0f : 0.0f);
  }
  m.view = {m.storage.data(), DType::F32, rows, cols};
  return m;
}

}  // namespace sf::cli
