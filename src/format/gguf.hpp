// GGUF, llama.cpp's model file (ggml docs/gguf.md), versions 2 and 3, little-endian:
//
//   u32 magic "GGUF", u32 version, u64 tensor_count, u64 metadata_kv_count
//   metadata_kv_count x { string key, u32 value_type, value }
//   tensor_count x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   zero padding up to a multiple of general.alignment (default 32): the data section starts here
//   tensor data, each tensor at `offset` bytes from the data section, a multiple of the alignment
//
// A string is a u64 byte length and that many bytes (no terminator). An array value is u32
// element type, u64 count, then the elements. ne[0] is the fastest-varying dimension, so the
// PyTorch shape is ne reversed, and a quantized tensor's blocks run along ne[0].
//
// Opening memory-maps the file and validates everything before anything is returned: magic and
// version, every count and length against the bytes that remain, value and tensor types, shapes
// (1 to 4 dimensions, element counts within int64, ne[0] a multiple of the type's block size),
// offsets aligned and inside the file, no two tensors overlapping, no name or key given twice.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format/gguf_quant.hpp"

namespace sf::format {

inline constexpr uint64_t kGgufDefaultAlignment = 32;

// Values are the GGUF value_type numbers.
enum class GgufValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
std::string_view gguf_value_type_name(GgufValueType t);  // "uint32", "string", ...

// One metadata value. The accessors demand a kind of value and throw Error(Format) naming the file,
// the key and the type found when the value is of another kind: as_int() takes any integer type,
// as_float() float32 or float64, and so on.
class GgufValue {
 public:
  const std::string& key() const { return key_; }
  GgufValueType type() const { return type_; }  // Array for arrays
  bool is_array() const { return type_ == GgufValueType::Array; }
  GgufValueType element_type() const { return elem_; }  // an array's elements; else type()
  uint64_t size() const { return count_; }              // elements of an array; 1 otherwise
  std::string type_name() const;                        // "uint32", "array of string"

  int64_t as_int() const;  // a uint64 above INT64_MAX throws too
  double as_float() const;
  bool as_bool() const;
  const std::string& as_string() const;
  const std::vector<std::string>& as_string_array() const;
  std::vector<int64_t> as_int_array() const;
  std::vector<double> as_float_array() const;

 private:
  friend class GgufParser;
  [[noreturn]] void wrong_type(std::string_view expected) const;
  std::string where_, key_;
  GgufValueType type_ = GgufValueType::U8, elem_ = GgufValueType::U8;
  uint64_t count_ = 1;
  uint64_t scalar_ = 0;  // a number or bool's little-endian bytes, zero-extended
  std::string string_;
  std::vector<std::string> strings_;
  std::vector<uint8_t> elems_;  // a numeric or bool array's elements as stored
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ne: dims[0] varies fastest (a row), as the file stores them
  GgufType type = GgufType::F32;
  uint64_t offset = 0;  // from the data section, a multiple of the alignment
  uint64_t size = 0;    // bytes
  int64_t numel = 0;
  std::vector<int64_t> shape() const { return {dims.rbegin(), dims.rend()}; }  // row-major
};

class GgufFile {
 public:
  // Throws Error(Io) when the file cannot be opened, Error(Format) naming the damage otherwise,
  // Error(UnsupportedShape) for a valid file this reader cannot take (a tensor type it does not
  // dequantize, an array of arrays).
  static GgufFile open(const std::string& path);

  const std::string& path() const { return where_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_start() const { return data_start_; }
  uint64_t file_size() const { return bytes_.size(); }

  const std::vector<GgufValue>& metadata() const { return metadata_; }  // file order
  const GgufValue* find(std::string_view key) const;
  const GgufValue& get(std::string_view key) const;  // throws Error(NotFound) naming the key
  std::string architecture() const;                  // general.architecture

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }  // file order
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  const GgufTensorInfo& get_tensor(std::string_view name) const;  // throws Error(NotFound)
  // The tensor's bytes in the mapping; valid while this file or a copy of mapping() lives.
  std::span<const uint8_t> tensor_bytes(const GgufTensorInfo& t) const;
  // The tensor as fp32 (dequantize_row over all of it); out must hold t.numel values.
  void dequantize(const GgufTensorInfo& t, std::span<float> out) const;

  // Keeps the memory mapping alive for views handed out (null for parse_gguf's files).
  std::shared_ptr<void> mapping() const { return mapping_; }

 private:
  friend class GgufParser;
  std::string where_;
  std::shared_ptr<void> mapping_;
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kGgufDefaultAlignment, data_start_ = 0;
  std::vector<GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> key_index_, tensor_index_;
};

// Parses a GGUF file held in memory (the fuzzer's entry point); `where` names it in messages.
// The bytes must outlive the result and the views it hands out.
GgufFile parse_gguf(std::span<const uint8_t> bytes, std::string_view where);

}  // namespace sf::format
