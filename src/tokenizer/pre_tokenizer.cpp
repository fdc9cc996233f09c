#include "tokenizer/pre_tokenizer.hpp"

#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

using Word = PreTokenizer::Scratch::Word;

void emit(std::vector<Word>& out, std::string_view text, bool at_start) {
  if (!text.empty()) out.push_back({text, at_start});
}

void split_regex(SplitRegex regex, const Word& w, PreTokenizer::Scratch& s) {
  s.pieces.clear();
  split_with_regex(regex, w.text, s.pieces);
  for (const Piece& p : s.pieces) {
    emit(s.next, w.text.substr(p.begin, p.end - p.begin), w.at_start && p.begin == 0);
  }
}

void split_digits(bool individual, const Word& w, std::vector<Word>& out) {
  size_t start = 0;
  bool in_digits = false;
  for (size_t pos = 0; pos < w.text.size();) {
    const Decoded d = decode_utf8(w.text, pos);
    const bool digit = char_class(d.cp) == CharClass::Number;
    if (pos > start && (digit != in_digits || (digit && individual))) {
      emit(out, w.text.substr(start, pos - start), w.at_start && start == 0);
      start = pos;
    }
    in_digits = digit;
    pos += d.len;
  }
  emit(out, w.text.substr(start), w.at_start && start == 0);
}

void byte_level_step(const PreTokenizer::ByteLevel& b, const Word& w, PreTokenizer::Scratch& s) {
  Word word = w;
  if (b.add_prefix_space && !w.text.starts_with(' ')) {
    std::string& spaced = s.arena.emplace_back();
    spaced.reserve(w.text.size() + 1);
    spaced.push_back(' ');
    spaced.append(w.text);
    word.text = spaced;
  }
  if (b.use_regex) {
    split_regex(SplitRegex::Gpt2, word, s);
  } else {
    emit(s.next, word.text, word.at_start);
  }
}

void metaspace(const PreTokenizer::Metaspace& m, const Word& w, PreTokenizer::Scratch& s) {
  std::string_view text = w.text;
  const bool prepend =
      (m.prepend == PrependScheme::Always || (m.prepend == PrependScheme::First && w.at_start)) &&
      !text.starts_with(' ') && !text.starts_with(m.replacement);
  if (prepend || text.find(' ') != std::string_view::npos) {
    std::string& t = s.arena.emplace_back(prepend ? m.replacement : "");
    for (char c : text) {
      if (c == ' ') {
        t.append(m.replacement);
      } else {
        t.push_back(c);
      }
    }
    text = t;
  }
  if (!m.split) {
    emit(s.next, text, w.at_start);
    return;
  }
  // "MergedWithNext": each replacement begins a word.
  size_t start = 0;
  for (size_t hit; (hit = text.find(m.replacement, start + 1)) != std::string_view::npos;) {
    emit(s.next, text.substr(start, hit - start), w.at_start && start == 0);
    start = hit;
  }
  emit(s.next, text.substr(start), w.at_start && start == 0);
}

}  // namespace

bool PreTokenizer::byte_level() const {
  return !steps_.empty() && std::holds_alternative<ByteLevel>(steps_.back());
}

void PreTokenizer::run(std::string_view text, bool at_start, Scratch& s) const {
  s.arena.clear();
  s.words.clear();
  emit(s.words, text, at_start);
  for (const Step& step : steps_) {
    s.next.clear();
    for (const Word& w : s.words) {
      if (const auto* sp = std::get_if<Split>(&step)) {
        split_regex(sp->regex, w, s);
      } else if (const auto* d = std::get_if<Digits>(&step)) {
        split_digits(d->individual, w, s.next);
      } else if (const auto* b = std::get_if<ByteLevel>(&step)) {
        byte_level_step(*b, w, s);
      } else {
        metaspace(std::get<Metaspace>(step), w, s);
      }
    }
    std::swap(s.words, s.next);
  }
}

}  // namespace sf::tok
