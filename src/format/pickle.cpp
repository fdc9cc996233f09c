#include "format/pickle.hpp"

#include <cstring>
#include <unordered_map>

#include "core/error.hpp"

namespace sf::pickle {

namespace {

// Python's opcode names (Lib/pickletools.py), so that a refusal names what the file holds.
const char* opcode_name(uint8_t op) {
  switch (op) {
    case '(':
      return "MARK";
    case '.':
      return "STOP";
    case '0':
      return "POP";
    case '1':
      return "POP_MARK";
    case '2':
      return "DUP";
    case 'F':
      return "FLOAT";
    case 'I':
      return "INT";
    case 'J':
      return "BININT";
    case 'K':
      return "BININT1";
    case 'L':
      return "LONG";
    case 'M':
      return "BININT2";
    case 'N':
      return "NONE";
    case 'P':
      return "PERSID";
    case 'Q':
      return "BINPERSID";
    case 'R':
      return "REDUCE";
    case 'S':
      return "STRING";
    case 'T':
      return "BINSTRING";
    case 'U':
      return "SHORT_BINSTRING";
    case 'V':
      return "UNICODE";
    case 'X':
      return "BINUNICODE";
    case 'a':
      return "APPEND";
    case 'b':
      return "BUILD";
    case 'c':
      return "GLOBAL";
    case 'd':
      return "DICT";
    case '}':
      return "EMPTY_DICT";
    case 'e':
      return "APPENDS";
    case 'g':
      return "GET";
    case 'h':
      return "BINGET";
    case 'i':
      return "INST";
    case 'j':
      return "LONG_BINGET";
    case 'l':
      return "LIST";
    case ']':
      return "EMPTY_LIST";
    case 'o':
      return "OBJ";
    case 'p':
      return "PUT";
    case 'q':
      return "BINPUT";
    case 'r':
      return "LONG_BINPUT";
    case 's':
      return "SETITEM";
    case 't':
      return "TUPLE";
    case ')':
      return "EMPTY_TUPLE";
    case 'u':
      return "SETITEMS";
    case 'G':
      return "BINFLOAT";
    case 0x80:
      return "PROTO";
    case 0x81:
      return "NEWOBJ";
    case 0x82:
      return "EXT1";
    case 0x83:
      return "EXT2";
    case 0x84:
      return "EXT4";
    case 0x85:
      return "TUPLE1";
    case 0x86:
      return "TUPLE2";
    case 0x87:
      return "TUPLE3";
    case 0x88:
      return "NEWTRUE";
    case 0x89:
      return "NEWFALSE";
    case 0x8a:
      return "LONG1";
    case 0x8b:
      return "LONG4";
    case 'B':
      return "BINBYTES";
    case 'C':
      return "SHORT_BINBYTES";
    case 0x8c:
      return "SHORT_BINUNICODE";
    case 0x8d:
      return "BINUNICODE8";
    case 0x8e:
      return "BINBYTES8";
    case 0x8f:
      return "EMPTY_SET";
    case 0x90:
      return "ADDITEMS";
    case 0x91:
      return "FROZENSET";
    case 0x92:
      return "NEWOBJ_EX";
    case 0x93:
      return "STACK_GLOBAL";
    case 0x94:
      return "MEMOIZE";
    case 0x95:
      return "FRAME";
    case 0x96:
      return "BYTEARRAY8";
    case 0x97:
      return "NEXT_BUFFER";
    case 0x98:
      return "READONLY_BUFFER";
    default:
      return nullptr;
  }
}

// Printable for a message: control and non-ASCII bytes as \xNN, at most 80 characters.
std::string printable(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && out.size() < 80; ++i) {
    const auto c = uint8_t(s[i]);
    if (c >= 0x20 && c < 0x7f)
      out += char(c);
    else
      out += fmt::format("\\x{:02x}", c);
  }
  if (out.size() >= 80) out += "...";
  return out;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = uint8_t(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((uint8_t(s[i + k]) & 0xc0) != 0x80) return false;
    i += n;
  }
  return true;
}

class Machine {
 public:
  Machine(std::span<const uint8_t> bytes, const Rules& rules, const std::string& where)
      : b_(bytes), rules_(rules), where_(where) {}

  Ref run() {
    for (;;) {
      op_pos_ = pos_;
      const uint8_t op = u8();
      switch (op) {
        case 0x80: {  // PROTO
          const uint8_t proto = u8();
          if (proto > 5) bad(fmt::format("pickle protocol {} is newer than Python's 5", proto));
          break;
        }
        case 0x95: {  // FRAME: a length hint for buffered readers; the bytes follow inline
          const uint64_t len = le(8);
          if (len > b_.size() - pos_)
            bad("a frame runs past the end of the pickle; it is truncated");
          break;
        }
        case '.': {  // STOP
          if (stack_.empty()) bad("STOP with an empty stack");
          return stack_.back();
        }
        case '(':
          marks_.push_back(stack_.size());
          break;
        case '}':
          push(make(Dict{}));
          break;
        case ']':
          push(make(List{}));
          break;
        case ')':
          push(make(Tuple{}));
          break;
        case 'N':
          push(make(None{}));
          break;
        case 0x88:
          push(make(true));
          break;
        case 0x89:
          push(make(false));
          break;
        case 'J':
          push(make(int64_t(int32_t(uint32_t(le(4))))));
          break;
        case 'K':
          push(make(int64_t(le(1))));
          break;
        case 'M':
          push(make(int64_t(le(2))));
          break;
        case 0x8a: {  // LONG1: n bytes of two's complement, little-endian
          const uint8_t n = u8();
          if (n > 8) bad(fmt::format("a {}-byte integer; a state dict needs at most 8", n));
          uint64_t v = n ? le(n) : 0;
          if (n && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t(0) << (8 * n);  // sign-extend
          push(make(int64_t(v)));
          break;
        }
        case 'G': {  // BINFLOAT: big-endian IEEE double
          uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | u8();
          double d;
          std::memcpy(&d, &bits, 8);
          push(make(d));
          break;
        }
        case 'X':
          push(make(text(le(4))));
          break;
        case 0x8c:
          push(make(text(le(1))));
          break;
        case 0x8d:
          push(make(text(le(8))));
          break;
        case 't': {
          const size_t m = pop_mark();
          push(tuple_of(m));
          break;
        }
        case 0x85:
          push(tuple_of(stack_.size() - need(1)));
          break;
        case 0x86:
          push(tuple_of(stack_.size() - need(2)));
          break;
        case 0x87:
          push(tuple_of(stack_.size() - need(3)));
          break;
        case 'l': {
          const size_t m = pop_mark();
          Ref l = make(List{});
          append(l, m);
          push(l);
          break;
        }
        case 'd': {
          const size_t m = pop_mark();
          Ref d = make(Dict{});
          set_items(d, m);
          push(d);
          break;
        }
        case 'a': {
          need(2);
          append(stack_[stack_.size() - 2], stack_.size() - 1);
          break;
        }
        case 'e': {
          const size_t m = pop_mark();
          if (m == 0) bad("APPENDS with no list below its mark");
          append(stack_[m - 1], m);
          break;
        }
        case 's': {
          need(3);
          set_items(stack_[stack_.size() - 3], stack_.size() - 2);
          break;
        }
        case 'u': {
          const size_t m = pop_mark();
          if (m == 0) bad("SETITEMS with no dict below its mark");
          set_items(stack_[m - 1], m);
          break;
        }
        case 'q':
          memo_[uint32_t(le(1))] = top();
          break;
        case 'r':
          memo_[uint32_t(le(4))] = top();
          break;
        case 0x94:
          memo_[uint32_t(memo_.size())] = top();
          break;
        case 'h':
          push(memo(uint32_t(le(1))));
          break;
        case 'j':
          push(memo(uint32_t(le(4))));
          break;
        case '0':
          need(1);
          stack_.pop_back();
          break;
        case 'c': {
          std::string module = line(), name = line();
          push(global(std::move(module), std::move(name)));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          need(2);
          const Ref name = pop(), module = pop();
          const auto* n = name->as<std::string>();
          const auto* m = module->as<std::string>();
          if (!n || !m) bad("STACK_GLOBAL needs two strings (module, name)");
          push(global(*m, *n));
          break;
        }
        case 'R':     // REDUCE: callable(*args)
        case 0x81: {  // NEWOBJ: cls.__new__(cls, *args)
          need(2);
          const Ref args = pop(), callee = pop();
          const auto* g = callee->as<Global>();
          if (!g)
            bad(fmt::format("{} of a {}, not of a global", opcode_name(op), callee->type_name()));
          if (!args->as<Tuple>())
            bad(fmt::format("{} with {} arguments, not a tuple", opcode_name(op),
                            args->type_name()));
          if (!rules_.call) refuse(fmt::format("a call of {}", g->qualified()));
          args->frozen = true;
          Ref r = rules_.call(*g, args);
          if (!r) bad(fmt::format("a call of {} gave nothing", g->qualified()));
          if (r->as<Call>()) adopt(*r, args);
          push(std::move(r));
          break;
        }
        case 'b': {  // BUILD: target.__setstate__(state)
          need(2);
          const Ref state = pop();
          const Ref& target = stack_.back();
          if (!rules_.build) refuse(fmt::format("BUILD on a {}", target->type_name()));
          if (target->frozen) bad("BUILD on a value that is already inside another one");
          state->frozen = true;
          rules_.build(*target, *state);
          break;
        }
        case 'Q': {  // BINPERSID
          need(1);
          const Ref id = pop();
          if (!rules_.allow_persistent_id)
            refuse("a persistent id (an object stored outside the pickle)");
          Ref r = make(PersistentId{id});
          adopt(*r, id);
          push(std::move(r));
          break;
        }
        default: {
          const char* name = opcode_name(op);
          refuse(name ? fmt::format("opcode {} (0x{:02x})", name, op)
                      : fmt::format("byte 0x{:02x}, which is no pickle opcode", op));
        }
      }
    }
  }

 private:
  [[noreturn]] void bad(const std::string& what) const {
    fail(Status::Format, "{}: pickle byte {}: {}; the file is damaged or not a plain state dict.{}",
         where_, op_pos_, what, rules_.hint);
  }
  [[noreturn]] void refuse(const std::string& what) const {
    fail(Status::Format,
         "{}: pickle byte {}: refusing {}: SparseFlow reads only plain state dicts of "
         "tensors and never runs code from a checkpoint.{}",
         where_, op_pos_, what, rules_.hint);
  }

  uint8_t u8() {
    if (pos_ >= b_.size()) bad("the pickle ends before its STOP opcode; it is truncated");
    return b_[pos_++];
  }
  uint64_t le(int n) {
    if (size_t(n) > b_.size() - pos_)
      bad("the pickle ends inside an opcode's argument; it is truncated");
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | b_[pos_ + size_t(i)];
    pos_ += size_t(n);
    return v;
  }
  std::string text(uint64_t len) {
    if (len > b_.size() - pos_)
      bad(fmt::format("a {}-byte string runs past the end; the pickle is truncated", len));
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), size_t(len));
    pos_ += size_t(len);
    if (!valid_utf8(s)) bad(fmt::format("string '{}' is not valid UTF-8", printable(s)));
    return s;
  }
  // GLOBAL's arguments: newline-terminated names.
  std::string line() {
    const size_t start = pos_;
    while (pos_ < b_.size() && b_[pos_] != '\n') {
      if (pos_ - start > 256) bad("a GLOBAL name longer than 256 bytes");
      ++pos_;
    }
    if (pos_ >= b_.size()) bad("the pickle ends inside a GLOBAL's name; it is truncated");
    std::string s(reinterpret_cast<const char*>(b_.data() + start), pos_ - start);
    ++pos_;
    return s;
  }

  Ref global(std::string module, std::string name) {
    Global g{std::move(module), std::move(name)};
    if (!rules_.allow_global || !rules_.allow_global(g))
      refuse(fmt::format("global '{}'", printable(g.qualified())));
    return make(std::move(g));
  }

  void push(Ref v) { stack_.push_back(std::move(v)); }
  Ref pop() {
    Ref v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  const Ref& top() {
    need(1);
    return stack_.back();
  }
  // At least n values above the innermost mark; returns n.
  size_t need(size_t n) {
    const size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() - floor < n)
      bad(fmt::format("{} needs {} value(s) on the stack", opcode_name(b_[op_pos_]), n));
    return n;
  }
  size_t pop_mark() {
    if (marks_.empty()) bad(fmt::format("{} without a MARK", opcode_name(b_[op_pos_])));
    const size_t m = marks_.back();
    marks_.pop_back();
    return m;
  }
  Ref memo(uint32_t key) {
    const auto it = memo_.find(key);
    if (it == memo_.end()) bad(fmt::format("memo entry {} is read before it is written", key));
    return it->second;
  }

  // `child` goes inside `parent`: it may not change from now on, and parent's depth grows.
  // A container can change only while it is inside nothing, so it cannot end up inside itself.
  void adopt(Value& parent, const Ref& child) {
    if (child.get() == &parent) bad("a container put inside itself");
    child->frozen = true;
    parent.depth = std::max(parent.depth, child->depth + 1);
    if (parent.depth > kMaxDepth) bad(fmt::format("values nest deeper than {} levels", kMaxDepth));
  }
  Ref tuple_of(size_t from) {
    Ref t = make(Tuple{});
    auto& items = std::get<Tuple>(t->v).items;
    for (size_t i = from; i < stack_.size(); ++i) {
      adopt(*t, stack_[i]);
      items.push_back(stack_[i]);
    }
    stack_.resize(from);
    return t;
  }
  void check_mutable(const Value& target, const char* what) const {
    if (target.frozen)
      bad(fmt::format("{} changes a value that is already inside another one", what));
  }
  // Moves stack_[from..] into the list `target`.
  void append(Ref t, size_t from) {
    check_mutable(*t, "APPEND");
    auto* l = std::get_if<List>(&t->v);
    if (!l) bad(fmt::format("APPEND to a {}, not a list", t->type_name()));
    for (size_t i = from; i < stack_.size(); ++i) {
      adopt(*t, stack_[i]);
      l->items.push_back(stack_[i]);
    }
    stack_.resize(from);
  }
  // Moves key, value pairs stack_[from..] into the dict `target`.
  void set_items(Ref t, size_t from) {
    check_mutable(*t, "SETITEM");
    auto* d = std::get_if<Dict>(&t->v);
    if (!d) bad(fmt::format("SETITEM on a {}, not a dict", t->type_name()));
    if ((stack_.size() - from) % 2) bad("SETITEMS with a key but no value");
    for (size_t i = from; i < stack_.size(); i += 2) {
      adopt(*t, stack_[i]);
      adopt(*t, stack_[i + 1]);
      d->items.emplace_back(stack_[i], stack_[i + 1]);
    }
    stack_.resize(from);
  }

  std::span<const uint8_t> b_;
  const Rules& rules_;
  const std::string& where_;
  size_t pos_ = 0, op_pos_ = 0;
  std::vector<Ref> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Ref> memo_;
};

}  // namespace

std::string Value::type_name() const {
  struct Namer {
    std::string operator()(const None&) const { return "None"; }
    std::string operator()(bool) const { return "bool"; }
    std::string operator()(int64_t) const { return "int"; }
    std::string operator()(double) const { return "float"; }
    std::string operator()(const std::string&) const { return "str"; }
    std::string operator()(const Tuple&) const { return "tuple"; }
    std::string operator()(const List&) const { return "list"; }
    std::string operator()(const Dict&) const { return "dict"; }
    std::string operator()(const Global& g) const { return "global " + g.qualified(); }
    std::string operator()(const Call& c) const { return c.callee.qualified() + "(...)"; }
    std::string operator()(const PersistentId&) const { return "persistent id"; }
  };
  return std::visit(Namer{}, v);
}

Ref make(decltype(Value::v) v) {
  auto r = std::make_shared<Value>();
  r->v = std::move(v);
  return r;
}

Ref load(std::span<const uint8_t> bytes, const Rules& rules, const std::string& where) {
  return Machine(bytes, rules, where).run();
}

}  // namespace sf::pickle
