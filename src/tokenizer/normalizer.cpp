#include "tokenizer/normalizer.hpp"

#include "tokenizer/nfc.hpp"

namespace sf::tok {
namespace {

std::string replace_all(std::string_view text, std::string_view pattern, std::string_view content) {
  std::string out;
  out.reserve(text.size() + text.size() / 4);
  size_t pos = 0;
  for (size_t hit; (hit = text.find(pattern, pos)) != std::string_view::npos;
       pos = hit + pattern.size()) {
    out.append(text.substr(pos, hit - pos));
    out.append(content);
  }
  out.append(text.substr(pos));
  return out;
}

}  // namespace

std::string Normalizer::apply(std::string_view text) const {
  std::string s(text);
  for (const Step& step : steps_) {
    if (const auto* p = std::get_if<Prepend>(&step)) {
      if (!s.empty()) s.insert(0, p->text);
    } else if (const auto* r = std::get_if<Replace>(&step)) {
      // An empty pattern is refused when the tokenizer is loaded.
      if (!r->pattern.empty() && s.find(r->pattern) != std::string::npos) {
        s = replace_all(s, r->pattern, r->content);
      }
    } else {
      s = to_nfc(s);
    }
  }
  return s;
}

}  // namespace sf::tok
