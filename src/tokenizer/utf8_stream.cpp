#include "tokenizer/utf8_stream.hpp"

namespace sf::tok {

namespace {
// Length of the UTF-8 sequence that starts with byte b, 0 when b cannot start one.
int seq_len(unsigned char b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}
// Whether the second byte is allowed after lead b (excludes overlongs, surrogates, > U+10FFFF).
bool second_ok(unsigned char lead, unsigned char c) {
  if ((c & 0xC0) != 0x80) return false;
  if (lead == 0xE0) return c >= 0xA0;
  if (lead == 0xED) return c <= 0x9F;
  if (lead == 0xF0) return c >= 0x90;
  if (lead == 0xF4) return c <= 0x8F;
  return true;
}
constexpr const char* kReplacement = "\xEF\xBF\xBD";
}  // namespace

std::string Utf8Stream::push(const std::string& bytes) {
  pending_ += bytes;
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const auto lead = static_cast<unsigned char>(pending_[i]);
    const int n = seq_len(lead);
    if (n == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    // Check the continuation bytes we have; stop (and wait) if the sequence is merely incomplete.
    int have = 1;
    bool bad = false;
    while (have < n && i + size_t(have) < pending_.size()) {
      const auto c = static_cast<unsigned char>(pending_[i + size_t(have)]);
      if (have == 1 ? !second_ok(lead, c) : (c & 0xC0) != 0x80) {
        bad = true;
        break;
      }
      ++have;
    }
    if (bad) {  // a maximal invalid subpart: one U+FFFD, resume at the offending byte
      out += kReplacement;
      i += size_t(have);
      continue;
    }
    if (have < n) break;  // incomplete: keep for the next push
    out.append(pending_, i, size_t(n));
    i += size_t(n);
  }
  pending_.erase(0, i);
  return out;
}

std::string Utf8Stream::finish() {
  std::string out = pending_.empty() ? "" : kReplacement;
  pending_.clear();
  return out;
}

}  // namespace sf::tok
