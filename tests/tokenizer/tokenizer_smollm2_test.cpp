// The tokenizer of a real GGUF model: SmolLM2-135M-Instruct (Q4_1), fetched by
// scripts/fetch-smollm2, through GgufFile -> GgufTokenizerData -> tokenizer_json_from_gguf.
// The references (tests/data/tokenizer/smollm2_cases.json, by make_llama_cases.py) are the ids of
// transformers' tokenizer for the same GGUF (AutoTokenizer.from_pretrained(dir, gguf_file=...)),
// with the chat prompt of SmolLM2's template. Its own binary: CTest reports it skipped when the
// GGUF is absent without hiding the other tokenizer tests.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "format/gguf.hpp"
#include "gguf_glue.hpp"
#include "reference_cases.hpp"
#include "smollm2_gguf.hpp"
#include "tokenizer/gguf_tokenizer.hpp"

namespace sf::tok {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

TEST(SmolLM2Tokenizer, MatchesTransformersGgufTokenizer) {
  SF_REQUIRE_SMOLLM2(path);
  const json ref = json::parse(testing::slurp(testing::kTokenizerData + "smollm2_cases.json"));
  const auto t0 = std::chrono::steady_clock::now();
  const GgufTokenizerData d = testing::read_gguf_tokenizer(format::GgufFile::open(path));
  const auto t_read = std::chrono::steady_clock::now();
  EXPECT_EQ(d.model, "gpt2");
  EXPECT_EQ(d.pre, "smollm");
  EXPECT_EQ(d.tokens.size(), ref.at("num_tokens").get<size_t>());
  EXPECT_EQ(d.merges.size(), ref.at("num_merges").get<size_t>());
  EXPECT_EQ(d.bos, 1);
  EXPECT_EQ(d.eos, 2);
  EXPECT_FALSE(d.add_bos);
  const std::string tokenizer_json = tokenizer_json_from_gguf(d);
  const auto t1 = std::chrono::steady_clock::now();
  const Tokenizer t =
      Tokenizer::from_tokenizer_json(tokenizer_json, tokenizer_config_json_from_gguf(d));
  const auto t2 = std::chrono::steady_clock::now();
  std::printf("GGUF read %.0f ms, -> tokenizer.json (%zu KB) %.0f ms, loaded in %.0f ms\n",
              std::chrono::duration<double, std::milli>(t_read - t0).count(),
              tokenizer_json.size() / 1024,
              std::chrono::duration<double, std::milli>(t1 - t_read).count(),
              std::chrono::duration<double, std::milli>(t2 - t1).count());

  EXPECT_EQ(t.vocab_size(), 49152);
  EXPECT_EQ(t.num_merges(), 48900);
  EXPECT_EQ(t.bos_id(), ref.at("bos_id").get<int32_t>());
  EXPECT_EQ(t.eos_id(), ref.at("eos_id").get<int32_t>());
  EXPECT_TRUE(t.special_prefix().empty());  // add_bos_token is false
  std::vector<int32_t> special;
  for (int32_t id = 0; id < t.vocab_size(); ++id) {
    if (t.is_special(id)) special.push_back(id);
  }
  EXPECT_EQ(special, ref.at("special_ids").get<std::vector<int32_t>>());

  // The chat prompt: <|im_start|> and <|im_end|> split out as their ids.
  const std::vector<int32_t> chat = ref.at("chat_ids");
  EXPECT_EQ(t.encode(ref.at("chat_prompt").get<std::string>(), true), chat);
  EXPECT_EQ(chat.front(), *t.token_id("<|im_start|>"));
  EXPECT_EQ(t.decode(chat), ref.at("chat_prompt").get<std::string>());

  const auto n =
      testing::check_references(t, ref, ref.at("texts"), "smollm2", testing::Streaming::Exact);
  EXPECT_GT(n.encoded, 150u);
}

}  // namespace
}  // namespace sf::tok
