// A read-only view of a zip archive held in memory (usually an mmap): its central directory, and
// where each entry's bytes lie. Enough of PKWARE's APPNOTE for torch.save() archives: one disk,
// zip64 sizes and offsets, no encryption. Entries are read in place, so only stored
// (uncompressed) ones can be read; a compressed entry is listed and refused by data().
// Every offset and size is checked against the buffer before parse() returns.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sf::zip {

struct Entry {
  std::string name;
  uint16_t method = 0;  // 0: stored, 8: deflate, other: anything else
  uint16_t flags = 0;   // general purpose bits; bit 0: encrypted
  uint64_t compressed_size = 0, size = 0;
  uint64_t data_offset = 0;  // of the entry's (compressed) bytes in the archive
  bool stored() const { return method == 0 && (flags & 1) == 0; }
};

class Archive {
 public:
  // Throws Error(Format) naming what is damaged or missing. The buffer must outlive the Archive.
  static Archive parse(std::span<const uint8_t> bytes, std::string display_name);

  const std::string& name() const { return name_; }
  const std::vector<Entry>& entries() const { return entries_; }  // in central-directory order
  const Entry* find(std::string_view entry_name) const;
  // The bytes of a stored entry; throws Error(Format) for a compressed or encrypted one.
  std::span<const uint8_t> data(const Entry& e) const;

 private:
  std::string name_;
  std::span<const uint8_t> bytes_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in entries_
};

// Whether the bytes begin with a zip local header or an empty archive's end record.
bool starts_like_zip(std::span<const uint8_t> bytes);

}  // namespace sf::zip
