#include "chat/jinja_lexer.hpp"

#include <cstdlib>
#include <optional>

#include "chat/pystr.hpp"
#include "core/error.hpp"
#include "tokenizer/unicode.hpp"

namespace sf::chat::jinja {

std::string normalize_source(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_name_char(char c) {
  return is_name_start(c) || is_digit(c);
}
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Lexer {
 public:
  explicit Lexer(std::string_view src) : s_(src) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < s_.size(); ++i) {
      if (s_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < s_.size()) {
      const size_t k = next_tag(pos);
      if (k == std::string_view::npos) {
        emit_data(pos, std::string(s_.substr(pos)));
        break;
      }
      std::string text(s_.substr(pos, k - pos));
      const char kind = s_[k + 1];
      size_t p = k + 2;
      char sign = 0;
      if (p < s_.size() && (s_[p] == '-' || s_[p] == '+')) sign = s_[p];
      std::optional<size_t> raw_end;
      if (kind == '%') raw_end = match_raw_begin(k);
      text = lstrip_text(std::move(text), sign, kind == '{', line_starting);
      emit_data(pos, std::move(text));
      if (raw_end) {
        line_starting = s_[*raw_end - 1] == '\n';
        pos = lex_raw(*raw_end, line_starting);
        continue;
      }
      if (sign) ++p;
      if (kind == '#') {
        pos = skip_comment(p, k, line_starting);
      } else {
        pos = lex_tag(k, p, kind == '{', line_starting);
      }
    }
    Token eof{Tok::Eof, "", 0, 0, 0, 0};
    position(s_.size(), eof);
    out_.push_back(eof);
    return std::move(out_);
  }

 private:
  std::string_view s_;
  std::vector<size_t> line_starts_;
  std::vector<Token> out_;

  void position(size_t off, Token& t) const {
    size_t lo = 0, hi = line_starts_.size();
    while (hi - lo > 1) {
      const size_t mid = (lo + hi) / 2;
      (line_starts_[mid] <= off ? lo : hi) = mid;
    }
    t.line = static_cast<int>(lo + 1);
    t.col = static_cast<int>(py::length(s_.substr(line_starts_[lo], off - line_starts_[lo])) + 1);
  }

  [[noreturn]] void fail_at(size_t off, Status st, const std::string& msg) const {
    Token t;
    position(off, t);
    sf::fail(st, "chat template line {}, column {}: {}", t.line, t.col, msg);
  }

  size_t next_tag(size_t pos) const {
    for (size_t k = s_.find('{', pos); k != std::string_view::npos; k = s_.find('{', k + 1)) {
      if (k + 1 < s_.size() && (s_[k + 1] == '{' || s_[k + 1] == '%' || s_[k + 1] == '#')) return k;
    }
    return std::string_view::npos;
  }

  // Length in bytes of the whitespace (Python \s) run at p.
  size_t space_run(size_t p) const {
    size_t q = p;
    while (q < s_.size()) {
      const auto d = sf::tok::decode_utf8(s_, q);
      if (!py::is_space(d.cp)) break;
      q += d.len;
    }
    return q - p;
  }

  bool starts(size_t p, std::string_view lit) const { return s_.substr(p, lit.size()) == lit; }

  // {%(-|+|)\s*raw\s*(?:-%}\s*|%}): the end offset of a raw opening tag at k, if it is one.
  std::optional<size_t> match_raw_begin(size_t k) const {
    size_t p = k + 2;
    if (p < s_.size() && (s_[p] == '-' || s_[p] == '+')) ++p;
    p += space_run(p);
    if (!starts(p, "raw")) return std::nullopt;
    p += 3;
    p += space_run(p);
    if (starts(p, "-%}")) return p + 3 + space_run(p + 3);
    if (starts(p, "%}")) return p + 2;
    return std::nullopt;
  }

  // jinja2's OptionalLStrip: "-" strips all whitespace before the tag; otherwise lstrip_blocks
  // removes the spaces and tabs that open the tag's line (not for {{ }}, not with "+").
  std::string lstrip_text(std::string text, char sign, bool is_variable, bool line_starting) const {
    if (sign == '-') return py::strip(text, std::nullopt, py::Side::Right);
    if (sign == '+' || is_variable) return text;
    const size_t nl = text.rfind('\n');
    const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
    if (l_pos == 0 && !line_starting) return text;
    const std::string_view tail = std::string_view(text).substr(l_pos);
    if (tail.empty()) return text;
    for (size_t q = 0; q < tail.size();) {
      const auto d = sf::tok::decode_utf8(tail, q);
      if (!py::is_space(d.cp)) return text;
      q += d.len;
    }
    text.resize(l_pos);
    return text;
  }

  void emit_data(size_t off, std::string text) {
    if (text.empty()) return;
    Token t{Tok::Data, std::move(text)};
    position(off, t);
    out_.push_back(std::move(t));
  }

  // After "%}" / "#}": trim_blocks eats one newline; after "-%}" all whitespace; "+%}" nothing.
  size_t after_end(size_t close, size_t len, char sign, bool& line_starting) const {
    size_t q = close + len;
    if (sign == '-') {
      q += space_run(q);
    } else if (sign != '+' && q < s_.size() && s_[q] == '\n') {
      ++q;
    }
    line_starting = s_[q - 1] == '\n';
    return q;
  }

  size_t skip_comment(size_t p, size_t open, bool& line_starting) const {
    const size_t k = s_.find("#}", p);
    if (k == std::string_view::npos) fail_at(open, Status::Format, "Missing end of comment tag");
    char sign = 0;
    if (k > p && (s_[k - 1] == '-' || s_[k - 1] == '+')) sign = s_[k - 1];
    return after_end(sign ? k - 1 : k, sign ? 3 : 2, sign, line_starting);
  }

  size_t lex_raw(size_t p, bool& line_starting) {
    for (size_t k = s_.find("{%", p); k != std::string_view::npos; k = s_.find("{%", k + 1)) {
      size_t q = k + 2;
      char sign = 0;
      if (q < s_.size() && (s_[q] == '-' || s_[q] == '+')) sign = s_[q++];
      q += space_run(q);
      if (!starts(q, "endraw")) continue;
      q += 6;
      q += space_run(q);
      size_t end;
      if (starts(q, "+%}")) {
        end = q + 3;
      } else if (starts(q, "-%}")) {
        end = q + 3 + space_run(q + 3);
      } else if (starts(q, "%}")) {
        end = q + 2 + (q + 2 < s_.size() && s_[q + 2] == '\n');
      } else {
        continue;
      }
      emit_data(p, lstrip_text(std::string(s_.substr(p, k - p)), sign, false, line_starting));
      line_starting = s_[end - 1] == '\n';
      return end;
    }
    fail_at(p, Status::Format, "Missing end of raw directive");
  }

  size_t lex_tag(size_t open, size_t p, bool is_var, bool& line_starting) {
    Token begin{is_var ? Tok::VarBegin : Tok::BlockBegin, ""};
    position(open, begin);
    out_.push_back(begin);
    std::vector<char> balance;
    while (true) {
      if (p >= s_.size()) {
        fail_at(open, Status::Format,
                is_var ? "unexpected end of template, expected 'end of print statement'"
                       : "unexpected end of template, expected 'end of statement block'");
      }
      if (balance.empty()) {
        Token end{is_var ? Tok::VarEnd : Tok::BlockEnd, ""};
        position(p, end);
        if (is_var) {
          if (starts(p, "-}}")) {
            out_.push_back(end);
            return after_end(p, 3, '-', line_starting);
          }
          if (starts(p, "}}")) {
            out_.push_back(end);
            line_starting = false;
            return p + 2;
          }
        } else {
          for (char sign : {'+', '-'}) {
            if (starts(p, std::string{sign} + "%}")) {
              out_.push_back(end);
              return after_end(p, 3, sign, line_starting);
            }
          }
          if (starts(p, "%}")) {
            out_.push_back(end);
            return after_end(p, 2, 0, line_starting);
          }
        }
      }
      if (const size_t ws = space_run(p)) {
        p += ws;
        continue;
      }
      p = lex_token(p, balance);
    }
  }

  // (\d+_)*\d+ at p: the end offset, or p when there is none.
  size_t digits(size_t p) const {
    size_t q = p;
    if (q >= s_.size() || !is_digit(s_[q])) return p;
    while (q < s_.size() && is_digit(s_[q])) {
      ++q;
      if (q + 1 < s_.size() && s_[q] == '_' && is_digit(s_[q + 1])) ++q;
    }
    return q;
  }

  size_t exponent(size_t p) const {
    if (p >= s_.size() || (s_[p] != 'e' && s_[p] != 'E')) return p;
    size_t q = p + 1;
    if (q < s_.size() && (s_[q] == '+' || s_[q] == '-')) ++q;
    const size_t e = digits(q);
    return e == q ? p : e;
  }

  size_t match_float(size_t p) const {
    if (p > 0 && s_[p - 1] == '.') return p;
    const size_t d1 = digits(p);
    if (d1 == p) return p;
    if (d1 < s_.size() && s_[d1] == '.') {
      const size_t d2 = digits(d1 + 1);
      if (d2 != d1 + 1) {
        const size_t e = exponent(d2);
        return e;  // with or without an exponent
      }
    }
    const size_t e = exponent(d1);
    return e == d1 ? p : e;
  }

  size_t match_integer(size_t p) const {
    const char c = s_[p];
    if (c == '0' && p + 1 < s_.size()) {
      const char x = static_cast<char>(s_[p + 1] | 0x20);
      int base = x == 'b' ? 2 : x == 'o' ? 8 : x == 'x' ? 16 : 0;
      if (base) {
        size_t q = p + 2, last = p;
        while (true) {
          size_t r = q;
          if (r < s_.size() && s_[r] == '_') ++r;
          const int v = r < s_.size() ? hex_value(s_[r]) : -1;
          if (v < 0 || v >= base) break;
          q = r + 1;
          last = q;
        }
        if (last != p) return last;
      }
    }
    if (c >= '1' && c <= '9') {
      size_t q = p + 1;
      while (true) {
        size_t r = q;
        if (r < s_.size() && s_[r] == '_') ++r;
        if (r < s_.size() && is_digit(s_[r])) {
          q = r + 1;
        } else {
          break;
        }
      }
      return q;
    }
    if (c == '0') {
      size_t q = p + 1;
      while (true) {
        size_t r = q;
        if (r < s_.size() && s_[r] == '_') ++r;
        if (r < s_.size() && s_[r] == '0') {
          q = r + 1;
        } else {
          break;
        }
      }
      return q;
    }
    return p;
  }

  std::string unescape(size_t open, std::string_view body) const {
    std::string out;
    for (size_t i = 0; i < body.size();) {
      const char c = body[i];
      if (c != '\\') {
        out += c;
        ++i;
        continue;
      }
      const auto next = sf::tok::decode_utf8(body, i + 1);  // the regex guarantees one exists
      i += 1 + next.len;
      if (next.cp >= 0x80) {
        // encode("ascii", "backslashreplace") turned the character into an escape of its own,
        // whose backslash this one now escapes: "\é" reads back as "\xe9".
        char buf[16];
        const uint32_t v = next.cp;
        std::snprintf(buf, sizeof buf, v <= 0xFF ? "x%02x" : v <= 0xFFFF ? "u%04x" : "U%08x", v);
        out += '\\';
        out += buf;
        continue;
      }
      const char e = static_cast<char>(next.cp);
      auto hex = [&](int n) -> uint32_t {
        uint32_t v = 0;
        for (int k = 0; k < n; ++k) {
          const int h = i < body.size() ? hex_value(body[i]) : -1;
          if (h < 0) {
            fail_at(open, Status::Format,
                    fmt::format("(unicode error) 'unicodeescape' codec can't decode bytes: "
                                "truncated \\{}{} escape",
                                e,
                                n == 2   ? "XX"
                                : n == 4 ? "uXXXX"
                                         : "UXXXXXXXX"));
          }
          v = v * 16 + static_cast<uint32_t>(h);
          ++i;
        }
        return v;
      };
      uint32_t cp;
      switch (e) {
        case '\n':
          continue;
        case '\\':
          out += '\\';
          continue;
        case '\'':
          out += '\'';
          continue;
        case '"':
          out += '"';
          continue;
        case 'a':
          out += '\a';
          continue;
        case 'b':
          out += '\b';
          continue;
        case 'f':
          out += '\f';
          continue;
        case 'n':
          out += '\n';
          continue;
        case 'r':
          out += '\r';
          continue;
        case 't':
          out += '\t';
          continue;
        case 'v':
          out += '\v';
          continue;
        case 'x':
          cp = hex(2);
          break;
        case 'u':
          cp = hex(4);
          break;
        case 'U':
          cp = hex(8);
          break;
        case 'N':
          fail_at(open, Status::UnsupportedShape,
                  "the \\N{...} string escape is outside the supported Jinja subset; write the "
                  "character itself");
        default:
          if (e >= '0' && e <= '7') {
            cp = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && i < body.size() && body[i] >= '0' && body[i] <= '7'; ++k) {
              cp = cp * 8 + static_cast<uint32_t>(body[i++] - '0');
            }
            break;
          }
          out += '\\';  // unknown escapes stay as written
          out += e;
          continue;
      }
      if (cp > 0x10FFFF) fail_at(open, Status::Format, "illegal Unicode character in string");
      if (cp >= 0xD800 && cp <= 0xDFFF) {
        fail_at(open, Status::UnsupportedShape,
                "a surrogate escape (\\ud800-\\udfff) in a string cannot be UTF-8 text");
      }
      sf::tok::append_utf8(out, static_cast<char32_t>(cp));
    }
    return out;
  }

  size_t lex_token(size_t p, std::vector<char>& balance) {
    Token t;
    position(p, t);
    const char c = s_[p];
    if (const size_t f = match_float(p); f != p) {
      std::string text;
      for (size_t k = p; k < f; ++k) {
        if (s_[k] != '_') text += s_[k];
      }
      t.type = Tok::Float;
      t.fval = std::strtod(text.c_str(), nullptr);
      t.text = std::move(text);
      out_.push_back(std::move(t));
      return f;
    }
    if (is_digit(c)) {
      const size_t e = match_integer(p);
      std::string text;
      for (size_t k = p; k < e; ++k) {
        if (s_[k] != '_') text += s_[k];
      }
      int base = 10;
      size_t skip = 0;
      if (text.size() > 1 && text[0] == '0') {
        const char x = static_cast<char>(text[1] | 0x20);
        base = x == 'b' ? 2 : x == 'o' ? 8 : x == 'x' ? 16 : 10;
        skip = base == 10 ? 0 : 2;
      }
      uint64_t v = 0;
      for (size_t k = skip; k < text.size(); ++k) {
        const uint64_t d = static_cast<uint64_t>(hex_value(text[k]));
        if (v > (static_cast<uint64_t>(INT64_MAX) - d) / static_cast<uint64_t>(base)) {
          fail_at(p, Status::UnsupportedShape,
                  "integer literal " + text +
                      " does not fit in 64 bits (Python's ints are "
                      "unbounded; this interpreter's are not)");
        }
        v = v * static_cast<uint64_t>(base) + d;
      }
      t.type = Tok::Integer;
      t.ival = static_cast<int64_t>(v);
      t.text = std::move(text);
      out_.push_back(std::move(t));
      return e;
    }
    if (is_name_start(c)) {
      size_t q = p + 1;
      while (q < s_.size() && is_name_char(s_[q])) ++q;
      if (q < s_.size() && static_cast<unsigned char>(s_[q]) >= 0x80) {
        fail_at(q, Status::UnsupportedShape,
                "non-ASCII identifiers are outside the supported Jinja subset");
      }
      t.type = Tok::Name;
      t.text = std::string(s_.substr(p, q - p));
      out_.push_back(std::move(t));
      return q;
    }
    if (static_cast<unsigned char>(c) >= 0x80) {
      fail_at(p, Status::UnsupportedShape,
              "non-ASCII identifiers are outside the supported Jinja subset");
    }
    if (c == '\'' || c == '"') {
      size_t q = p + 1;
      while (q < s_.size() && s_[q] != c) q += s_[q] == '\\' ? 2 : 1;
      if (q >= s_.size()) fail_at(p, Status::Format, unexpected_char(p));
      t.type = Tok::String;
      t.text = unescape(p, s_.substr(p + 1, q - p - 1));
      out_.push_back(std::move(t));
      return q + 1;
    }
    static constexpr std::string_view kOps[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/",
                                                "*",  "%",  "~",  "[",  "]",  "(",  ")", "{", "}",
                                                ">",  "<",  "=",  ".",  ":",  "|",  ",", ";"};
    for (std::string_view op : kOps) {
      if (!starts(p, op)) continue;
      if (op == "(" || op == "[" || op == "{") {
        if (balance.size() > 1000)
          fail_at(p, Status::UnsupportedShape, "brackets nested too deeply");
        balance.push_back(op == "(" ? ')' : op == "[" ? ']' : '}');
      } else if (op == ")" || op == "]" || op == "}") {
        if (balance.empty()) fail_at(p, Status::Format, fmt::format("unexpected '{}'", op));
        if (balance.back() != op[0]) {
          fail_at(p, Status::Format,
                  fmt::format("unexpected '{}', expected '{}'", op, balance.back()));
        }
        balance.pop_back();
      }
      t.type = Tok::Op;
      t.text = std::string(op);
      out_.push_back(std::move(t));
      return p + op.size();
    }
    fail_at(p, Status::Format, unexpected_char(p));
  }

  std::string unexpected_char(size_t p) const {
    return fmt::format("unexpected char {} at {}", py::repr(std::string(1, s_[p])),
                       py::length(s_.substr(0, p)));
  }
};

}  // namespace

std::vector<Token> lex(std::string_view source) {
  return Lexer(source).run();
}

}  // namespace sf::chat::jinja
