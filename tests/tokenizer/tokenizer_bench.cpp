// Encoding speed on 1 MB of text, per tokenizer: the OPT fixture (vocab.json + merges.txt), the
// tokenizer.json fixtures of tests/data/tokenizer, and SmolLM2's GGUF tokenizer when
// $SPARSEFLOW_SMOLLM2_GGUF names the file. Two texts: corpus.txt repeated (words recur, as in
// prose) and the corpus's words in a pseudo-random order with numbers (more distinct words).
// "cold" is the first encode of a fresh tokenizer (empty word cache), "warm" the best of three
// after it. Not a test; build and run by hand:
//   cmake --build build --target tokenizer_bench && build/tests/tokenizer/tokenizer_bench
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "format/gguf.hpp"
#include "gguf_glue.hpp"
#include "reference_cases.hpp"
#include "tokenizer/gguf_tokenizer.hpp"
#include "tokenizer/tokenizer.hpp"

namespace {

using sf::tok::Tokenizer;
using sf::tok::testing::kTokenizerData;
using sf::tok::testing::slurp;

constexpr size_t kBytes = size_t{1} << 20;

std::string repeated_corpus(const std::string& corpus) {
  std::string text;
  while (text.size() < kBytes) text += corpus;
  text.resize(kBytes);
  return text;
}

std::string varied_words(const std::string& corpus) {
  std::vector<std::string> words;
  std::istringstream in(corpus);
  for (std::string w; in >> w;) words.push_back(w);
  std::string text;
  uint64_t x = 88172645463325252ull;  // xorshift64: the same text on every run
  while (text.size() < kBytes) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    text += words[x % words.size()];
    if ((x >> 20) % 7 == 0) {
      text.append(" ").append(std::to_string(x % 100000)).append(" ");
    } else {
      text.append((x >> 24) % 11 ? " " : "\n");
    }
  }
  text.resize(kBytes);
  return text;
}

double seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void bench(const char* name, const std::function<Tokenizer()>& make,
           const std::vector<std::pair<const char*, std::string>>& texts) {
  for (const auto& [text_name, text] : texts) {
    const Tokenizer t = make();
    size_t n = 0;
    const double cold = seconds([&] { n = t.encode(text).size(); });
    double warm = 1e30;
    for (int i = 0; i < 3; ++i) warm = std::min(warm, seconds([&] { t.encode(text); }));
    std::printf("%-22s %-8s %8zu tokens  cold %6.2f M tokens/s  warm %6.2f M tokens/s\n", name,
                text_name, n, n / cold / 1e6, n / warm / 1e6);
  }
}

}  // namespace

int main() {
  const std::string corpus = slurp(kTokenizerData + "corpus.txt");
  const std::vector<std::pair<const char*, std::string>> texts = {
      {"corpus", repeated_corpus(corpus)}, {"varied", varied_words(corpus)}};
  bench(
      "opt (vocab+merges)",
      [] {
        return Tokenizer::from_files(kTokenizerData + "vocab.json", kTokenizerData + "merges.txt");
      },
      texts);
  for (const char* name : {"llama3_bpe", "qwen2_bpe", "gpt2_digits_bpe", "llama2_sp", "mistral_sp",
                           "metaspace_split_sp"}) {
    const std::string json = slurp(kTokenizerData + name + ".json");
    bench(
        name, [&] { return Tokenizer::from_tokenizer_json(json); }, texts);
  }
  if (const char* path = std::getenv("SPARSEFLOW_SMOLLM2_GGUF"); path && *path) {
    const auto d = sf::tok::testing::read_gguf_tokenizer(sf::format::GgufFile::open(path));
    const std::string json = sf::tok::tokenizer_json_from_gguf(d);
    bench(
        "smollm2 (gguf)", [&] { return Tokenizer::from_tokenizer_json(json); }, texts);
  }
}
