#include "tokenizer/decoder.hpp"

#include <algorithm>
#include <optional>

#include "tokenizer/byte_level.hpp"
#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

std::string replace_all(std::string_view text, std::string_view pattern, std::string_view content) {
  if (pattern.empty()) return std::string(text);
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = text.find(pattern, pos)) != std::string_view::npos;
       pos = hit + pattern.size()) {
    out.append(text.substr(pos, hit - pos));
    out.append(content);
  }
  out.append(text.substr(pos));
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte of a token spelled "<0xXX>", as HF's ByteFallback reads it (Rust's from_str_radix,
// which also takes "+X").
std::optional<uint8_t> fallback_byte(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token[5] != '>') return std::nullopt;
  const int hi = hex_digit(token[3]), lo = hex_digit(token[4]);
  if (token[3] == '+' && lo >= 0) return static_cast<uint8_t>(lo);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

std::string byte_level_token(std::string_view token) {
  if (auto bytes = byte_level_bytes(token)) return std::move(*bytes);
  return std::string(token);  // a character outside the alphabet: the token is its own UTF-8
}

std::vector<std::string> byte_fallback(std::vector<std::string> tokens) {
  std::vector<std::string> out;
  std::string run;  // bytes of consecutive byte tokens
  const auto flush = [&] {
    if (run.empty()) return;
    if (is_valid_utf8(run)) {
      out.push_back(run);
    } else {
      for (size_t i = 0; i < run.size(); ++i) out.emplace_back(kReplacement);
    }
    run.clear();
  };
  for (std::string& t : tokens) {
    if (auto b = fallback_byte(t)) {
      run += static_cast<char>(*b);
      continue;
    }
    flush();
    out.push_back(std::move(t));
  }
  flush();
  return out;
}

std::string strip(const std::string& token, const Decoder::Strip& s) {
  std::vector<std::pair<size_t, size_t>> chars;  // (offset, length)
  for (size_t pos = 0; pos < token.size();) {
    const Decoded d = decode_utf8(token, pos);
    chars.emplace_back(pos, d.len);
    pos += d.len;
  }
  const auto is_content = [&](size_t i) {
    return decode_utf8(token, chars[i].first).cp == s.content;
  };
  size_t begin = 0, end = chars.size();
  while (begin < std::min(s.start, chars.size()) && is_content(begin)) ++begin;
  for (size_t k = 0; k < s.stop && end > 0 && is_content(end - 1); ++k) --end;
  if (begin >= end) return "";
  return token.substr(chars[begin].first,
                      chars[end - 1].first + chars[end - 1].second - chars[begin].first);
}

}  // namespace

Decoder Decoder::none() {
  Decoder d;
  d.join_with_spaces_ = true;
  return d;
}

bool Decoder::byte_level() const {
  for (const Step& s : steps_) {
    if (std::holds_alternative<ByteLevel>(s)) return true;
  }
  return false;
}

std::string Decoder::decode(std::vector<std::string> tokens) const {
  for (const Step& step : steps_) {
    if (std::holds_alternative<ByteLevel>(step)) {
      std::string bytes;
      for (const std::string& t : tokens) bytes += byte_level_token(t);
      tokens.assign(1, to_valid_utf8(bytes));
    } else if (const auto* r = std::get_if<Replace>(&step)) {
      for (std::string& t : tokens) t = replace_all(t, r->pattern, r->content);
    } else if (std::holds_alternative<ByteFallback>(step)) {
      tokens = byte_fallback(std::move(tokens));
    } else if (std::holds_alternative<Fuse>(step)) {
      std::string all;
      for (const std::string& t : tokens) all += t;
      tokens.assign(1, std::move(all));
    } else if (const auto* s = std::get_if<Strip>(&step)) {
      for (std::string& t : tokens) t = strip(t, *s);
    } else {
      const auto& m = std::get<Metaspace>(step);
      for (size_t i = 0; i < tokens.size(); ++i) {
        const bool first = i == 0 && !m.prepend_never;
        tokens[i] = replace_all(tokens[i], m.replacement, first ? "" : " ");
      }
    }
  }
  std::string out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (join_with_spaces_ && i > 0) out += ' ';
    out += tokens[i];
  }
  return out;
}

std::string Decoder::token_bytes(std::string_view token) const {
  std::string t(token);
  for (const Step& step : steps_) {
    if (std::holds_alternative<ByteLevel>(step)) {
      t = byte_level_token(t);
    } else if (const auto* r = std::get_if<Replace>(&step)) {
      t = replace_all(t, r->pattern, r->content);
    } else if (std::holds_alternative<ByteFallback>(step)) {
      if (auto b = fallback_byte(t)) t.assign(1, static_cast<char>(*b));
    } else if (const auto* m = std::get_if<Metaspace>(&step)) {
      t = replace_all(t, m->replacement, " ");
    }
  }
  return t;
}

}  // namespace sf::tok
