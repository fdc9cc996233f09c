#include "tokenizer/added_tokens.hpp"

#include <algorithm>

#include "tokenizer/normalizer.hpp"
#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

bool is_space(char32_t cp) {
  return char_class(cp) == CharClass::Whitespace;
}

// Where the whitespace that ends `text` begins (text.size() when there is none).
size_t trailing_space_start(std::string_view text) {
  size_t pos = text.size();
  while (pos > 0) {
    const Decoded d = decode_utf8_before(text, pos);
    if (!is_space(d.cp)) break;
    pos -= d.len;
  }
  return pos;
}

size_t leading_space_end(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    const Decoded d = decode_utf8(text, pos);
    if (!is_space(d.cp)) break;
    pos += d.len;
  }
  return pos;
}

bool ends_with_word(std::string_view text) {
  return !text.empty() && is_word_char(decode_utf8_before(text, text.size()).cp);
}

bool starts_with_word(std::string_view text) {
  return !text.empty() && is_word_char(decode_utf8(text, 0).cp);
}

}  // namespace

AddedTokens::AddedTokens(std::vector<AddedToken> tokens, const Normalizer& normalizer)
    : tokens_(std::move(tokens)) {
  spellings_.reserve(tokens_.size());
  for (uint32_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& t = tokens_[i];
    std::string spelling = t.normalized ? normalizer.apply(t.content) : t.content;
    if (!t.content.empty()) add_pattern(t.normalized ? normalized_ : raw_, spelling, i);
    spellings_.push_back(std::move(spelling));
  }
  for (Set* set : {&raw_, &normalized_}) {
    for (auto& list : set->by_first_byte) {
      std::stable_sort(list.begin(), list.end(), [set](uint32_t a, uint32_t b) {
        return set->patterns[a].text.size() > set->patterns[b].text.size();
      });
    }
  }
}

void AddedTokens::add_pattern(Set& set, std::string text, uint32_t token) {
  if (text.empty()) return;
  const auto first = static_cast<uint8_t>(text[0]);
  set.by_first_byte[first].push_back(static_cast<uint32_t>(set.patterns.size()));
  set.patterns.push_back({std::move(text), token});
}

void AddedTokens::split(std::string_view text, bool normalized, std::vector<Match>& out) const {
  split_with(normalized ? normalized_ : raw_, text, out);
}

void AddedTokens::split_with(const Set& set, std::string_view text, std::vector<Match>& out) const {
  size_t start_offset = 0;  // end of the last token taken
  for (size_t pos = 0; pos < text.size();) {
    const auto& candidates = set.by_first_byte[static_cast<uint8_t>(text[pos])];
    const Set::Pattern* hit = nullptr;
    for (uint32_t c : candidates) {
      if (text.substr(pos).starts_with(set.patterns[c].text)) {
        hit = &set.patterns[c];
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    // The search resumes after the match even when its flags reject it (non-overlapping).
    size_t start = pos, stop = pos + hit->text.size();
    pos = stop;
    const AddedToken& token = tokens_[hit->token];
    if (token.single_word &&
        (ends_with_word(text.substr(0, start)) || starts_with_word(text.substr(stop)))) {
      continue;
    }
    if (token.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), start_offset);
    if (token.rstrip) stop += leading_space_end(text.substr(stop));
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({std::max(start, start_offset), stop, token.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
}

}  // namespace sf::tok
