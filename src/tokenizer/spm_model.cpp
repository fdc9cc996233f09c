#include "tokenizer/spm_model.hpp"

#include <cmath>
#include <cstring>
#include <string_view>
#include <unordered_map>

#include "core/error.hpp"
#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

// Ids index dense tables (tokenizer.cpp allows ids below 2^24); Llama 2 has 32000 pieces.
constexpr size_t kMaxPieces = size_t{1} << 24;

// Protobuf wire types (https://protobuf.dev/programming-guides/encoding/).
enum Wire : uint32_t { kVarint = 0, kFixed64 = 1, kLength = 2, kFixed32 = 5 };

std::string clip(std::string_view s) {
  return s.size() > 40 ? std::string(s.substr(0, 37)) + "..." : std::string(s);
}

// One message's bytes. Offsets in errors count from the start of the file.
class Reader {
 public:
  Reader(std::span<const uint8_t> bytes, size_t base) : b_(bytes), base_(base) {}

  bool done() const { return pos_ == b_.size(); }

  struct Tag {
    uint32_t field, wire;
    size_t at;  // file offset of the tag
  };
  Tag tag() {
    const size_t at = base_ + pos_;
    const uint64_t v = varint("a field tag");
    if (v > UINT32_MAX || (v >> 3) == 0) {
      bad(at, "the field tag {} names field {}; expected a field number 1..{}", v, v >> 3,
          (uint32_t{1} << 29) - 1);
    }
    return {static_cast<uint32_t>(v >> 3), static_cast<uint32_t>(v & 7), at};
  }

  uint64_t varint(std::string_view what) {
    const size_t at = base_ + pos_;
    uint64_t v = 0;
    for (int i = 0; i < 10; ++i) {
      if (pos_ == b_.size()) bad(at, "the file ends inside {} (a varint)", what);
      const uint8_t byte = b_[pos_++];
      if (i == 9 && byte > 1) bad(at, "{} is a varint longer than 64 bits", what);
      v |= uint64_t(byte & 0x7f) << (7 * i);
      if (!(byte & 0x80)) return v;
    }
    bad(at, "{} is a varint of more than 10 bytes", what);
  }

  std::span<const uint8_t> length_delimited(std::string_view what, size_t& at) {
    const uint64_t n = varint(what);
    at = base_ + pos_;
    if (n > b_.size() - pos_) {
      bad(at, "{} claims {} bytes but only {} are left in its message", what, n, b_.size() - pos_);
    }
    const auto out = b_.subspan(pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return out;
  }

  uint32_t fixed32(std::string_view what) {
    const size_t at = base_ + pos_;
    if (b_.size() - pos_ < 4) bad(at, "the file ends inside {} (4 bytes)", what);
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t(b_[pos_ + i]) << (8 * i);  // little-endian
    pos_ += 4;
    return v;
  }

  void skip(const Tag& t) {
    switch (t.wire) {
      case kVarint:
        varint("a field");
        return;
      case kFixed64:
        if (b_.size() - pos_ < 8) bad(t.at, "the file ends inside field {} (8 bytes)", t.field);
        pos_ += 8;
        return;
      case kLength: {
        size_t at;
        length_delimited("a field", at);
        return;
      }
      case kFixed32:
        fixed32("a field");
        return;
      default:
        bad(t.at, "field {} has wire type {}, which SentencePiece models do not use", t.field,
            t.wire);
    }
  }

  template <typename... Args>
  [[noreturn]] static void bad(size_t at, fmt::format_string<Args...> f, Args&&... args) {
    fail(Status::Format,
         "tokenizer.model: at byte {}: {}; expected a SentencePiece model (the tokenizer.model of "
         "a Llama 2 or Mistral checkpoint). Is the file damaged or of another kind?",
         at, fmt::format(f, std::forward<Args>(args)...));
  }

  size_t base() const { return base_; }

 private:
  std::span<const uint8_t> b_;
  size_t base_, pos_ = 0;
};

void expect_wire(const Reader::Tag& t, uint32_t wire, std::string_view name) {
  if (t.wire != wire) {
    Reader::bad(t.at, "{} (field {}) has wire type {}; expected {}", name, t.field, t.wire, wire);
  }
}

// A nested message: its bytes, read by a Reader that reports file offsets.
Reader message(Reader& r, const Reader::Tag& t, std::string_view name) {
  expect_wire(t, kLength, name);
  size_t at;
  const auto bytes = r.length_delimited(name, at);
  return Reader(bytes, at);
}

std::string utf8_string(Reader& r, const Reader::Tag& t, std::string_view name) {
  expect_wire(t, kLength, name);
  size_t at;
  const auto bytes = r.length_delimited(name, at);
  std::string s(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  if (!is_valid_utf8(s)) Reader::bad(at, "{} is not valid UTF-8", name);
  return s;
}

size_t byte_count(Reader& r, const Reader::Tag& t, std::string_view name) {
  expect_wire(t, kLength, name);
  size_t at;
  return r.length_delimited(name, at).size();
}

bool boolean(Reader& r, const Reader::Tag& t, std::string_view name) {
  expect_wire(t, kVarint, name);
  return r.varint(name) != 0;
}

// int32 and enum fields: a negative value is sent sign-extended to 64 bits.
int32_t int32(Reader& r, const Reader::Tag& t, std::string_view name) {
  expect_wire(t, kVarint, name);
  const uint64_t v = r.varint(name);
  const auto s = static_cast<int64_t>(v);
  if (s < INT32_MIN || s > INT32_MAX) {
    Reader::bad(t.at, "{} is {}; expected a 32-bit integer", name, v);
  }
  return static_cast<int32_t>(s);
}

SpmPiece parse_piece(Reader r, size_t index, size_t at) {
  SpmPiece p;
  bool has_piece = false;
  while (!r.done()) {
    const auto t = r.tag();
    if (t.field == 1) {
      p.piece = utf8_string(r, t, fmt::format("pieces[{}].piece", index));
      has_piece = true;
    } else if (t.field == 2) {
      expect_wire(t, kFixed32, "pieces[].score");
      const uint32_t bits = r.fixed32("a score");
      std::memcpy(&p.score, &bits, sizeof p.score);
      if (!std::isfinite(p.score)) {
        Reader::bad(t.at, "pieces[{}].score is {}; expected a finite number", index, p.score);
      }
    } else if (t.field == 3) {
      const int32_t type = int32(r, t, "pieces[].type");
      if (type < 1 || type > 6) {
        Reader::bad(t.at,
                    "pieces[{}].type is {}; expected NORMAL (1), UNKNOWN (2), CONTROL (3), "
                    "USER_DEFINED (4), UNUSED (5) or BYTE (6)",
                    index, type);
      }
      p.type = static_cast<SpmType>(type);
    } else {
      r.skip(t);
    }
  }
  if (!has_piece || p.piece.empty()) Reader::bad(at, "pieces[{}] has no text", index);
  return p;
}

void parse_trainer_spec(Reader r, SpmModel& m) {
  while (!r.done()) {
    const auto t = r.tag();
    switch (t.field) {
      case 3: {
        const int32_t type = int32(r, t, "trainer_spec.model_type");
        if (type < 1 || type > 4) {
          Reader::bad(t.at,
                      "trainer_spec.model_type is {}; expected UNIGRAM (1), BPE (2), WORD (3) "
                      "or CHAR (4)",
                      type);
        }
        m.model_type = static_cast<SpmModelType>(type);
        break;
      }
      case 24:
        m.treat_whitespace_as_suffix = boolean(r, t, "trainer_spec.treat_whitespace_as_suffix");
        break;
      case 35:
        m.byte_fallback = boolean(r, t, "trainer_spec.byte_fallback");
        break;
      case 40:
        m.unk_id = int32(r, t, "trainer_spec.unk_id");
        break;
      case 41:
        m.bos_id = int32(r, t, "trainer_spec.bos_id");
        break;
      case 42:
        m.eos_id = int32(r, t, "trainer_spec.eos_id");
        break;
      case 43:
        m.pad_id = int32(r, t, "trainer_spec.pad_id");
        break;
      case 45:
        m.unk_piece = utf8_string(r, t, "trainer_spec.unk_piece");
        break;
      case 46:
        m.bos_piece = utf8_string(r, t, "trainer_spec.bos_piece");
        break;
      case 47:
        m.eos_piece = utf8_string(r, t, "trainer_spec.eos_piece");
        break;
      case 48:
        m.pad_piece = utf8_string(r, t, "trainer_spec.pad_piece");
        break;
      default:
        r.skip(t);
    }
  }
}

// Repeated occurrences of a message merge (protobuf semantics): fields seen later win.
void parse_normalizer(Reader r, SpmNormalizer& n, std::string_view name) {
  const auto field = [&](const char* f) { return fmt::format("{}.{}", name, f); };
  while (!r.done()) {
    const auto t = r.tag();
    switch (t.field) {
      case 1:
        n.name = utf8_string(r, t, field("name"));
        break;
      case 2:
        n.charsmap_bytes = byte_count(r, t, field("precompiled_charsmap"));
        break;
      case 3:
        n.add_dummy_prefix = boolean(r, t, field("add_dummy_prefix"));
        break;
      case 4:
        n.remove_extra_whitespaces = boolean(r, t, field("remove_extra_whitespaces"));
        break;
      case 5:
        n.escape_whitespaces = boolean(r, t, field("escape_whitespaces"));
        break;
      case 6:
        n.rule_tsv_bytes = byte_count(r, t, field("normalization_rule_tsv"));
        break;
      default:
        r.skip(t);
    }
  }
}

}  // namespace

SpmModel parse_spm_model(std::span<const uint8_t> bytes) {
  SpmModel m;
  SpmNormalizer denormalizer;
  std::vector<size_t> piece_at;
  Reader r(bytes, 0);
  while (!r.done()) {
    const auto t = r.tag();
    switch (t.field) {
      case 1: {
        if (m.pieces.size() == kMaxPieces) {
          Reader::bad(t.at, "the model has more than {} pieces", kMaxPieces);
        }
        Reader piece = message(r, t, "pieces[]");
        piece_at.push_back(piece.base());
        m.pieces.push_back(parse_piece(piece, m.pieces.size(), t.at));
        break;
      }
      case 2:
        parse_trainer_spec(message(r, t, "trainer_spec"), m);
        break;
      case 3:
        parse_normalizer(message(r, t, "normalizer_spec"), m.normalizer, "normalizer_spec");
        break;
      case 5:
        parse_normalizer(message(r, t, "denormalizer_spec"), denormalizer, "denormalizer_spec");
        break;
      default:
        r.skip(t);
    }
  }
  if (m.pieces.empty()) {
    Reader::bad(bytes.size(), "the file has no pieces (no field 1 of ModelProto)");
  }
  std::unordered_map<std::string_view, size_t> seen;
  seen.reserve(m.pieces.size());
  for (size_t i = 0; i < m.pieces.size(); ++i) {
    auto [it, inserted] = seen.emplace(m.pieces[i].piece, i);
    if (!inserted) {
      Reader::bad(piece_at[i], "pieces[{}] \"{}\" repeats pieces[{}]", i, clip(m.pieces[i].piece),
                  it->second);
    }
  }
  m.has_denormalizer = denormalizer.charsmap_bytes > 0 || denormalizer.rule_tsv_bytes > 0;
  return m;
}

}  // namespace sf::tok
