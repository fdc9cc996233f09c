#include "tokenizer/nfc.hpp"

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

struct Decomposition {
  uint32_t cp, first, second;  // second == 0: a singleton
};
struct CombiningClassRange {
  uint32_t first, last;
  uint8_t ccc;
};
struct Composition {
  uint32_t first, second, composite;
};

#include "tokenizer/nfc_tables.inc"

// Hangul syllables decompose and compose by arithmetic (Unicode 15 §3.12), not by table.
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount;
constexpr char32_t kSCount = kLCount * kNCount;

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  auto it = std::lower_bound(std::begin(kCombiningClasses), std::end(kCombiningClasses), cp,
                             [](const CombiningClassRange& r, char32_t c) { return r.last < c; });
  return it != std::end(kCombiningClasses) && it->first <= cp ? it->ccc : 0;
}

const Decomposition* find_decomposition(char32_t cp) {
  auto it = std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), cp,
                             [](const Decomposition& d, char32_t c) { return d.cp < c; });
  return it != std::end(kDecompositions) && it->cp == cp ? &*it : nullptr;
}

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  const Decomposition* d = cp < 0xC0 ? nullptr : find_decomposition(cp);
  if (d == nullptr) {
    out.push_back(cp);
    return;
  }
  decompose(d->first, out);  // depth is at most 4 in the Unicode data
  if (d->second != 0) decompose(d->second, out);
}

// 0 when the pair does not compose.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  auto it = std::lower_bound(
      std::begin(kCompositions), std::end(kCompositions), std::pair<char32_t, char32_t>(a, b),
      [](const Composition& c, std::pair<char32_t, char32_t> key) {
        return c.first != key.first ? c.first < key.first : c.second < key.second;
      });
  return it != std::end(kCompositions) && it->first == a && it->second == b ? it->composite : 0;
}

}  // namespace

std::string to_nfc(std::string_view text) {
  // Every code point below U+0300 is its own NFC and composes with nothing before it; such text
  // has no byte >= 0xCC (the lead bytes of U+0300 and up).
  if (std::none_of(text.begin(), text.end(),
                   [](char c) { return static_cast<uint8_t>(c) >= 0xCC; })) {
    return std::string(text);
  }
  std::vector<char32_t> cps;
  cps.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const Decoded d = decode_utf8(text, pos);
    decompose(d.cp, cps);
    pos += d.len;
  }
  // Canonical ordering: each run of non-starters sorted by combining class, stably.
  for (size_t i = 0; i < cps.size();) {
    if (combining_class(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j, [](char32_t a, char32_t b) {
      return combining_class(a) < combining_class(b);
    });
    i = j;
  }
  // Canonical composition: a character joins the last starter unless a character of the same or
  // a higher class (or a starter) stands between them.
  size_t starter = 0, kept = 1;
  int last_class = cps.empty() ? 0 : (combining_class(cps[0]) == 0 ? 0 : 256);
  for (size_t i = 1; i < cps.size(); ++i) {
    const char32_t c = cps[i];
    const int cls = combining_class(c);
    const char32_t composite = last_class == 256 ? 0 : compose(cps[starter], c);
    if (composite != 0 && (last_class < cls || last_class == 0)) {
      cps[starter] = composite;
      continue;
    }
    if (cls == 0) starter = kept;
    last_class = cls;
    cps[kept++] = c;
  }
  cps.resize(std::min(kept, cps.size()));
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : cps) append_utf8(out, cp);
  return out;
}

}  // namespace sf::tok
