// Reading the 2-D floating tensors of a safetensors file as matrices the 2:4 library accepts.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "format/safetensors.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::cli {

// A tensor the 2:4 commands look at: 2-D with a floating dtype (F32, F16, BF16, F64).
bool is_2d_float(const st::TensorInfo& t);

// Why a 2-D float tensor cannot be 2:4 at all, or "" when it can: its last dimension is not a
// multiple of 4, or it has no elements.
std::string not_sparsifiable_reason(const st::TensorInfo& t);

// Bytes copied into owned storage, aligned for any dtype (mmap'd tensor data need not be).
std::vector<uint8_t> copy_bytes(std::span<const uint8_t> bytes);

// A [rows, cols] view for the 2:4 library. The library takes F32/F16/BF16; F64 is given to it as
// F32 (`storage` holds the narrowed copy), which can only merge values closer than fp32 resolves.
struct MatrixCopy {
  s24::MatrixView view;
  std::vector<uint8_t> storage;
};
// For masks: values as close to the tensor's as the library's dtypes allow.
MatrixCopy values_matrix(std::span<const uint8_t> bytes, DType dtype, int64_t rows, int64_t cols);
// For validation: zero stays zero, NaN stays NaN, every other value is nonzero (exact for F64 too,
// where narrowing would turn tiny values into zeros). May view `bytes` in place: keep them alive.
MatrixCopy nonzero_matrix(std::span<const uint8_t> bytes, DType dtype, int64_t rows, int64_t cols);

// Element i of a floating tensor as double.
double load_as_double(const void* data, DType dtype, size_t i);

}  // namespace sf::cli
