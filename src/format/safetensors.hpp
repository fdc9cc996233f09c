// The safetensors format: 8-byte little-endian header length N, N bytes of JSON header
// ({"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}),
// then the data. Offsets are relative to the start of the data section.
// Reading memory-maps the file and validates every entry before anything is returned: dtype known,
// shape non-negative and its byte size equal to end - begin, offsets inside the file, no overlap.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.hpp"

namespace sf::st {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // data_offsets
  int64_t numel() const;
};

class File {
 public:
  // Throws Error(Io) when the file cannot be opened, Error(Format) naming the problem otherwise.
  static File open(const std::string& path);
  // Parse from memory (the fuzzer's entry point). The buffer must outlive the File.
  static File from_memory(std::span<const uint8_t> bytes, std::string display_name = "<memory>");

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in header order
  const TensorInfo* find(std::string_view name) const;
  const TensorInfo& get(std::string_view name) const;  // throws Error(NotFound)
  std::span<const uint8_t> data(const TensorInfo& t) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  std::shared_ptr<void> mapping_;  // keeps the mmap alive
  std::span<const uint8_t> bytes_;
  uint64_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::span<const uint8_t> data;  // exactly numel * dtype_size bytes
};

// Writes atomically (AtomicFile). Tensors are stored in the given order, 8-byte aligned data.
void write_file(const std::string& path, std::span<const TensorToWrite> tensors,
                const std::map<std::string, std::string>& metadata = {});

}  // namespace sf::st
