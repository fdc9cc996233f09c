#include "format/safetensors.hpp"

#include <sys/mman.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/input_file.hpp"

namespace sf::st {

namespace {

using ojson = nlohmann::ordered_json;  // keeps header order, which tensors() promises

// A header larger than this is not a real checkpoint (the largest HF headers are a few MB); the cap
// keeps a damaged length field from making us parse gigabytes of tensor data as JSON.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

constexpr std::string_view kKnownDTypes = "F32, F16, BF16, F64, I8, U8, I16, I32, I64, BOOL";

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void put_le64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}

// An integer that fits the given range, or nullopt (floats, negatives where unsigned is expected).
bool as_u64(const ojson& j, uint64_t& out) {
  if (!j.is_number_unsigned()) return false;
  out = j.get<uint64_t>();
  return true;
}

TensorInfo parse_entry(const std::string& where, const std::string& name, const ojson& e,
                       uint64_t data_size) {
  auto bad = [&](const std::string& what) -> Error {
    return Error(Status::Format, fmt::format("{}: tensor '{}': {}", where, name, what));
  };
  if (!e.is_object())
    throw bad(
        fmt::format("expected an object with \"dtype\", \"shape\" and \"data_offsets\", found "
                    "{}",
                    e.type_name()));
  TensorInfo t;
  t.name = name;

  const auto dt = e.find("dtype");
  if (dt == e.end() || !dt->is_string()) throw bad("\"dtype\" is missing or not a string");
  const std::string dname = dt->get<std::string>();
  const auto parsed = dtype_from_name(dname);
  if (!parsed)
    throw bad(
        fmt::format("unknown dtype \"{}\"; SparseFlow reads {}. Convert the tensor to one "
                    "of these first",
                    dname, kKnownDTypes));
  t.dtype = *parsed;

  const auto sh = e.find("shape");
  if (sh == e.end() || !sh->is_array()) throw bad("\"shape\" is missing or not an array");
  uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : *sh) {
    if (d.is_number_integer() && !d.is_number_unsigned())
      throw bad(fmt::format("shape {} has a negative dimension", sh->dump()));
    uint64_t v = 0;
    if (!as_u64(d, v) || v > uint64_t(INT64_MAX))
      throw bad(
          fmt::format("shape {} has an entry that is not a non-negative integer", sh->dump()));
    t.shape.push_back(int64_t(v));
    overflow = overflow || __builtin_mul_overflow(numel, v, &numel);
  }
  uint64_t bytes = 0;
  if (overflow || numel > uint64_t(INT64_MAX) ||
      __builtin_mul_overflow(numel, uint64_t(dtype_size(t.dtype)), &bytes))
    throw bad(fmt::format("shape {} has more elements than fit in 64 bits", sh->dump()));

  const auto off = e.find("data_offsets");
  if (off == e.end() || !off->is_array() || off->size() != 2 || !as_u64((*off)[0], t.begin) ||
      !as_u64((*off)[1], t.end))
    throw bad("\"data_offsets\" must be an array of two non-negative integers [begin, end]");
  if (t.end < t.begin)
    throw bad(fmt::format("data_offsets [{}, {}] end before they begin", t.begin, t.end));
  if (t.end > data_size)
    throw bad(
        fmt::format("data_offsets [{}, {}] reach past the end of the data section ({} bytes); "
                    "the file is truncated or its header is damaged",
                    t.begin, t.end, data_size));
  if (t.end - t.begin != bytes)
    throw bad(
        fmt::format("shape {} of {} needs {} bytes but data_offsets [{}, {}] span {}; the "
                    "header is damaged",
                    sh->dump(), dname, bytes, t.begin, t.end, t.end - t.begin));
  return t;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

File File::open(const std::string& path) {
  const InputFile in(path, "safetensors file");
  const size_t size = size_t(in.size());
  std::shared_ptr<void> mapping;
  const uint8_t* base = nullptr;
  if (size > 0) {  // mmap of zero bytes fails; an empty file is reported as truncated below
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, in.fd(), 0);
    if (p == MAP_FAILED)
      fail(Status::Io, "cannot memory-map '{}' ({} bytes): {}", path, size, std::strerror(errno));
    mapping = std::shared_ptr<void>(p, [size](void* q) { ::munmap(q, size); });
    base = static_cast<const uint8_t*>(p);
  }
  // The mapping stays valid once `in` closes the descriptor.
  File f = from_memory(std::span<const uint8_t>(base, size), path);
  f.mapping_ = std::move(mapping);
  return f;
}

File File::from_memory(std::span<const uint8_t> bytes, std::string display_name) {
  File f;
  f.path_ = std::move(display_name);
  f.bytes_ = bytes;
  const std::string& where = f.path_;

  if (bytes.size() < 8)
    fail(Status::Format,
         "{}: the file is {} bytes, shorter than the 8-byte header length that "
         "starts every safetensors file; it is truncated or not a safetensors file",
         where, bytes.size());
  const uint64_t header_len = read_le64(bytes.data());
  if (header_len > kMaxHeaderBytes)
    fail(Status::Format,
         "{}: the header length field says {} bytes, more than the {} MB limit; "
         "this is not a safetensors file or its first 8 bytes are damaged",
         where, header_len, kMaxHeaderBytes >> 20);
  if (header_len > bytes.size() - 8)
    fail(Status::Format,
         "{}: the header length field says {} bytes but only {} bytes follow it; "
         "the file is truncated",
         where, header_len, bytes.size() - 8);
  f.data_start_ = 8 + header_len;
  const uint64_t data_size = bytes.size() - f.data_start_;

  // The callback rejects duplicate names (nlohmann would silently keep the last) and nesting
  // deeper than the format has (top object > entry > shape array > number), so a hostile header
  // cannot build deep structures.
  std::set<std::string> names;
  std::string duplicate;
  bool too_deep = false;
  auto cb = [&](int depth, ojson::parse_event_t ev, ojson& parsed) {
    if (depth > 3) {
      too_deep = true;
      return false;
    }
    if (ev == ojson::parse_event_t::key && depth == 1 &&
        !names.insert(parsed.get<std::string>()).second && duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  const char* hb = reinterpret_cast<const char*>(bytes.data() + 8);
  ojson header;
  try {
    header = ojson::parse(hb, hb + header_len, cb);
  } catch (const ojson::parse_error& e) {
    fail(Status::Format,
         "{}: the {}-byte header is not valid JSON (at header byte {}: {}); the "
         "file is damaged or not a safetensors file",
         where, header_len, e.byte, e.what());
  } catch (const ojson::exception& e) {
    // e.g. a number too large for a double (nlohmann error 406): still a damaged header.
    fail(Status::Format,
         "{}: the {}-byte header holds a JSON value SparseFlow cannot represent "
         "({}); the file is damaged or not a safetensors file",
         where, header_len, e.what());
  }
  if (too_deep)
    fail(Status::Format, "{}: the header nests deeper than the safetensors format allows", where);
  if (!duplicate.empty())
    fail(Status::Format, "{}: the header names '{}' twice; the file is damaged", where, duplicate);
  if (!header.is_object())
    fail(Status::Format, "{}: the header must be a JSON object, found {}", where,
         header.type_name());

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object())
        fail(Status::Format, "{}: \"__metadata__\" must be an object of strings, found {}", where,
             value.type_name());
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          fail(Status::Format, "{}: \"__metadata__\" entry '{}' must be a string, found {}", where,
               mk, mv.type_name());
        f.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    f.tensors_.push_back(parse_entry(where, key, value, data_size));
  }

  // No two tensors may share bytes. Gaps are allowed (some writers align each tensor).
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : f.tensors_)
    if (t.end > t.begin) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& a = *by_offset[i - 1];
    const TensorInfo& b = *by_offset[i];
    if (b.begin < a.end)
      fail(Status::Format,
           "{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap; the header is "
           "damaged",
           where, a.name, a.begin, a.end, b.name, b.begin, b.end);
  }
  return f;
}

const TensorInfo* File::find(std::string_view name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const TensorInfo& File::get(std::string_view name) const {
  if (const TensorInfo* t = find(name)) return *t;
  std::string some;
  for (size_t i = 0; i < tensors_.size() && i < 8; ++i)
    some += fmt::format("{}'{}'", i ? ", " : "", tensors_[i].name);
  if (tensors_.size() > 8) some += ", ...";
  fail(Status::NotFound, "'{}' has no tensor named '{}' (it has {} tensors{}{})", path_, name,
       tensors_.size(), tensors_.empty() ? "" : ": ", some);
}

std::span<const uint8_t> File::data(const TensorInfo& t) const {
  return bytes_.subspan(data_start_ + t.begin, t.end - t.begin);
}

void write_file(const std::string& path, std::span<const TensorToWrite> tensors,
                const std::map<std::string, std::string>& metadata) {
  ojson header = ojson::object();
  if (!metadata.empty()) {
    ojson meta = ojson::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  // Tensors are packed back to back in the given order: the reference safetensors reader rejects
  // gaps. The data section itself starts 8-byte aligned.
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__")
      fail(Status::InvalidArgument, "cannot write '{}': '{}' is not a usable tensor name", path,
           t.name);
    if (header.contains(t.name))
      fail(Status::InvalidArgument, "cannot write '{}': tensor '{}' is given twice", path, t.name);
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0)
        fail(Status::InvalidArgument, "cannot write '{}': tensor '{}' has a negative dimension {}",
             path, t.name, d);
      if (__builtin_mul_overflow(numel, uint64_t(d), &numel))
        fail(Status::InvalidArgument, "cannot write '{}': tensor '{}' is too large", path, t.name);
    }
    const uint64_t bytes = numel * dtype_size(t.dtype);
    if (bytes / dtype_size(t.dtype) != numel || bytes != t.data.size())
      fail(Status::InvalidArgument,
           "cannot write '{}': tensor '{}' ({} x {}) needs {} bytes but {} "
           "were given",
           path, t.name, dtype_name(t.dtype), numel, bytes, t.data.size());
    header[t.name] = {{"dtype", dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }

  std::string text;
  try {
    text = header.dump();
  } catch (const ojson::type_error& e) {  // names or metadata that are not valid UTF-8
    fail(Status::InvalidArgument,
         "cannot write '{}': a tensor name or metadata string is not "
         "valid UTF-8 ({})",
         path, e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // pad with spaces, as the format specifies

  uint8_t len[8];
  put_le64(len, text.size());
  AtomicFile out(path);
  out.write(len, sizeof len);
  out.write(text.data(), text.size());
  for (const auto& t : tensors) out.write(t.data.data(), t.data.size());
  out.commit();
}

}  // namespace sf::st
