// A restricted unpickler: a stack machine over Python's pickle opcodes (protocols 2 to 4) that
// builds plain data and never runs anything. It knows None, bools, ints, floats, strings,
// tuples, lists and dicts; a global (`module.name`) is only a name, accepted when the caller's
// allow-list has it, and "calling" one (REDUCE, NEWOBJ) or BUILD is handed to the caller, which
// returns plain data for it, e.g. an empty dict for OrderedDict() or a record of the arguments
// of torch's tensor rebuild function. This is PyTorch's weights_only rule: a checkpoint can
// describe data, but cannot make the reader execute code.
//
// Hostile input is bounded: every read is checked against the buffer; nesting is limited
// (kMaxDepth); a container cannot change once it sits inside another value, so the result is a
// finite tree (shared leaves allowed) with no cycles.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace sf::pickle {

struct Value;
using Ref = std::shared_ptr<Value>;

struct None {};
struct Tuple {
  std::vector<Ref> items;
};
struct List {
  std::vector<Ref> items;
};
struct Dict {
  std::vector<std::pair<Ref, Ref>> items;  // in insertion order; keys are not deduplicated
};
struct Global {
  std::string module, name;
  std::string qualified() const { return module + "." + name; }
  bool is(std::string_view m, std::string_view n) const { return module == m && name == n; }
};
// A call of an allowed global that the caller chose to keep as a record (it is never made).
struct Call {
  Global callee;
  Ref args;  // a Tuple
};
// What BINPERSID names: an object outside the pickle (in torch: a storage in the zip).
struct PersistentId {
  Ref id;
};

struct Value {
  std::variant<None, bool, int64_t, double, std::string, Tuple, List, Dict, Global, Call,
               PersistentId>
      v;
  int depth = 0;        // levels of containers below this value (0 for scalars)
  bool frozen = false;  // inside another value: may not change any more

  template <typename T>
  const T* as() const {
    return std::get_if<T>(&v);
  }
  // "int", "str", "tuple", "global torch.FloatStorage", ...: for error messages.
  std::string type_name() const;
};

constexpr int kMaxDepth = 32;

struct Rules {
  // May the pickle name this global (GLOBAL, STACK_GLOBAL)?
  std::function<bool(const Global&)> allow_global;
  // REDUCE / NEWOBJ of an allowed global with a Tuple of arguments: the value it stands for.
  // Throws Error(Format) to refuse. Unset: every call is refused.
  std::function<Ref(const Global&, const Ref& args)> call;
  // BUILD on `target` with `state`. Throws to refuse. Unset: every BUILD is refused.
  std::function<void(const Value& target, const Value& state)> build;
  bool allow_persistent_id = false;
  // Appended to every refusal and damage report: what the user can do instead.
  std::string hint;
};

// Runs the pickle in `bytes` up to its STOP and returns the value it leaves. Throws Error(Format)
// for truncated or damaged input, unknown opcodes and refused globals, naming the byte offset.
Ref load(std::span<const uint8_t> bytes, const Rules& rules, const std::string& where);

Ref make(decltype(Value::v) v);

}  // namespace sf::pickle
