#include "format/sf_file.hpp"

#include <sys/mman.h>

#define XXH_INLINE_ALL  // header-only: no library to link, and inlined into the hot loop
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <set>

#include <fmt/ranges.h>

#include "core/error.hpp"
#include "core/input_file.hpp"

namespace sf::sff {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

// A real header is a few hundred KiB even for OPT-175B; the cap stops a damaged size field from
// making us parse tensor data as JSON.
constexpr uint64_t kMaxHeaderBytes = 256ull << 20;

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

uint32_t read_le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
void put_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
void put_le64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}

std::string printable(std::span<const uint8_t> b) {
  std::string s;
  for (uint8_t c : b) s += (c >= 32 && c < 127) ? fmt::format("{}", char(c)) : fmt::format("\\x{:02x}", c);
  return s;
}

// Bytes of a tensor of this dtype and shape; nullopt on overflow or a negative dimension.
std::optional<uint64_t> byte_size(DType dt, const std::vector<int64_t>& shape) {
  uint64_t n = dtype_size(dt);
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d != 0 && n > (uint64_t(1) << 62) / uint64_t(d)) return std::nullopt;
    n *= uint64_t(d);
  }
  return n;
}

struct S24Sizes { int64_t rows_padded, cols_padded; uint64_t values, meta; };
S24Sizes s24_sizes(DType dt, int64_t rows, int64_t cols) {
  S24Sizes s;
  s.rows_padded = int64_t(round_up(uint64_t(rows), 16));
  s.cols_padded = int64_t(round_up(uint64_t(cols), 32));
  s.values = uint64_t(s.rows_padded) * uint64_t(s.cols_padded / 2) * dtype_size(dt);
  s.meta = uint64_t(s.rows_padded / 16) * uint64_t(s.cols_padded / 32) * 16 * sizeof(uint32_t);
  return s;
}

std::string shape_str(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

}  // namespace

uint64_t xxh64(std::span<const uint8_t> bytes) { return XXH64(bytes.data(), bytes.size(), 0); }

const Part* Entry::part(std::string_view role) const {
  for (const auto& p : parts)
    if (p.role == role) return &p;
  return nullptr;
}

int64_t Entry::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

// ---- reading -------------------------------------------------------------------------------

File File::open(const std::string& path, const ReadOptions& opt) {
  const InputFile in(path, "model file");
  const size_t size = size_t(in.size());
  void* base = nullptr;
  if (size > 0) {
    base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, in.fd(), 0);
    if (base == MAP_FAILED)
      fail(Status::Io, "cannot memory-map '{}' ({} bytes): {}", path, size, std::strerror(errno));
  }
  // The mapping keeps the file alive once `in` closes its descriptor.
  File f;
  f.path_ = path;
  f.mapping_ = std::shared_ptr<void>(base, [size](void* p) { if (p) ::munmap(p, size); });
  f.bytes_ = {static_cast<const uint8_t*>(base), size};
  f.parse(opt);
  return f;
}

File File::from_memory(std::span<const uint8_t> bytes, std::string display_name, const ReadOptions& opt) {
  File f;
  f.path_ = std::move(display_name);
  f.bytes_ = bytes;
  f.parse(opt);
  return f;
}

const Entry* File::find(std::string_view name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

const Entry& File::get(std::string_view name) const {
  if (const Entry* e = find(name)) return *e;
  fail(Status::NotFound, "'{}' has no tensor named '{}' ({} tensors in the file; `sparseflow inspect` "
       "lists them)", path_, name, entries_.size());
}

void File::parse(const ReadOptions& opt) {
  const std::string& p = path_;
  const uint64_t fsize = bytes_.size();
  if (fsize < kPreambleSize)
    fail(Status::Format, "'{}' is truncated: {} bytes, but a .sf file starts with a {}-byte preamble. "
         "Re-run `sparseflow convert`.", p, fsize, kPreambleSize);
  if (std::memcmp(bytes_.data(), kMagic, 8) != 0)
    fail(Status::Format, "'{}' is not a SparseFlow model file: it starts with \"{}\", expected "
         "\"SFMODEL\\x00\". Pass an HF checkpoint directory, or make a .sf file with `sparseflow "
         "convert`.", p, printable(bytes_.first(8)));
  version_ = read_le32(bytes_.data() + 8);
  if (version_ == 0 || version_ > kFormatVersion)
    fail(Status::Format, "'{}' has format version {}, this build reads versions 1 to {}. {}", p,
         version_, kFormatVersion,
         version_ == 0 ? "Version 0 never existed: the file is damaged." : "Upgrade SparseFlow to read it.");
  const uint32_t reserved = read_le32(bytes_.data() + 12);
  if (reserved != 0)
    fail(Status::Format, "'{}': the reserved preamble word is {:#x}, expected 0 in format version {}: "
         "the file is damaged", p, reserved, version_);
  header_size_ = read_le64(bytes_.data() + 16);
  if (header_size_ > kMaxHeaderBytes || header_size_ > fsize - kPreambleSize)
    fail(Status::Format, "'{}': the preamble gives a header of {} bytes, but {} (file of {} bytes, at "
         "most {} allowed): the file is truncated or damaged", p, header_size_,
         header_size_ > kMaxHeaderBytes ? "that is implausibly large" : "it does not fit the file",
         fsize, kMaxHeaderBytes);
  const auto header_bytes = bytes_.subspan(kPreambleSize, header_size_);
  header_checksum_ = xxh64(header_bytes);

  json h;
  try {
    h = json::parse(header_bytes.begin(), header_bytes.end());
  } catch (const json::exception& e) {
    fail(Status::Format, "'{}': the header is not valid JSON ({}): the file is damaged", p, e.what());
  }
  if (!h.is_object()) fail(Status::Format, "'{}': the header is JSON {}, expected an object", p, h.type_name());
  auto bad = [&](const std::string& what) -> Error {
    return Error(Status::Format, fmt::format("'{}': {}", p, what));
  };

  // Top-level fields.
  const auto arch = h.find("architecture");
  if (arch == h.end() || !arch->is_string()) throw bad("the header's \"architecture\" is missing or not a string");
  architecture_ = arch->get<std::string>();
  const auto cfg = h.find("config");
  if (cfg == h.end() || !cfg->is_object()) throw bad("the header's \"config\" is missing or not an object");
  config_ = *cfg;
  const auto meta = h.find("metadata");
  if (meta != h.end() && !meta->is_object()) throw bad("the header's \"metadata\" is not an object");
  metadata_ = meta != h.end() ? *meta : json::object();
  if (const auto req = h.find("requires"); req != h.end()) {
    if (!req->is_array()) throw bad("the header's \"requires\" is not an array");
    for (const auto& r : *req) {
      if (!r.is_string()) throw bad("an entry of \"requires\" is not a string");
      const auto s = r.get<std::string>();
      if (std::find(std::begin(kKnownFeatures), std::end(kKnownFeatures), s) == std::end(kKnownFeatures))
        fail(Status::UnsupportedShape, "'{}' requires the feature \"{}\", which this build of SparseFlow "
             "does not know. Upgrade SparseFlow to read this file.", p, s);
    }
  }
  const auto tens = h.find("tensors");
  if (tens == h.end() || !tens->is_array()) throw bad("the header's \"tensors\" is missing or not an array");

  // The tensor table.
  std::set<std::string> names;
  uint64_t nparts = 0;
  entries_.clear();
  entries_.reserve(tens->size());
  for (size_t i = 0; i < tens->size(); ++i) {
    const json& t = (*tens)[i];
    if (!t.is_object()) throw bad(fmt::format("tensor #{} of the table is not an object", i));
    Entry e;
    const auto nm = t.find("name");
    if (nm == t.end() || !nm->is_string() || nm->get<std::string>().empty())
      throw bad(fmt::format("tensor #{} has no \"name\" string", i));
    e.name = nm->get<std::string>();
    auto tbad = [&](const std::string& what) -> Error {
      return Error(Status::Format, fmt::format("'{}': tensor '{}': {}", p, e.name, what));
    };
    if (!names.insert(e.name).second) throw tbad("the name appears twice in the table");
    const auto kd = t.find("kind");
    if (kd == t.end() || !kd->is_string()) throw tbad("\"kind\" is missing or not a string");
    e.kind = kd->get<std::string>();
    const auto dt = t.find("dtype");
    if (dt == t.end() || !dt->is_string()) throw tbad("\"dtype\" is missing or not a string");
    const auto dtype = dtype_from_name(dt->get<std::string>());
    if (!dtype) throw tbad(fmt::format("unknown dtype \"{}\" (known: F32, F16, BF16, F64, I8, U8, I16, I32, I64, BOOL)",
                                       dt->get<std::string>()));
    e.dtype = *dtype;
    auto read_shape = [&](const char* key, std::vector<int64_t>& out, bool required) {
      const auto s = t.find(key);
      if (s == t.end()) {
        if (required) throw tbad(fmt::format("\"{}\" is missing", key));
        return;
      }
      if (!s->is_array() || s->size() > 8) throw tbad(fmt::format("\"{}\" is not an array of at most 8 dimensions", key));
      for (const auto& d : *s) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0)
          throw tbad(fmt::format("\"{}\" has {}, expected non-negative integers", key, d.dump()));
        out.push_back(d.get<int64_t>());
      }
    };
    read_shape("shape", e.shape, true);
    read_shape("padded_shape", e.padded_shape, false);
    if (!byte_size(e.dtype, e.shape)) throw tbad(fmt::format("shape {} is too large", shape_str(e.shape)));

    const auto parts = t.find("parts");
    if (parts == t.end() || !parts->is_array() || parts->empty()) throw tbad("\"parts\" is missing or empty");
    for (const auto& pj : *parts) {
      if (!pj.is_object()) throw tbad("a part is not an object");
      Part part;
      const auto r = pj.find("role"), o = pj.find("offset"), s = pj.find("size");
      if (r == pj.end() || !r->is_string()) throw tbad("a part has no \"role\" string");
      part.role = r->get<std::string>();
      if (e.part(part.role)) throw tbad(fmt::format("part \"{}\" appears twice", part.role));
      if (o == pj.end() || !o->is_number_unsigned() || s == pj.end() || !s->is_number_unsigned())
        throw tbad(fmt::format("part \"{}\" needs unsigned integer \"offset\" and \"size\"", part.role));
      part.offset = o->get<uint64_t>();
      part.size = s->get<uint64_t>();
      e.parts.push_back(std::move(part));
      ++nparts;
    }

    // Kinds this reader knows are checked for the sizes their shapes imply.
    auto expect_part = [&](std::string_view role, uint64_t size) {
      const Part* q = e.part(role);
      if (!q) throw tbad(fmt::format("kind \"{}\" needs a part \"{}\"", e.kind, role));
      if (q->size != size)
        throw tbad(fmt::format("part \"{}\" is {} bytes, but {} {} {} needs {} bytes", role, q->size,
                               e.kind, dtype_name(e.dtype), shape_str(e.shape), size));
    };
    if (e.kind == kKindDense) {
      expect_part("data", *byte_size(e.dtype, e.shape));
    } else if (e.kind == kKindS24) {
      if (e.shape.size() != 2 || e.shape[0] == 0 || e.shape[1] == 0 || e.shape[1] % 4 != 0)
        throw tbad(fmt::format("a 2:4 tensor needs shape [rows, cols] with cols a multiple of 4, found {}",
                               shape_str(e.shape)));
      if (!dtype_is_float(e.dtype) || e.dtype == DType::F64)
        throw tbad(fmt::format("a 2:4 tensor holds F16, BF16 or F32, found {}", dtype_name(e.dtype)));
      const auto z = s24_sizes(e.dtype, e.shape[0], e.shape[1]);
      if (e.padded_shape != std::vector<int64_t>{z.rows_padded, z.cols_padded})
        throw tbad(fmt::format("padded_shape is {}, expected [{}, {}] for shape {}", shape_str(e.padded_shape),
                               z.rows_padded, z.cols_padded, shape_str(e.shape)));
      expect_part("values", z.values);
      expect_part("meta", z.meta);
    }
    entries_.push_back(std::move(e));
  }

  // Layout: every part aligned, inside the data section, no two overlapping.
  data_start_ = round_up(kPreambleSize + header_size_, kAlignment);
  const uint64_t avail = fsize > data_start_ ? fsize - data_start_ : 0;
  struct Span { uint64_t begin, end; const Entry* e; const Part* part; };
  std::vector<Span> spans;
  uint64_t data_size = 0;
  for (const auto& e : entries_)
    for (const auto& q : e.parts) {
      auto where = [&] { return fmt::format("'{}': tensor '{}' part \"{}\"", p, e.name, q.role); };
      if (q.offset % kAlignment != 0)
        fail(Status::Format, "{}: offset {} is not a multiple of {}: the header is damaged", where(),
             q.offset, kAlignment);
      if (q.size > avail || q.offset > avail - q.size)
        fail(Status::Format, "{}: bytes [{}, {}) lie past the end of the data section ({} bytes in a file "
             "of {}): the file is truncated or the header lies", where(), q.offset, q.offset + q.size,
             avail, fsize);
      data_size = std::max(data_size, q.offset + q.size);
      if (q.size) spans.push_back({q.offset, q.offset + q.size, &e, &q});
    }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].begin < spans[i - 1].end)
      fail(Status::Format, "'{}': tensor '{}' part \"{}\" [{}, {}) overlaps tensor '{}' part \"{}\" [{}, {}): "
           "the header is damaged", p, spans[i].e->name, spans[i].part->role, spans[i].begin, spans[i].end,
           spans[i - 1].e->name, spans[i - 1].part->role, spans[i - 1].begin, spans[i - 1].end);

  // The checksum trailer closes the file.
  trailer_start_ = data_start_ + round_up(data_size, kAlignment);
  const uint64_t expected = trailer_start_ + 8 * (nparts + 2);
  if (fsize < expected)
    fail(Status::Format, "'{}' is truncated: {} bytes, but its header describes {} bytes (data and checksum "
         "trailer). Was a copy interrupted? Re-run `sparseflow convert`.", p, fsize, expected);
  if (fsize > expected)
    fail(Status::Format, "'{}' has {} unexpected bytes after its checksum trailer (file of {} bytes, "
         "header describes {}): the file is damaged", p, fsize - expected, fsize, expected);
  const uint8_t* tr = bytes_.data() + trailer_start_;
  const uint64_t self = read_le64(tr + 8 * (nparts + 1));
  if (xxh64({tr, size_t(8 * (nparts + 1))}) != self)
    fail(Status::Format, "'{}': the checksum trailer (last {} bytes) does not match its own checksum: the "
         "file is damaged", p, 8 * (nparts + 2));
  if (read_le64(tr) != header_checksum_)
    fail(Status::Format, "'{}': the JSON header does not match its checksum (xxh64 {:016x}, recorded "
         "{:016x}): the header was edited or damaged", p, header_checksum_, read_le64(tr));
  size_t k = 1;
  for (auto& e : entries_)
    for (auto& q : e.parts) q.checksum = read_le64(tr + 8 * k++);
  if (opt.verify_checksums) verify_checksums();
}

void File::verify_checksums() {
  for (const auto& e : entries_)
    for (const auto& q : e.parts) {
      const uint64_t got = xxh64(data(q));
      if (got != q.checksum)
        fail(Status::Format, "'{}': tensor '{}' part \"{}\" ({} bytes at data offset {}) fails its checksum "
             "(xxh64 {:016x}, recorded {:016x}): the data is damaged. Re-run `sparseflow convert`.",
             path_, e.name, q.role, q.size, q.offset, got, q.checksum);
    }
  verified_ = true;
}

// ---- writing -------------------------------------------------------------------------------

EntrySpec dense_spec(std::string name, DType dtype, std::vector<int64_t> shape) {
  const auto n = byte_size(dtype, shape);
  if (!n) fail(Status::InvalidArgument, "tensor '{}': shape {} is negative or too large", name, shape_str(shape));
  EntrySpec s{std::move(name), std::string(kKindDense), dtype, std::move(shape), {}, {}};
  s.parts.push_back({"data", *n});
  return s;
}

EntrySpec bytes_spec(std::string name, uint64_t size) {
  return dense_spec(std::move(name), DType::U8, {int64_t(size)});
}

EntrySpec s24_spec(std::string name, DType dtype, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0 || cols % 4 != 0)
    fail(Status::UnsupportedShape, "tensor '{}': a 2:4 tensor needs rows > 0 and cols a positive multiple "
         "of 4, found [{}, {}]", name, rows, cols);
  const auto z = s24_sizes(dtype, rows, cols);
  EntrySpec s{std::move(name), std::string(kKindS24), dtype, {rows, cols}, {z.rows_padded, z.cols_padded}, {}};
  s.parts.push_back({"values", z.values});
  s.parts.push_back({"meta", z.meta});
  return s;
}

Writer::Writer(std::string path, std::string architecture, json config, json metadata,
               std::vector<EntrySpec> entries, std::vector<std::string> requires_features)
    : path_(path), out_(std::move(path)) {
  ojson h;
  h["format"] = "sparseflow model";
  h["architecture"] = architecture;
  h["requires"] = requires_features;
  h["config"] = ojson::parse(config.dump());
  h["metadata"] = ojson::parse(metadata.dump());
  ojson table = ojson::array();
  uint64_t offset = 0;
  std::set<std::string> names;
  for (auto& e : entries) {
    if (!names.insert(e.name).second)
      fail(Status::InvalidArgument, "writing '{}': tensor '{}' is listed twice", path_, e.name);
    ojson t;
    t["name"] = e.name;
    t["kind"] = e.kind;
    t["dtype"] = std::string(dtype_name(e.dtype));
    t["shape"] = e.shape;
    if (!e.padded_shape.empty()) t["padded_shape"] = e.padded_shape;
    ojson parts = ojson::array();
    for (auto& [role, size] : e.parts) {
      parts.push_back({{"role", role}, {"offset", offset}, {"size", size}});
      parts_.push_back({e.name, role, offset, size});
      offset = round_up(offset + size, kAlignment);
    }
    t["parts"] = std::move(parts);
    table.push_back(std::move(t));
  }
  h["tensors"] = std::move(table);
  data_size_ = offset;
  const std::string text = h.dump();
  data_start_ = round_up(kPreambleSize + text.size(), kAlignment);

  uint8_t pre[kPreambleSize] = {};
  std::memcpy(pre, kMagic, 8);
  put_le32(pre + 8, kFormatVersion);
  put_le32(pre + 12, 0);
  put_le64(pre + 16, text.size());
  out_.write(pre, sizeof pre);
  out_.write(text.data(), text.size());
  out_.write_zeros(data_start_ - out_.tell());
  checksums_.push_back(xxh64({reinterpret_cast<const uint8_t*>(text.data()), text.size()}));
}

uint64_t Writer::bytes_total() const { return data_start_ + data_size_ + 8 * (parts_.size() + 2); }

void Writer::write(std::span<const uint8_t> bytes) {
  if (next_ >= parts_.size())
    fail(Status::Internal, "writing '{}': more parts written than the {} the layout holds", path_, parts_.size());
  const Slot& s = parts_[next_];
  if (bytes.size() != s.size)
    fail(Status::Internal, "writing '{}': tensor '{}' part \"{}\" is {} bytes, the layout reserved {}", path_,
         s.entry, s.role, bytes.size(), s.size);
  out_.write_zeros(data_start_ + s.offset - out_.tell());
  out_.write(bytes.data(), bytes.size());
  checksums_.push_back(xxh64(bytes));
  ++next_;
}

void Writer::finish() {
  if (next_ != parts_.size())
    fail(Status::Internal, "writing '{}': only {} of {} parts were written (next: tensor '{}')", path_, next_,
         parts_.size(), parts_[next_].entry);
  out_.write_zeros(data_start_ + data_size_ - out_.tell());
  std::vector<uint8_t> tr(8 * (checksums_.size() + 1));
  for (size_t i = 0; i < checksums_.size(); ++i) put_le64(tr.data() + 8 * i, checksums_[i]);
  put_le64(tr.data() + 8 * checksums_.size(), xxh64({tr.data(), 8 * checksums_.size()}));
  out_.write(tr.data(), tr.size());
  out_.commit();
}

}  // namespace sf::sff
