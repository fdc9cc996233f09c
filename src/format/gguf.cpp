#include "format/gguf.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include <fmt/ranges.h>

#include "core/error.hpp"
#include "core/input_file.hpp"

namespace sf::format {

namespace {

constexpr uint8_t kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;
// The smallest encodings, which bound how many entries the remaining bytes can hold: a metadata
// entry is an empty key, a type and a one-byte value; a tensor info an empty name, n_dims, one
// dimension, a type and an offset.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;
constexpr uint64_t kMaxKeyBytes = 65535;  // docs/gguf.md
constexpr uint64_t kMaxNameBytes = 64;    // docs/gguf.md (ggml's GGML_MAX_NAME)
constexpr uint32_t kMaxDims = 4;          // GGML_MAX_DIMS

uint64_t read_le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

bool is_known_value_type(uint32_t t) {
  return t <= uint32_t(GgufValueType::F64);
}

// Bytes of a scalar of this type; 0 for strings and arrays.
int scalar_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::Bool:
      return 1;
    case GgufValueType::U16:
    case GgufValueType::I16:
      return 2;
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::F32:
      return 4;
    case GgufValueType::U64:
    case GgufValueType::I64:
    case GgufValueType::F64:
      return 8;
    case GgufValueType::String:
    case GgufValueType::Array:
      return 0;
  }
  return 0;
}

bool is_integer(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::U16:
    case GgufValueType::I16:
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::U64:
    case GgufValueType::I64:
      return true;
    default:
      return false;
  }
}

bool is_signed(GgufValueType t) {
  return t == GgufValueType::I8 || t == GgufValueType::I16 || t == GgufValueType::I32 ||
         t == GgufValueType::I64;
}

std::string printable(std::span<const uint8_t> b) {
  std::string s;
  for (uint8_t c : b)
    s += (c >= 32 && c < 127) ? std::string(1, char(c)) : fmt::format("\\x{:02x}", c);
  return s;
}

std::string dims_str(const std::vector<int64_t>& d) {
  return fmt::format("[{}]", fmt::join(d, ", "));
}

}  // namespace

std::string_view gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
      return "uint8";
    case GgufValueType::I8:
      return "int8";
    case GgufValueType::U16:
      return "uint16";
    case GgufValueType::I16:
      return "int16";
    case GgufValueType::U32:
      return "uint32";
    case GgufValueType::I32:
      return "int32";
    case GgufValueType::F32:
      return "float32";
    case GgufValueType::Bool:
      return "bool";
    case GgufValueType::String:
      return "string";
    case GgufValueType::Array:
      return "array";
    case GgufValueType::U64:
      return "uint64";
    case GgufValueType::I64:
      return "int64";
    case GgufValueType::F64:
      return "float64";
  }
  return "unknown";
}

// ---- values --------------------------------------------------------------------------------

std::string GgufValue::type_name() const {
  if (!is_array()) return std::string(gguf_value_type_name(type_));
  return fmt::format("array of {} {}", count_, gguf_value_type_name(elem_));
}

void GgufValue::wrong_type(std::string_view expected) const {
  fail(Status::Format, "'{}': metadata key '{}' is {}, expected {}", where_, key_, type_name(),
       expected);
}

namespace {

// An integer of type t from its little-endian bytes, or false when it does not fit int64.
bool to_int64(GgufValueType t, uint64_t raw, int64_t& out) {
  const int bits = 8 * scalar_bytes(t);
  if (is_signed(t)) {
    const uint64_t sign = uint64_t(1) << (bits - 1);
    out = bits == 64 ? int64_t(raw) : int64_t((raw ^ sign) - sign);  // sign-extend
    return true;
  }
  if (raw > uint64_t(INT64_MAX)) return false;
  out = int64_t(raw);
  return true;
}

double to_double(GgufValueType t, uint64_t raw) {
  return t == GgufValueType::F32 ? double(std::bit_cast<float>(uint32_t(raw)))
                                 : std::bit_cast<double>(raw);
}

}  // namespace

int64_t GgufValue::as_int() const {
  if (!is_integer(type_)) wrong_type("an integer");
  int64_t v = 0;
  if (!to_int64(type_, scalar_, v))
    fail(Status::Format, "'{}': metadata key '{}' is uint64 {}, more than an int64 holds", where_,
         key_, scalar_);
  return v;
}

double GgufValue::as_float() const {
  if (type_ != GgufValueType::F32 && type_ != GgufValueType::F64) wrong_type("float32 or float64");
  return to_double(type_, scalar_);
}

bool GgufValue::as_bool() const {
  if (type_ != GgufValueType::Bool) wrong_type("a bool");
  return scalar_ != 0;
}

const std::string& GgufValue::as_string() const {
  if (type_ != GgufValueType::String) wrong_type("a string");
  return string_;
}

const std::vector<std::string>& GgufValue::as_string_array() const {
  if (!is_array() || elem_ != GgufValueType::String) wrong_type("an array of string");
  return strings_;
}

std::vector<int64_t> GgufValue::as_int_array() const {
  if (!is_array() || !is_integer(elem_)) wrong_type("an array of integers");
  const int n = scalar_bytes(elem_);
  std::vector<int64_t> out(count_);
  for (uint64_t i = 0; i < count_; ++i) {
    const uint64_t raw = read_le(elems_.data() + i * n, n);
    if (!to_int64(elem_, raw, out[i]))
      fail(Status::Format,
           "'{}': metadata key '{}' element {} is uint64 {}, more than an int64 holds", where_,
           key_, i, raw);
  }
  return out;
}

std::vector<double> GgufValue::as_float_array() const {
  if (!is_array() || (elem_ != GgufValueType::F32 && elem_ != GgufValueType::F64))
    wrong_type("an array of float32 or float64");
  const int n = scalar_bytes(elem_);
  std::vector<double> out(count_);
  for (uint64_t i = 0; i < count_; ++i)
    out[i] = to_double(elem_, read_le(elems_.data() + i * n, n));
  return out;
}

// ---- parsing -------------------------------------------------------------------------------

class GgufParser {
 public:
  GgufParser(std::span<const uint8_t> bytes, std::string_view where) {
    f_.where_ = std::string(where);
    f_.bytes_ = bytes;
  }

  GgufFile run() {
    header();
    for (uint64_t i = 0; i < n_kv_; ++i) metadata_entry(i);
    alignment();
    for (uint64_t i = 0; i < n_tensors_; ++i) tensor_info(i);
    layout();
    return std::move(f_);
  }

 private:
  uint64_t size() const { return f_.bytes_.size(); }
  uint64_t remaining() const { return size() - pos_; }
  const std::string& where() const { return f_.where_; }

  // The next n bytes, or Error(Format) naming what was being read; `what` is called only then.
  template <typename What>
  const uint8_t* take(uint64_t n, What&& what) {
    if (n > remaining())
      fail(Status::Format,
           "'{}' is truncated: {} at byte {} needs {} bytes, but the file ends at byte {}", where(),
           what(), pos_, n, size());
    const uint8_t* p = f_.bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  template <typename What>
  uint64_t u32(What&& what) {
    return read_le(take(4, what), 4);
  }
  template <typename What>
  uint64_t u64(What&& what) {
    return read_le(take(8, what), 8);
  }

  template <typename What>
  std::string string(uint64_t max_len, What&& what) {
    const uint64_t at = pos_;
    const uint64_t len = u64(what);
    if (len > max_len)
      fail(Status::Format, "'{}': {} at byte {} has length {}, more than the {} bytes GGUF allows",
           where(), what(), at, len, max_len);
    if (len > remaining())
      fail(Status::Format,
           "'{}': {} at byte {} has length {}, but only {} bytes follow: the file is truncated or "
           "the length is damaged",
           where(), what(), at, len, remaining());
    const char* p = reinterpret_cast<const char*>(take(len, what));
    return std::string(p, len);
  }

  void header() {
    const auto& b = f_.bytes_;
    const size_t head = std::min<size_t>(4, b.size());
    if (head && std::memcmp(b.data(), kMagic, head) != 0)
      fail(Status::Format, "'{}' is not a GGUF file: it starts with \"{}\", expected \"GGUF\"",
           where(), printable(b.first(head)));
    if (b.size() < 4)
      fail(Status::Format, "'{}' is truncated: {} bytes, shorter than the magic \"GGUF\"", where(),
           b.size());
    pos_ = 4;
    const uint32_t v = uint32_t(u32([] { return "the version"; }));
    if (v > 0xffff && (v & 0xffff) == 0 && __builtin_bswap32(v) <= 3)
      fail(Status::Format,
           "'{}' is a big-endian GGUF file (version {} stored big-endian); SparseFlow reads "
           "little-endian GGUF only. Reconvert the model without --bigendian (llama.cpp's "
           "convert_hf_to_gguf.py writes little-endian by default)",
           where(), __builtin_bswap32(v));
    if (v == 1)
      fail(Status::Format,
           "'{}' is GGUF version 1, which used 32-bit counts and is no longer written; "
           "SparseFlow reads versions 2 and 3. Reconvert the model with a current llama.cpp",
           where());
    if (v < 2 || v > 3)
      fail(Status::Format, "'{}' has GGUF version {}; SparseFlow reads versions 2 and 3. {}",
           where(), v,
           v == 0 ? "Version 0 never existed: the file is damaged"
                  : "Upgrade SparseFlow if the file is from a newer llama.cpp");
    f_.version_ = v;
    n_tensors_ = u64([] { return "the tensor count"; });
    n_kv_ = u64([] { return "the metadata count"; });
    if (n_kv_ > remaining() / kMinKvBytes)
      fail(Status::Format,
           "'{}': the header gives {} metadata entries, but the {} bytes after it hold at most {}: "
           "the file is truncated or the count is damaged",
           where(), n_kv_, remaining(), remaining() / kMinKvBytes);
    if (n_tensors_ > remaining() / kMinTensorInfoBytes)
      fail(Status::Format,
           "'{}': the header gives {} tensors, but the {} bytes after it hold at most {} tensor "
           "infos: the file is truncated or the count is damaged",
           where(), n_tensors_, remaining(), remaining() / kMinTensorInfoBytes);
  }

  void metadata_entry(uint64_t i) {
    GgufValue v;
    v.where_ = where();
    v.key_ = string(kMaxKeyBytes, [&] { return fmt::format("the key of metadata entry #{}", i); });
    auto what = [&] { return fmt::format("the value of metadata key '{}'", v.key_); };
    if (f_.key_index_.count(v.key_))
      fail(Status::Format, "'{}': metadata key '{}' appears twice: the file is damaged", where(),
           v.key_);
    const uint32_t type = uint32_t(u32(what));
    if (!is_known_value_type(type))
      fail(Status::Format,
           "'{}': metadata key '{}' has value type {}, which GGUF does not define (0 to 12): the "
           "file is damaged",
           where(), v.key_, type);
    v.type_ = v.elem_ = GgufValueType(type);
    if (v.type_ == GgufValueType::String) {
      v.string_ = string(UINT64_MAX, what);
    } else if (v.type_ == GgufValueType::Array) {
      array(v);
    } else {
      v.scalar_ = read_le(take(scalar_bytes(v.type_), what), scalar_bytes(v.type_));
      if (v.type_ == GgufValueType::Bool && v.scalar_ > 1)
        fail(Status::Format, "'{}': metadata key '{}' is a bool of value {}, expected 0 or 1",
             where(), v.key_, v.scalar_);
    }
    f_.key_index_.emplace(v.key_, f_.metadata_.size());
    f_.metadata_.push_back(std::move(v));
  }

  void array(GgufValue& v) {
    auto what = [&] { return fmt::format("the array of metadata key '{}'", v.key_); };
    const uint32_t elem = uint32_t(u32(what));
    if (elem == uint32_t(GgufValueType::Array))
      fail(Status::UnsupportedShape,
           "'{}': metadata key '{}' is an array of arrays, which SparseFlow (like llama.cpp) does "
           "not read",
           where(), v.key_);
    if (!is_known_value_type(elem))
      fail(Status::Format,
           "'{}': metadata key '{}' is an array of value type {}, which GGUF does not define (0 "
           "to 12): the file is damaged",
           where(), v.key_, elem);
    v.elem_ = GgufValueType(elem);
    v.count_ = u64(what);
    const uint64_t min_bytes = v.elem_ == GgufValueType::String ? 8 : scalar_bytes(v.elem_);
    if (v.count_ > remaining() / min_bytes)
      fail(Status::Format,
           "'{}': metadata key '{}' is an array of {} {}, but only {} bytes follow: the file is "
           "truncated or the count is damaged",
           where(), v.key_, v.count_, gguf_value_type_name(v.elem_), remaining());
    if (v.elem_ == GgufValueType::String) {
      v.strings_.reserve(v.count_);
      for (uint64_t k = 0; k < v.count_; ++k)
        v.strings_.push_back(string(
            UINT64_MAX, [&] { return fmt::format("string {} of metadata key '{}'", k, v.key_); }));
      return;
    }
    const uint8_t* p = take(v.count_ * min_bytes, what);
    v.elems_.assign(p, p + v.count_ * min_bytes);
    if (v.elem_ == GgufValueType::Bool)
      for (uint64_t k = 0; k < v.count_; ++k)
        if (p[k] > 1)
          fail(Status::Format,
               "'{}': metadata key '{}' element {} is a bool of value {}, expected 0 or 1", where(),
               v.key_, k, p[k]);
  }

  void alignment() {
    const GgufValue* a = f_.find("general.alignment");
    if (!a) return;
    const int64_t v = a->as_int();
    if (v <= 0 || (v & (v - 1)) != 0)
      fail(Status::Format, "'{}': general.alignment is {}, expected a power of two (default {})",
           where(), v, kGgufDefaultAlignment);
    f_.alignment_ = uint64_t(v);
  }

  void tensor_info(uint64_t i) {
    GgufTensorInfo t;
    t.name = string(kMaxNameBytes, [&] { return fmt::format("the name of tensor #{}", i); });
    auto what = [&] { return fmt::format("the info of tensor '{}'", t.name); };
    auto bad = [&](Status s, const std::string& msg) -> Error {
      return Error(s, fmt::format("'{}': tensor '{}': {}", where(), t.name, msg));
    };
    if (f_.tensor_index_.count(t.name))
      throw bad(Status::Format, "the name appears twice in the tensor table: the file is damaged");
    const uint64_t n_dims = u32(what);
    if (n_dims < 1 || n_dims > kMaxDims)
      throw bad(Status::Format, fmt::format("{} dimensions, expected 1 to {}", n_dims, kMaxDims));
    uint64_t numel = 1;
    bool overflow = false;
    for (uint64_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = u64(what);
      t.dims.push_back(int64_t(ne));
      overflow = overflow || ne > uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, ne, &numel);
    }
    if (overflow || numel > uint64_t(INT64_MAX)) {
      std::vector<uint64_t> raw(t.dims.begin(), t.dims.end());
      throw bad(Status::Format, fmt::format("dimensions [{}] hold more elements than an int64 "
                                            "counts: the file is damaged",
                                            fmt::join(raw, ", ")));
    }
    t.numel = int64_t(numel);
    const uint32_t type = uint32_t(u32(what));
    const GgufTypeInfo* info = gguf_find_type(type);
    if (!info) {
      const std::string_view ggml = ggml_type_name(type);
      if (!ggml.empty())
        throw bad(Status::UnsupportedShape,
                  fmt::format("type {} ({}) is not one SparseFlow reads ({}). Requantize the model "
                              "to one of these (llama-quantize --allow-requantize)",
                              ggml, type, gguf_supported_type_names()));
      throw bad(Status::Format,
                fmt::format("type {} is not a ggml tensor type SparseFlow knows; it reads {}. "
                            "The file is damaged or from a newer llama.cpp",
                            type, gguf_supported_type_names()));
    }
    t.type = info->type;
    if (t.dims[0] % info->block_size != 0)
      throw bad(Status::Format,
                fmt::format("dimensions {}: ne[0] = {} is not a multiple of the {} block size {}",
                            dims_str(t.dims), t.dims[0], info->name, info->block_size));
    if (__builtin_mul_overflow(numel / uint64_t(info->block_size), uint64_t(info->block_bytes),
                               &t.size))
      throw bad(Status::Format,
                fmt::format("dimensions {} of {} need more bytes than 64 bits count: "
                            "the file is damaged",
                            dims_str(t.dims), info->name));
    t.offset = u64(what);
    if (t.offset % f_.alignment_ != 0)
      throw bad(Status::Format, fmt::format("data offset {} is not a multiple of the alignment {}: "
                                            "the file is damaged",
                                            t.offset, f_.alignment_));
    f_.tensor_index_.emplace(t.name, f_.tensors_.size());
    f_.tensors_.push_back(std::move(t));
  }

  // Every tensor inside the data section, no two sharing a byte.
  void layout() {
    f_.data_start_ = (pos_ + f_.alignment_ - 1) / f_.alignment_ * f_.alignment_;
    const uint64_t avail = size() > f_.data_start_ ? size() - f_.data_start_ : 0;
    std::vector<const GgufTensorInfo*> by_offset;
    for (const auto& t : f_.tensors_) {
      if (t.size > avail || t.offset > avail - t.size)
        fail(Status::Format,
             "'{}': tensor '{}' ({} {}, {} bytes at data offset {}) reaches past the end of the "
             "data section ({} bytes from byte {} in a file of {}): the file is truncated or its "
             "tensor table is damaged",
             where(), t.name, gguf_type_info(t.type).name, dims_str(t.dims), t.size, t.offset,
             avail, f_.data_start_, size());
      if (t.size) by_offset.push_back(&t);
    }
    std::sort(by_offset.begin(), by_offset.end(),
              [](const auto* a, const auto* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      const GgufTensorInfo& a = *by_offset[i - 1];
      const GgufTensorInfo& b = *by_offset[i];
      if (b.offset < a.offset + a.size)
        fail(Status::Format,
             "'{}': tensors '{}' [{}, {}) and '{}' [{}, {}) overlap in the data section: the "
             "tensor table is damaged",
             where(), a.name, a.offset, a.offset + a.size, b.name, b.offset, b.offset + b.size);
    }
  }

  GgufFile f_;
  uint64_t pos_ = 0;
  uint64_t n_tensors_ = 0, n_kv_ = 0;
};

GgufFile parse_gguf(std::span<const uint8_t> bytes, std::string_view where) {
  return GgufParser(bytes, where).run();
}

// ---- the file ------------------------------------------------------------------------------

GgufFile GgufFile::open(const std::string& path) {
  const InputFile in(path, "GGUF file");
  const size_t size = size_t(in.size());
  std::shared_ptr<void> mapping;
  const uint8_t* base = nullptr;
  if (size > 0) {  // mmap of zero bytes fails; an empty file is reported as not GGUF below
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, in.fd(), 0);
    if (p == MAP_FAILED)
      fail(Status::Io, "cannot memory-map '{}' ({} bytes): {}", path, size, std::strerror(errno));
    mapping = std::shared_ptr<void>(p, [size](void* q) { ::munmap(q, size); });
    base = static_cast<const uint8_t*>(p);
  }
  // The mapping stays valid once `in` closes the descriptor.
  GgufFile f = parse_gguf(std::span<const uint8_t>(base, size), path);
  f.mapping_ = std::move(mapping);
  return f;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = key_index_.find(key);
  return it == key_index_.end() ? nullptr : &metadata_[it->second];
}

const GgufValue& GgufFile::get(std::string_view key) const {
  if (const GgufValue* v = find(key)) return *v;
  fail(Status::NotFound, "'{}' has no metadata key '{}' ({} keys in the file)", where_, key,
       metadata_.size());
}

std::string GgufFile::architecture() const {
  return get("general.architecture").as_string();
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::get_tensor(std::string_view name) const {
  if (const GgufTensorInfo* t = find_tensor(name)) return *t;
  fail(Status::NotFound, "'{}' has no tensor named '{}' ({} tensors in the file)", where_, name,
       tensors_.size());
}

std::span<const uint8_t> GgufFile::tensor_bytes(const GgufTensorInfo& t) const {
  const uint64_t avail = bytes_.size() > data_start_ ? bytes_.size() - data_start_ : 0;
  if (t.size > avail || t.offset > avail - t.size)
    fail(Status::InvalidArgument,
         "'{}': tensor '{}' ({} bytes at data offset {}) is not from "
         "this file",
         where_, t.name, t.size, t.offset);
  return bytes_.subspan(data_start_ + t.offset, t.size);
}

void GgufFile::dequantize(const GgufTensorInfo& t, std::span<float> out) const {
  if (out.size() != uint64_t(t.numel))
    fail(Status::InvalidArgument, "'{}': tensor '{}' has {} elements, the output holds {}", where_,
         t.name, t.numel, out.size());
  dequantize_row(t.type, tensor_bytes(t).data(), t.numel, out.data());
}

}  // namespace sf::format
