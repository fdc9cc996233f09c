// The prompts of a load test: runs of words cut from a fixed English text
// (data/text/evaluation.txt, built in), each starting at a word picked from the seed, wrapping
// around at the end of the text. Different starts keep a server's prefix cache from answering every
// prompt from the first one; the same seed gives the same prompts, so two servers are measured on
// identical requests.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sf::loadgen {

// The words of `text`, split at whitespace.
std::vector<std::string> split_words(std::string_view text);
// The words of the built-in text.
const std::vector<std::string>& prompt_words();

// `words_per_prompt` words of `words` from index `start` on, wrapping, joined by spaces.
std::string prompt_from(const std::vector<std::string>& words, int64_t start,
                        int64_t words_per_prompt);

// `n` prompts of `words_per_prompt` words each, the i-th starting at a word drawn from
// mt19937_64(seed). Throws Error(InvalidArgument) for n < 0, words_per_prompt < 1 or no words.
std::vector<std::string> make_prompts(const std::vector<std::string>& words, int64_t n,
                                      int64_t words_per_prompt, uint64_t seed);

// How many words make a prompt of about `target_tokens` tokens, from two probes of the server:
// `w1` words counted as `t1` tokens and `w2` (< w1) as `t2`. The line through them carries the
// constant part (a BOS token, a chat template) apart from the tokens per word. With one probe
// (w2 = 0) the count is taken as proportional. Never less than one word.
int64_t words_for_tokens(int64_t target_tokens, int64_t w1, int64_t t1, int64_t w2 = 0,
                         int64_t t2 = 0);

}  // namespace sf::loadgen
