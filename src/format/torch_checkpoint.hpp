// PyTorch checkpoints written by torch.save() since PyTorch 1.6: a zip archive holding a pickled
// state dict (<archive>/data.pkl), one entry per storage (<archive>/data/<key>, stored
// uncompressed) and a byteorder entry. HF's pytorch_model.bin and its shards are such files.
//
// Read safely: the pickle runs on a restricted machine (format/pickle.hpp) that knows only what a
// state dict of tensors needs (collections.OrderedDict, torch._utils._rebuild_tensor_v2 and
// _rebuild_parameter, the typed storage classes as persistent ids) and never calls Python code,
// so a malicious checkpoint is an Error(Format) naming the global it tried, never an exploit.
// Every tensor's extent is checked against its storage and every storage against its zip entry.
// Contiguous tensors are views into the file's mmap; strided ones (a saved transpose, a slice)
// are copied out row-major.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.hpp"

namespace sf::pt {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::span<const uint8_t> data;  // numel * dtype_size bytes, row-major
  bool copied = false;            // strided in the file, copied out contiguous
  int64_t numel() const;
};

class Checkpoint {
 public:
  // Throws Error(Io) when the file cannot be opened, Error(Format) naming the problem otherwise
  // (not a zip, the legacy pre-1.6 format, a refused global, a damaged or truncated entry).
  static Checkpoint open(const std::string& path);
  // Parse from memory (the fuzzer's entry point). The buffer must outlive the Checkpoint.
  static Checkpoint from_memory(std::span<const uint8_t> bytes,
                                std::string display_name = "<memory>");

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in state-dict order
  const TensorInfo* find(std::string_view name) const;
  std::span<const uint8_t> data(const TensorInfo& t) const { return t.data; }
  std::shared_ptr<void> mapping() const { return mapping_; }

 private:
  std::string path_;
  std::shared_ptr<void> mapping_;             // keeps the mmap alive
  std::vector<std::vector<uint8_t>> copies_;  // contiguous copies of strided tensors
  std::vector<TensorInfo> tensors_;
};

// Whether a file starts like something torch.save() wrote (a zip archive, or a pickle as in the
// legacy format, which open() then refuses with advice). False when it cannot be read.
bool looks_like_torch_file(const std::string& path);

}  // namespace sf::pt
