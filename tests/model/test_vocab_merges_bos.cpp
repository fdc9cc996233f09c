// HF's GPT2Tokenizer (vocab.json + merges.txt) adds BOS in OPT's configuration of it and nothing
// in GPT-2's: a GPT-2 checkpoint directory tokenizes "Hi" to [H, i], with or without add_bos. The
// tokenizer here is the 256 byte-level symbols and no merges, which fits the tiny GPT-2 fixture's
// vocabulary of 256.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "session/session.hpp"

namespace fs = std::filesystem;

namespace sf {
namespace {

// GPT-2's byte-to-unicode table: printable bytes map to themselves, the others to U+0100 on.
std::string byte_symbol(int b) {
  auto printable = [](int i) {
    return (i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE;
  };
  int cp = b;
  if (!printable(b)) {
    cp = 256;
    for (int i = 0; i < b; ++i) cp += printable(i) ? 0 : 1;
  }
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

fs::path gpt2_with_tokenizer() {
  const fs::path src = fs::path(SF_TEST_DATA_DIR) / "llama" / "gpt2";
  const fs::path dir = fs::temp_directory_path() / ("sf_vocab_bos_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(src / "model.safetensors", dir / "model.safetensors");
  fs::copy_file(src / "config.json", dir / "config.json");
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_symbol(b)] = b;
  std::ofstream(dir / "vocab.json") << vocab.dump();
  std::ofstream(dir / "merges.txt") << "#version: 0.2\n";
  return dir;
}

TEST(VocabMergesBos, Gpt2AddsNoBos) {
  const fs::path dir = gpt2_with_tokenizer();
  session::SessionOptions o;
  o.device = "cpu";
  const auto s = session::Session::open(dir.string(), o);
  EXPECT_EQ(s->tokenize("Hi"), (std::vector<int32_t>{'H', 'i'}));
  EXPECT_EQ(s->tokenize("Hi", /*add_bos=*/false), (std::vector<int32_t>{'H', 'i'}));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sf
