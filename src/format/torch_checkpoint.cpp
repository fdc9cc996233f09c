#include "format/torch_checkpoint.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <optional>

#include <fmt/ranges.h>

#include "core/error.hpp"
#include "core/input_file.hpp"
#include "format/pickle.hpp"
#include "format/zip_archive.hpp"

namespace sf::pt {

namespace {

using pickle::Call;
using pickle::Dict;
using pickle::Global;
using pickle::Ref;
using pickle::Tuple;
using pickle::Value;

constexpr const char* kHint =
    " Re-save the weights as a plain state dict: torch.save(model.state_dict(), path) (a "
    "checkpoint that torch.load(path, weights_only=True) opens holds one), or save them as "
    "safetensors with save_pretrained(dir, safe_serialization=True).";

// The typed storages torch.save() names in its persistent ids ('storage', <class>, key,
// location, numel); numel counts elements of the class's dtype.
std::optional<DType> storage_dtype(const Global& g) {
  static const std::map<std::string, DType, std::less<>> kTyped = {
      {"FloatStorage", DType::F32},  {"HalfStorage", DType::F16}, {"BFloat16Storage", DType::BF16},
      {"DoubleStorage", DType::F64}, {"LongStorage", DType::I64}, {"IntStorage", DType::I32},
      {"ShortStorage", DType::I16},  {"CharStorage", DType::I8},  {"ByteStorage", DType::U8},
      {"BoolStorage", DType::BOOL}};
  if (g.module == "torch")
    if (const auto it = kTyped.find(g.name); it != kTyped.end()) return it->second;
  // An untyped storage counts bytes.
  if ((g.module == "torch" || g.module == "torch.storage") && g.name == "UntypedStorage")
    return DType::U8;
  return std::nullopt;
}

bool is_rebuild_tensor(const Global& g) {
  return g.is("torch._utils", "_rebuild_tensor_v2");
}
bool is_rebuild_parameter(const Global& g) {
  return g.is("torch._utils", "_rebuild_parameter");
}
bool is_ordered_dict(const Global& g) {
  return g.is("collections", "OrderedDict");
}

pickle::Rules state_dict_rules() {
  pickle::Rules r;
  r.hint = kHint;
  r.allow_persistent_id = true;
  r.allow_global = [](const Global& g) {
    return is_ordered_dict(g) || is_rebuild_tensor(g) || is_rebuild_parameter(g) ||
           storage_dtype(g).has_value();
  };
  r.call = [](const Global& g, const Ref& args) -> Ref {
    const auto& items = args->as<Tuple>()->items;
    if (is_ordered_dict(g)) {
      if (!items.empty())
        fail(Status::Format,
             "collections.OrderedDict is called with {} arguments; a state dict's "
             "pickle calls it with none.{}",
             items.size(), kHint);
      return pickle::make(Dict{});
    }
    if (is_rebuild_tensor(g) || is_rebuild_parameter(g)) return pickle::make(Call{g, args});
    fail(Status::Format,
         "{} is called like a function; in a state dict it names a storage's type "
         "only.{}",
         g.qualified(), kHint);
  };
  // torch.save(model.state_dict()) ends with BUILD of the dict's _metadata attribute (per-module
  // versions), which the reader does not need.
  r.build = [](const Value& target, const Value& state) {
    if (target.as<Dict>() && (state.as<Dict>() || state.as<pickle::None>())) return;
    fail(Status::Format,
         "BUILD sets Python state ({}) on a {}; a state dict of tensors has no "
         "such objects (tensor subclasses and custom objects are not read).{}",
         state.type_name(), target.type_name(), kHint);
  };
  return r;
}

// One storage: its bytes in the archive, typed.
struct Storage {
  DType dtype;
  int64_t numel;
  std::span<const uint8_t> bytes;
};

class Reader {
 public:
  Reader(const zip::Archive& zip, std::string prefix, std::vector<std::vector<uint8_t>>& copies)
      : zip_(zip), prefix_(std::move(prefix)), copies_(copies) {}

  TensorInfo tensor(const std::string& name, const Value& v) {
    const Call* c = v.as<Call>();
    if (c && is_rebuild_parameter(c->callee)) {  // (data, requires_grad, backward_hooks)
      const auto& a = c->args->as<Tuple>()->items;
      if (a.empty() || !a[0]->as<Call>() || !is_rebuild_tensor(a[0]->as<Call>()->callee))
        bad(name, "a Parameter whose data is not a plain tensor");
      c = a[0]->as<Call>();
    }
    if (!c || !is_rebuild_tensor(c->callee))
      fail(Status::Format,
           "{}: entry '{}' is a {}, not a tensor; SparseFlow reads only plain state "
           "dicts of tensors. A training checkpoint ({{\"model\": ..., \"optimizer\": ...}}) holds "
           "the "
           "weights one level down: save just those, e.g. torch.save(ckpt[\"model\"], path).{}",
           zip_.name(), name, v.type_name(), kHint);
    // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks
    // [, metadata]); the last three do not change the values.
    const auto& a = c->args->as<Tuple>()->items;
    if (a.size() < 4 || a.size() > 7)
      bad(name, fmt::format("_rebuild_tensor_v2 with {} arguments, expected 6 or 7", a.size()));
    const Storage& s = storage(name, *a[0]);
    const int64_t offset = integer(name, *a[1], "storage offset");
    const std::vector<int64_t> shape = ints(name, *a[2], "size");
    const std::vector<int64_t> stride = ints(name, *a[3], "stride");
    if (shape.size() != stride.size())
      bad(name,
          fmt::format("size has {} dimensions but stride has {}", shape.size(), stride.size()));

    TensorInfo t;
    t.name = name;
    t.dtype = s.dtype;
    t.shape = shape;
    const size_t es = dtype_size(s.dtype);
    // Elements [offset, last] of the storage are read; with any dimension 0, none are.
    uint64_t numel = 1, last = uint64_t(offset);
    bool overflow = false;
    for (size_t d = 0; d < shape.size(); ++d) {
      uint64_t span = 0;
      overflow |= __builtin_mul_overflow(numel, uint64_t(shape[d]), &numel);
      if (shape[d] > 0) {
        overflow |= __builtin_mul_overflow(uint64_t(shape[d] - 1), uint64_t(stride[d]), &span);
        overflow |= __builtin_add_overflow(last, span, &last);
      }
    }
    if (overflow || numel > uint64_t(INT64_MAX) / es)
      bad(name, "its size and strides overflow 64 bits");
    if (numel == 0) return t;
    if (last >= uint64_t(s.numel))
      fail(Status::Format,
           "{}: tensor '{}' (size [{}], stride [{}], storage offset {}) reaches "
           "element {} of a storage of {} elements; the checkpoint is damaged",
           zip_.name(), name, fmt::join(shape, ", "), fmt::join(stride, ", "), offset, last,
           s.numel);

    bool contiguous = true;
    for (int64_t d = int64_t(shape.size()) - 1, expect = 1; d >= 0; --d) {
      if (shape[size_t(d)] != 1 && stride[size_t(d)] != expect) contiguous = false;
      expect *= shape[size_t(d)];
    }
    if (contiguous) {
      t.data = s.bytes.subspan(size_t(offset) * es, size_t(numel) * es);
      return t;
    }
    // Strided: walk the index space in row-major order, one element at a time (such tensors are
    // rare in state dicts and small: a saved transpose or slice).
    std::vector<uint8_t>& out = copies_.emplace_back(size_t(numel) * es);
    std::vector<int64_t> idx(shape.size(), 0);
    for (uint64_t i = 0; i < numel; ++i) {
      uint64_t src = uint64_t(offset);
      for (size_t d = 0; d < shape.size(); ++d) src += uint64_t(idx[d]) * uint64_t(stride[d]);
      std::memcpy(out.data() + i * es, s.bytes.data() + src * es, es);
      for (size_t d = shape.size(); d-- > 0;) {
        if (++idx[d] < shape[d]) break;
        idx[d] = 0;
      }
    }
    t.data = out;
    t.copied = true;
    return t;
  }

 private:
  [[noreturn]] void bad(const std::string& name, const std::string& what) const {
    fail(Status::Format,
         "{}: tensor '{}': {}; the checkpoint is damaged or not a plain state "
         "dict.{}",
         zip_.name(), name, what, kHint);
  }
  int64_t integer(const std::string& name, const Value& v, const char* what) const {
    const auto* i = v.as<int64_t>();
    if (!i || *i < 0)
      bad(name, fmt::format("its {} is {}, not a non-negative int", what, v.type_name()));
    return *i;
  }
  std::vector<int64_t> ints(const std::string& name, const Value& v, const char* what) const {
    const auto* t = v.as<Tuple>();
    if (!t) bad(name, fmt::format("its {} is a {}, not a tuple of ints", what, v.type_name()));
    std::vector<int64_t> out;
    for (const auto& x : t->items) out.push_back(integer(name, *x, what));
    return out;
  }

  // ('storage', <storage class>, key, location, numel), resolved to <prefix>/data/<key>.
  const Storage& storage(const std::string& name, const Value& v) {
    const auto* pid = v.as<pickle::PersistentId>();
    const auto* t = pid ? pid->id->as<Tuple>() : nullptr;
    const auto* tag = t && t->items.size() == 5 ? t->items[0]->as<std::string>() : nullptr;
    if (!tag || *tag != "storage")
      bad(name, fmt::format("its storage is a {}, not torch's ('storage', type, key, location, "
                            "numel) persistent id",
                            pid ? pid->id->type_name() : v.type_name()));
    const auto* type = t->items[1]->as<Global>();
    const auto* key = t->items[2]->as<std::string>();
    if (!type || !storage_dtype(*type) || !key)
      bad(name, "its storage's type or key is not what torch.save() writes");
    const DType dt = *storage_dtype(*type);
    const int64_t numel = integer(name, *t->items[4], "storage size");
    if (const auto it = storages_.find(*key); it != storages_.end()) {
      if (it->second.dtype != dt || it->second.numel != numel)
        bad(name, fmt::format("storage '{}' is named again with another type or size", *key));
      return it->second;
    }
    const std::string entry_name = prefix_ + "/data/" + *key;
    const zip::Entry* e = zip_.find(entry_name);
    if (!e)
      fail(Status::Format,
           "{}: tensor '{}' lives in storage '{}', but the archive has no entry "
           "'{}'; the file is truncated or damaged",
           zip_.name(), name, *key, entry_name);
    const auto bytes = zip_.data(*e);
    uint64_t need = 0;
    if (__builtin_mul_overflow(uint64_t(numel), uint64_t(dtype_size(dt)), &need) ||
        bytes.size() < need)
      fail(Status::Format,
           "{}: storage '{}' of tensor '{}' should hold {} {} elements, but entry "
           "'{}' has {} bytes; the file is truncated or damaged",
           zip_.name(), *key, name, numel, dtype_name(dt), entry_name, bytes.size());
    return storages_.emplace(*key, Storage{dt, numel, bytes.first(size_t(need))}).first->second;
  }

  const zip::Archive& zip_;
  std::string prefix_;
  std::vector<std::vector<uint8_t>>& copies_;
  std::map<std::string, Storage> storages_;
};

[[noreturn]] void not_a_zip(std::span<const uint8_t> b, const std::string& where) {
  if (!b.empty() && b[0] == 0x80)
    fail(Status::Format,
         "{}: this is PyTorch's legacy checkpoint format (torch.save() before "
         "PyTorch 1.6, or with _use_new_zipfile_serialization=False), which SparseFlow does not "
         "read. Load it with a current PyTorch and save it again: torch.save(torch.load(path, "
         "weights_only=True), new_path), or save it as safetensors.",
         where);
  if (b.size() > 262 && std::memcmp(b.data() + 257, "ustar", 5) == 0)
    fail(Status::Format,
         "{}: this is a tar archive, PyTorch's oldest checkpoint format, which "
         "SparseFlow does not read. Load it with PyTorch and save it again with torch.save(), or "
         "as safetensors.",
         where);
  fail(Status::Format,
       "{}: not a PyTorch checkpoint: torch.save() writes a zip archive (starting "
       "with \"PK\"), and this file starts otherwise{}",
       where, b.empty() ? " (it is empty)" : "; it is damaged or of another format");
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Checkpoint Checkpoint::open(const std::string& path) {
  const InputFile in(path, "torch.save() checkpoint");
  const size_t size = size_t(in.size());
  std::shared_ptr<void> mapping;
  const uint8_t* base = nullptr;
  if (size > 0) {  // mmap of zero bytes fails; an empty file is reported by from_memory
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, in.fd(), 0);
    if (p == MAP_FAILED)
      fail(Status::Io, "cannot memory-map '{}' ({} bytes): {}", path, size, std::strerror(errno));
    mapping = std::shared_ptr<void>(p, [size](void* q) { ::munmap(q, size); });
    base = static_cast<const uint8_t*>(p);
  }
  Checkpoint c = from_memory(std::span<const uint8_t>(base, size), path);
  c.mapping_ = std::move(mapping);
  return c;
}

Checkpoint Checkpoint::from_memory(std::span<const uint8_t> bytes, std::string display_name) {
  Checkpoint c;
  c.path_ = std::move(display_name);
  const std::string& where = c.path_;
  if (!zip::starts_like_zip(bytes)) not_a_zip(bytes, where);
  const zip::Archive zip = zip::Archive::parse(bytes, where);

  // torch.save() puts everything under one top-level folder named after the file.
  std::string prefix;
  bool torchscript = false;
  for (const auto& e : zip.entries()) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      if (!prefix.empty())
        fail(Status::Format,
             "{}: the archive holds two pickles ('{}/data.pkl' and '{}'); "
             "torch.save() writes one",
             where, prefix, e.name);
      prefix = e.name.substr(0, slash);
    }
    torchscript |= e.name.find("/constants.pkl") != std::string::npos ||
                   e.name.find("/code/") != std::string::npos;
  }
  if (prefix.empty()) {
    if (torchscript)
      fail(Status::Format,
           "{}: this is a TorchScript archive (torch.jit.save), which holds code; "
           "SparseFlow reads state dicts. Save the weights with torch.save(model.state_dict(), "
           "path) instead.",
           where);
    fail(Status::Format,
         "{}: a zip archive without '<archive>/data.pkl', so not a torch.save() "
         "checkpoint (or a truncated one)",
         where);
  }
  if (const zip::Entry* bo = zip.find(prefix + "/byteorder")) {
    const auto d = zip.data(*bo);
    const std::string order(reinterpret_cast<const char*>(d.data()), d.size());
    if (order != "little")
      fail(Status::Format,
           "{}: the checkpoint's byteorder entry says \"{}\"; SparseFlow reads "
           "little-endian checkpoints only. Load it with PyTorch on this machine and save it "
           "again.",
           where, order.substr(0, 16));
  }

  const auto pkl = zip.data(*zip.find(prefix + "/data.pkl"));
  const Ref root = pickle::load(pkl, state_dict_rules(), where + " (" + prefix + "/data.pkl)");
  const auto* dict = root->as<Dict>();
  if (!dict)
    fail(Status::Format, "{}: the pickle holds a {}, not a dict of tensors.{}", where,
         root->type_name(), kHint);
  Reader reader(zip, prefix, c.copies_);
  std::map<std::string, size_t> seen;
  for (const auto& [k, v] : dict->items) {
    const auto* name = k->as<std::string>();
    if (!name)
      fail(Status::Format, "{}: the state dict has a key of type {}; tensor names are strings.{}",
           where, k->type_name(), kHint);
    if (!seen.emplace(*name, c.tensors_.size()).second)
      fail(Status::Format, "{}: the state dict names '{}' twice; the file is damaged", where,
           *name);
    c.tensors_.push_back(reader.tensor(*name, *v));
  }
  return c;
}

const TensorInfo* Checkpoint::find(std::string_view name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

bool looks_like_torch_file(const std::string& path) {
  // Through InputFile, so that sniffing a FIFO cannot block; the loader that runs next names what
  // the path is.
  std::optional<InputFile> in;
  try {
    in.emplace(path, "checkpoint");
  } catch (const Error&) {
    return false;
  }
  uint8_t head[4] = {};
  const ssize_t n = ::read(in->fd(), head, sizeof head);
  if (n < 1) return false;
  return zip::starts_like_zip({head, size_t(n)}) || head[0] == 0x80;
}

}  // namespace sf::pt
