// The `.sf` model file: one self-describing, memory-mappable file holding a model's configuration,
// tokenizer, metadata and weights (dense or 2:4-compressed). docs/FORMAT.md is the specification;
// this header is its reader and writer.
//
//   [0, 24)      preamble: magic "SFMODEL\0", u32 format version, u32 reserved (0), u64 header size
//   [24, H)      JSON header (UTF-8), then zero padding up to D = round_up(24 + header size, 64)
//   [D, D + S)   data section: every part of every tensor at a 64-byte-aligned offset from D
//   [T, end)     checksum trailer at T = D + round_up(S, 64): xxh64 of the header, of every part
//                in table order, then of the trailer words before it
//
// Checksums live in the trailer (not in the JSON) so that the writer streams: the layout is fixed
// before any tensor is produced, each tensor is written once and dropped, and only the trailer
// waits for the end.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/atomic_file.hpp"
#include "core/dtype.hpp"

namespace sf::sff {

inline constexpr char kMagic[8] = {'S', 'F', 'M', 'O', 'D', 'E', 'L', '\0'};
// Bumped only when an existing field changes meaning; additions (tensor kinds, metadata keys,
// config fields) keep the version. A reader opens every version <= its own.
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint64_t kAlignment = 64;  // suits cp.async (16 B) and TMA (128 B rows of 64 B)
inline constexpr uint64_t kPreambleSize = 24;
// Features a file may list in "requires" that this reader understands (FORMAT.md): 2:4 tensors,
// and FFNs stored only as neuron bundles (Model::open and the CPU backend read them).
inline constexpr std::string_view kKnownFeatures[] = {"s24", "ffn_neuron_major"};

// Tensor kinds this reader validates in depth. Any other kind is checked generically (bounds,
// alignment, overlap, checksum) and left to the readers that know it.
inline constexpr std::string_view kKindDense = "dense";  // parts: data
inline constexpr std::string_view kKindS24 = "s24";      // parts: values, meta (sparse24.hpp)

struct Part {
  std::string role;       // "data", "values", "meta", ...
  uint64_t offset = 0;    // from the start of the data section, a multiple of kAlignment
  uint64_t size = 0;      // bytes
  uint64_t checksum = 0;  // xxh64, seed 0
};

struct Entry {
  std::string name;
  std::string kind;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;         // logical shape
  std::vector<int64_t> padded_shape;  // s24: [round_up(rows,16), round_up(cols,32)]; else empty
  std::vector<Part> parts;
  const Part* part(std::string_view role) const;
  int64_t numel() const;
};

struct ReadOptions {
  bool verify_checksums = true;  // xxh64 of every part on open (GB/s; off for quick inspection)
};

class File {
 public:
  // Throws Error(Io) when the file cannot be opened, Error(Format) naming the damage otherwise.
  static File open(const std::string& path, const ReadOptions& opt = {});
  // The fuzzer's entry point. The buffer must outlive the File.
  static File from_memory(std::span<const uint8_t> bytes, std::string display_name = "<memory>",
                          const ReadOptions& opt = {});

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return bytes_.size(); }
  uint64_t header_size() const { return header_size_; }
  uint64_t data_start() const { return data_start_; }
  bool checksums_verified() const { return verified_; }
  const std::string& architecture() const { return architecture_; }
  const nlohmann::json& config() const { return config_; }
  const nlohmann::json& metadata() const { return metadata_; }
  const std::vector<Entry>& entries() const { return entries_; }  // table order
  const Entry* find(std::string_view name) const;
  const Entry& get(std::string_view name) const;  // throws Error(NotFound)
  std::span<const uint8_t> data(const Part& p) const {
    return bytes_.subspan(data_start_ + p.offset, p.size);
  }
  // Recomputes every checksum; throws Error(Format) naming the first damaged tensor.
  void verify_checksums();
  // Keeps the mapping alive for views handed out (Model holds one per file).
  std::shared_ptr<void> mapping() const { return mapping_; }

 private:
  void parse(const ReadOptions& opt);
  std::string path_;
  std::shared_ptr<void> mapping_;
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint64_t header_size_ = 0, data_start_ = 0, trailer_start_ = 0;
  uint64_t header_checksum_ = 0;
  bool verified_ = false;
  std::string architecture_;
  nlohmann::json config_, metadata_;
  std::vector<Entry> entries_;
};

// ---- writing -------------------------------------------------------------------------------
// What the writer needs to know about a tensor before its bytes exist.
struct EntrySpec {
  std::string name;
  std::string kind;
  DType dtype = DType::F32;
  std::vector<int64_t> shape, padded_shape;
  std::vector<std::pair<std::string, uint64_t>> parts;  // role, size in bytes
};
EntrySpec dense_spec(std::string name, DType dtype, std::vector<int64_t> shape);
EntrySpec bytes_spec(std::string name, uint64_t size);  // 1-D U8 dense, e.g. tokenizer files
EntrySpec s24_spec(std::string name, DType dtype, int64_t rows, int64_t cols);

// Streams a file: the constructor fixes the layout and writes the preamble and header; then each
// part is written with write() in table order (entry by entry, part by part); finish() writes
// the checksum trailer and renames the file into place (sf::AtomicFile). Destroyed before
// finish(), it leaves no file behind and the target untouched.
class Writer {
 public:
  Writer(std::string path, std::string architecture, nlohmann::json config, nlohmann::json metadata,
         std::vector<EntrySpec> entries, std::vector<std::string> requires_features = {});
  void write(std::span<const uint8_t> bytes);  // the next part; its size must match the spec
  void finish();
  size_t parts_total() const { return parts_.size(); }
  size_t parts_written() const { return next_; }
  uint64_t bytes_total() const;

 private:
  std::string path_;
  AtomicFile out_;
  struct Slot {
    std::string entry, role;
    uint64_t offset, size;
  };
  std::vector<Slot> parts_;
  std::vector<uint64_t> checksums_;
  uint64_t data_start_ = 0, data_size_ = 0;
  size_t next_ = 0;
};

uint64_t xxh64(std::span<const uint8_t> bytes);

}  // namespace sf::sff
