#include "loadgen/prompts.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <random>

#include "core/error.hpp"
#include "loadgen/prompt_text.hpp"

namespace sf::loadgen {

std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> words;
  std::string w;
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!w.empty()) words.push_back(std::move(w));
      w.clear();
    } else {
      w += c;
    }
  }
  if (!w.empty()) words.push_back(std::move(w));
  return words;
}

const std::vector<std::string>& prompt_words() {
  static const std::vector<std::string> words = split_words(kPromptText);
  return words;
}

std::string prompt_from(const std::vector<std::string>& words, int64_t start,
                        int64_t words_per_prompt) {
  std::string p;
  const int64_t n = int64_t(words.size());
  for (int64_t i = 0; i < words_per_prompt; ++i) {
    if (i) p += ' ';
    p += words[size_t((start + i) % n)];
  }
  return p;
}

std::vector<std::string> make_prompts(const std::vector<std::string>& words, int64_t n,
                                      int64_t words_per_prompt, uint64_t seed) {
  if (n < 0) fail(Status::InvalidArgument, "the number of prompts must be >= 0, got {}", n);
  if (words_per_prompt < 1)
    fail(Status::InvalidArgument, "a prompt needs at least one word, got {}", words_per_prompt);
  if (words.empty()) fail(Status::InvalidArgument, "no words to make prompts from");
  std::mt19937_64 rng(seed);
  std::vector<std::string> prompts;
  prompts.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i)
    prompts.push_back(prompt_from(words, int64_t(rng() % words.size()), words_per_prompt));
  return prompts;
}

int64_t words_for_tokens(int64_t target_tokens, int64_t w1, int64_t t1, int64_t w2, int64_t t2) {
  double per_word = w1 > 0 ? double(t1) / double(w1) : 0, fixed = 0;
  if (w2 > 0 && w1 > w2 && t1 > t2) {
    per_word = double(t1 - t2) / double(w1 - w2);
    fixed = double(t1) - per_word * double(w1);
  }
  if (!(per_word > 0)) return std::max<int64_t>(1, target_tokens);
  return std::max<int64_t>(1, std::llround((double(target_tokens) - fixed) / per_word));
}

}  // namespace sf::loadgen
