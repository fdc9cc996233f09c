#include "format/zip_archive.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace sf::zip {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50, kEnd64LocatorSig = 0x07064b50;
constexpr size_t kLocalLen = 30, kCentralLen = 46, kEndLen = 22, kEnd64Len = 56,
                 kEnd64LocatorLen = 20;
constexpr uint16_t kZip64ExtraId = 0x0001;

// Little-endian fields at a position the caller has bounds-checked.
uint64_t le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// [offset, offset + len) lies inside a buffer of `size` bytes, without overflowing.
bool inside(uint64_t offset, uint64_t len, uint64_t size) {
  return offset <= size && len <= size - offset;
}

std::string method_name(uint16_t m) {
  switch (m) {
    case 0:
      return "stored";
    case 8:
      return "deflate";
    case 9:
      return "deflate64";
    case 12:
      return "bzip2";
    case 14:
      return "lzma";
    case 93:
      return "zstd";
    default:
      return fmt::format("method {}", m);
  }
}

}  // namespace

bool starts_like_zip(std::span<const uint8_t> b) {
  return b.size() >= 4 && b[0] == 'P' && b[1] == 'K' &&
         ((b[2] == 3 && b[3] == 4) || (b[2] == 5 && b[3] == 6));
}

Archive Archive::parse(std::span<const uint8_t> bytes, std::string display_name) {
  Archive a;
  a.name_ = std::move(display_name);
  a.bytes_ = bytes;
  const std::string& where = a.name_;
  const uint8_t* b = bytes.data();
  const uint64_t size = bytes.size();

  // The end-of-central-directory record is the last thing in the file, before a comment of at
  // most 64 KiB; search backwards for its signature.
  if (size < kEndLen)
    fail(Status::Format, "{}: {} bytes is too short for a zip archive; the file is truncated",
         where, size);
  uint64_t end = UINT64_MAX;
  const uint64_t lowest = size > kEndLen + 0xffff ? size - kEndLen - 0xffff : 0;
  for (uint64_t p = size - kEndLen + 1; p-- > lowest;)
    if (le(b + p, 4) == kEndSig && p + kEndLen + le(b + p + 20, 2) <= size) {
      end = p;
      break;
    }
  if (end == UINT64_MAX)
    fail(Status::Format,
         "{}: no zip end-of-central-directory record; the file is truncated or not a zip "
         "archive",
         where);
  uint64_t count = le(b + end + 10, 2), cd_size = le(b + end + 12, 4),
           cd_offset = le(b + end + 16, 4);
  if (le(b + end + 4, 2) != 0 || le(b + end + 6, 2) != 0)
    fail(Status::Format, "{}: a multi-disk (split) zip archive; join its parts first", where);

  // Zip64: the 32-bit fields saturate and the real values sit in a record the locator points at.
  if (end >= kEnd64LocatorLen && le(b + end - kEnd64LocatorLen, 4) == kEnd64LocatorSig) {
    const uint64_t rec = le(b + end - kEnd64LocatorLen + 8, 8);
    if (!inside(rec, kEnd64Len, end - kEnd64LocatorLen) || le(b + rec, 4) != kEnd64Sig)
      fail(Status::Format,
           "{}: the zip64 end record locator points at offset {}, where no zip64 "
           "end record is; the archive is damaged",
           where, rec);
    count = le(b + rec + 32, 8);
    cd_size = le(b + rec + 40, 8);
    cd_offset = le(b + rec + 48, 8);
  }
  if (!inside(cd_offset, cd_size, end))
    fail(Status::Format,
         "{}: the central directory [{}, +{}) does not fit before its end record at {}; the "
         "file is truncated or damaged",
         where, cd_offset, cd_size, end);
  if (count > cd_size / kCentralLen)
    fail(Status::Format,
         "{}: the end record counts {} entries, more than a {}-byte central "
         "directory can hold; the archive is damaged",
         where, count, cd_size);

  a.entries_.reserve(size_t(count));
  uint64_t p = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (!inside(p, kCentralLen, cd_end) || le(b + p, 4) != kCentralSig)
      fail(Status::Format, "{}: central directory entry {} (at offset {}) is damaged", where, i, p);
    Entry e;
    e.flags = uint16_t(le(b + p + 8, 2));
    e.method = uint16_t(le(b + p + 10, 2));
    e.compressed_size = le(b + p + 20, 4);
    e.size = le(b + p + 24, 4);
    const uint64_t name_len = le(b + p + 28, 2), extra_len = le(b + p + 30, 2),
                   comment_len = le(b + p + 32, 2);
    uint64_t local = le(b + p + 42, 4);
    if (!inside(p + kCentralLen, name_len + extra_len + comment_len, cd_end))
      fail(Status::Format, "{}: central directory entry {} runs past the directory's end", where,
           i);
    e.name.assign(reinterpret_cast<const char*>(b + p + kCentralLen), size_t(name_len));

    // The zip64 extra field holds, in this order, each of the three fields that saturated.
    for (uint64_t x = p + kCentralLen + name_len, xe = x + extra_len; x + 4 <= xe;) {
      const uint64_t id = le(b + x, 2), len = le(b + x + 2, 2);
      if (x + 4 + len > xe) break;
      if (id == kZip64ExtraId) {
        uint64_t q = x + 4;
        auto take = [&](uint64_t& field) {
          if (field != 0xffffffffu) return;
          if (q + 8 > x + 4 + len)
            fail(Status::Format, "{}: entry '{}' has a zip64 extra field too short for its sizes",
                 where, e.name);
          field = le(b + q, 8);
          q += 8;
        };
        take(e.size);
        take(e.compressed_size);
        take(local);
      }
      x += 4 + len;
    }
    p += kCentralLen + name_len + extra_len + comment_len;

    if (!a.index_.emplace(e.name, a.entries_.size()).second)
      fail(Status::Format, "{}: the archive holds two entries named '{}'; it is damaged", where,
           e.name);
    if (!inside(local, kLocalLen, size) || le(b + local, 4) != kLocalSig)
      fail(Status::Format,
           "{}: entry '{}' points at offset {}, where no local header is; the "
           "archive is truncated or damaged",
           where, e.name, local);
    e.data_offset = local + kLocalLen + le(b + local + 26, 2) + le(b + local + 28, 2);
    if (!inside(e.data_offset, e.compressed_size, size))
      fail(Status::Format,
           "{}: entry '{}' ({} bytes at offset {}) runs past the end of the {}-byte file; the "
           "file is truncated",
           where, e.name, e.compressed_size, e.data_offset, size);
    if (e.method == 0 && e.compressed_size != e.size)
      fail(Status::Format,
           "{}: stored entry '{}' says {} bytes compressed but {} uncompressed; "
           "the archive is damaged",
           where, e.name, e.compressed_size, e.size);
    a.entries_.push_back(std::move(e));
  }
  return a;
}

const Entry* Archive::find(std::string_view entry_name) const {
  const auto it = index_.find(std::string(entry_name));
  return it == index_.end() ? nullptr : &entries_[it->second];
}

std::span<const uint8_t> Archive::data(const Entry& e) const {
  if (e.flags & 1)
    fail(Status::Format, "{}: entry '{}' is encrypted; SparseFlow reads unencrypted archives only",
         name_, e.name);
  if (e.method != 0)
    fail(Status::Format,
         "{}: entry '{}' is compressed ({}); SparseFlow reads entries in place and needs them "
         "stored uncompressed, as torch.save() writes them. Was the file re-zipped? Load and "
         "save it again with torch.save(), or save it as safetensors",
         name_, e.name, method_name(e.method));
  return bytes_.subspan(size_t(e.data_offset), size_t(e.size));
}

}  // namespace sf::zip
