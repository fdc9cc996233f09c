#include "chat/pystr.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "tokenizer/unicode.hpp"

namespace sf::chat::py {
namespace {

struct CodepointRange {
  char32_t first, last;
};
struct CaseMapping {
  char32_t cp;
  char32_t to[3];  // 0-terminated when shorter than 3
};

#include "chat/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodepointRange (&table)[N], char32_t cp) {
  const auto* end = table + N;
  const auto* it = std::upper_bound(
      table, end, cp, [](char32_t c, const CodepointRange& r) { return c < r.first; });
  return it != table && cp <= (it - 1)->last;
}

template <size_t N>
void map_case(const CaseMapping (&table)[N], char32_t cp, std::vector<char32_t>& out) {
  const auto* end = table + N;
  const auto* it =
      std::lower_bound(table, end, cp, [](const CaseMapping& m, char32_t c) { return m.cp < c; });
  if (it == end || it->cp != cp) {
    out.push_back(cp);
    return;
  }
  for (char32_t c : it->to) {
    if (c == 0) break;
    out.push_back(c);
  }
}

bool is_cased(char32_t cp) {
  return in_ranges(kCased, cp);
}
bool is_case_ignorable(char32_t cp) {
  return in_ranges(kCaseIgnorable, cp);
}

// CPython's lower_ucs4: U+03A3 lowers to the final sigma when it ends a cased word.
void lower_at(const std::vector<char32_t>& s, size_t i, std::vector<char32_t>& out) {
  if (s[i] != 0x3A3) {
    map_case(kLower, s[i], out);
    return;
  }
  size_t j = i;
  char32_t c = 0;
  bool found = false;
  while (j > 0) {
    c = s[--j];
    if (!is_case_ignorable(c)) {
      found = true;
      break;
    }
  }
  bool final_sigma = found && is_cased(c);
  if (final_sigma) {
    size_t k = i + 1;
    for (; k < s.size(); ++k) {
      if (!is_case_ignorable(s[k])) break;
    }
    final_sigma = k == s.size() || !is_cased(s[k]);
  }
  out.push_back(final_sigma ? 0x3C2 : 0x3C3);
}

void append_hex(std::string& out, const char* prefix, uint32_t v, int width) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%s%0*x", prefix, width, v);
  out += buf;
}

}  // namespace

bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

bool is_printable(char32_t cp) {
  return !in_ranges(kNotPrintable, cp);
}

bool is_ascii(std::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return false;
  }
  return true;
}

bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // Prompts are mostly ASCII: skip it eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + len > n || p[i + 1] < lo || p[i + 1] > hi) return false;
    for (size_t k = 2; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

size_t length(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::vector<size_t> cp_offsets(std::string_view s) {
  std::vector<size_t> off;
  off.reserve(s.size() + 1);
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) off.push_back(i);
  }
  off.push_back(s.size());
  return off;
}

std::vector<char32_t> decode(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto d = sf::tok::decode_utf8(s, i);
    out.push_back(d.cp);
    i += d.len;
  }
  return out;
}

std::string encode(const std::vector<char32_t>& cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t c : cps) sf::tok::append_utf8(out, c);
  return out;
}

std::string upper(std::string_view s) {
  if (is_ascii(s)) {
    std::string out(s);
    for (char& c : out) {
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    }
    return out;
  }
  std::vector<char32_t> out;
  for (char32_t c : decode(s)) map_case(kUpper, c, out);
  return encode(out);
}

std::string lower(std::string_view s) {
  if (is_ascii(s)) {
    std::string out(s);
    for (char& c : out) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    }
    return out;
  }
  const auto cps = decode(s);
  std::vector<char32_t> out;
  for (size_t i = 0; i < cps.size(); ++i) lower_at(cps, i, out);
  return encode(out);
}

std::string title(std::string_view s) {
  const auto cps = decode(s);
  std::vector<char32_t> out;
  bool previous_is_cased = false;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (previous_is_cased) {
      lower_at(cps, i, out);
    } else {
      map_case(kTitle, cps[i], out);
    }
    previous_is_cased = is_cased(cps[i]);
  }
  return encode(out);
}

std::string capitalize(std::string_view s) {
  const auto cps = decode(s);
  std::vector<char32_t> out;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (i == 0) {
      map_case(kTitle, cps[i], out);
    } else {
      lower_at(cps, i, out);
    }
  }
  return encode(out);
}

std::string strip(std::string_view s, const std::optional<std::string>& chars, Side side) {
  std::vector<char32_t> set;
  if (chars) set = decode(*chars);
  auto strippable = [&](char32_t c) {
    return chars ? std::find(set.begin(), set.end(), c) != set.end() : is_space(c);
  };
  // Walk in from both ends only: contents can be long, their edges are short.
  size_t b = 0, e = s.size();
  if (side != Side::Right) {
    while (b < e) {
      const auto d = sf::tok::decode_utf8(s, b);
      if (!strippable(d.cp)) break;
      b += d.len;
    }
  }
  if (side != Side::Left) {
    while (e > b) {
      size_t k = e - 1;
      while (k > b && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
      if (!strippable(sf::tok::decode_utf8(s, k).cp)) break;
      e = k;
    }
  }
  return std::string(s.substr(b, e - b));
}

std::vector<std::string> split_whitespace(std::string_view s, int64_t maxsplit) {
  const auto cps = decode(s);
  std::vector<std::string> out;
  size_t i = 0;
  const size_t n = cps.size();
  while (true) {
    while (i < n && is_space(cps[i])) ++i;
    if (i == n) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      size_t e = n;
      while (e > i && is_space(cps[e - 1])) --e;
      out.push_back(encode(std::vector<char32_t>(cps.begin() + i, cps.begin() + e)));
      break;
    }
    size_t j = i;
    while (j < n && !is_space(cps[j])) ++j;
    out.push_back(encode(std::vector<char32_t>(cps.begin() + i, cps.begin() + j)));
    i = j;
  }
  return out;
}

std::vector<std::string> rsplit_whitespace(std::string_view s, int64_t maxsplit) {
  const auto cps = decode(s);
  std::vector<std::string> out;
  size_t e = cps.size();
  while (true) {
    while (e > 0 && is_space(cps[e - 1])) --e;
    if (e == 0) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      size_t b = 0;
      while (b < e && is_space(cps[b])) ++b;
      out.push_back(encode(std::vector<char32_t>(cps.begin() + b, cps.begin() + e)));
      break;
    }
    size_t b = e;
    while (b > 0 && !is_space(cps[b - 1])) --b;
    out.push_back(encode(std::vector<char32_t>(cps.begin() + b, cps.begin() + e)));
    e = b;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<std::string> split(std::string_view s, std::string_view sep, int64_t maxsplit) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    const size_t k = s.find(sep, pos);
    if (k == std::string_view::npos) break;
    out.emplace_back(s.substr(pos, k - pos));
    pos = k + sep.size();
  }
  out.emplace_back(s.substr(pos));
  return out;
}

std::vector<std::string> rsplit(std::string_view s, std::string_view sep, int64_t maxsplit) {
  std::vector<std::string> out;
  size_t end = s.size();
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    if (end < sep.size()) break;
    const size_t k = s.rfind(sep, end - sep.size());
    if (k == std::string_view::npos) break;
    out.emplace_back(s.substr(k + sep.size(), end - k - sep.size()));
    end = k;
  }
  out.emplace_back(s.substr(0, end));
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<std::string> splitlines(std::string_view s, bool keepends) {
  const auto cps = decode(s);
  std::vector<std::string> out;
  size_t i = 0, start = 0;
  const size_t n = cps.size();
  while (i < n) {
    const char32_t c = cps[i];
    const bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D ||
                     c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) {
      ++i;
      continue;
    }
    size_t eol = i + 1;
    if (c == '\r' && eol < n && cps[eol] == '\n') ++eol;
    const size_t stop = keepends ? eol : i;
    out.push_back(encode(std::vector<char32_t>(cps.begin() + start, cps.begin() + stop)));
    i = start = eol;
  }
  if (start < n) out.push_back(encode(std::vector<char32_t>(cps.begin() + start, cps.end())));
  return out;
}

std::string replace(std::string_view s, std::string_view old, std::string_view repl,
                    int64_t count) {
  std::string out;
  if (old.empty()) {
    const auto off = cp_offsets(s);
    int64_t done = 0;
    for (size_t i = 0; i + 1 < off.size(); ++i) {
      if (count < 0 || done < count) {
        out += repl;
        ++done;
      }
      out.append(s.substr(off[i], off[i + 1] - off[i]));
    }
    if (count < 0 || done < count) out += repl;
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t k = s.find(old, pos);
    if (k == std::string_view::npos) break;
    out.append(s.substr(pos, k - pos));
    out.append(repl);
    pos = k + old.size();
    ++done;
  }
  out.append(s.substr(pos));
  return out;
}

int64_t count(std::string_view s, std::string_view sub) {
  if (sub.empty()) return static_cast<int64_t>(length(s)) + 1;
  int64_t n = 0;
  for (size_t pos = s.find(sub); pos != std::string_view::npos;
       pos = s.find(sub, pos + sub.size())) {
    ++n;
  }
  return n;
}

int64_t find(std::string_view s, std::string_view sub, bool from_right) {
  const size_t k = from_right ? s.rfind(sub) : s.find(sub);
  if (k == std::string_view::npos) return -1;
  return static_cast<int64_t>(length(s.substr(0, k)));
}

std::string repr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (size_t i = 0; i < s.size();) {
    const auto d = sf::tok::decode_utf8(s, i);
    const char32_t c = d.cp;
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7F) {
      append_hex(out, "\\x", c, 2);
    } else if (c < 0x7F) {
      out += static_cast<char>(c);
    } else if (is_printable(c)) {
      out.append(s.substr(i, d.len));
    } else if (c <= 0xFF) {
      append_hex(out, "\\x", c, 2);
    } else if (c <= 0xFFFF) {
      append_hex(out, "\\u", c, 4);
    } else {
      append_hex(out, "\\U", c, 8);
    }
    i += d.len;
  }
  out += quote;
  return out;
}

std::string json_quote(std::string_view s, bool ensure_ascii) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const auto d = sf::tok::decode_utf8(s, i);
    const char32_t c = d.cp;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          append_hex(out, "\\u", c, 4);
        } else if (c < 0x80 || !ensure_ascii) {
          out.append(s.substr(i, d.len));
        } else if (c <= 0xFFFF) {
          append_hex(out, "\\u", c, 4);
        } else {
          const uint32_t v = c - 0x10000;
          append_hex(out, "\\u", 0xD800 + (v >> 10), 4);
          append_hex(out, "\\u", 0xDC00 + (v & 0x3FF), 4);
        }
    }
    i += d.len;
  }
  out += '"';
  return out;
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  // Shortest round-trip digits, then CPython's layout: fixed for 1e-4 <= |d| < 1e16.
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  const size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  const int exp = std::stoi(sci.substr(e + 1));
  const bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant) {
    if (c != '.') digits += c;
  }
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    const int point = exp + 1;  // digits before the decimal point
    if (point <= 0) {
      out += "0.";
      out.append(static_cast<size_t>(-point), '0');
      out += digits;
    } else if (static_cast<size_t>(point) >= digits.size()) {
      out += digits;
      out.append(static_cast<size_t>(point) - digits.size(), '0');
      out += ".0";
    } else {
      out.append(digits, 0, static_cast<size_t>(point));
      out += '.';
      out.append(digits, static_cast<size_t>(point));
    }
    return out;
  }
  out += digits[0];
  if (digits.size() > 1) {
    out += '.';
    out.append(digits, 1);
  }
  char eb[16];
  std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
  return out + eb;
}

}  // namespace sf::chat::py
