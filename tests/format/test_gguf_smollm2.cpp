// The GGUF reader on a real model: SmolLM2-135M-Instruct quantized to Q4_1 (llama.cpp's Q4_1 for
// the matrices, Q8_0 for the embedding, F32 for the norms), fetched by scripts/fetch-smollm2. Its
// own test binary, so that CTest reports it skipped without hiding test_gguf's results.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "format/gguf.hpp"
#include "smollm2_gguf.hpp"

namespace fs = std::filesystem;
using namespace sf;
using namespace sf::format;
using json = nlohmann::json;

namespace {

const fs::path kData = fs::path(SF_TEST_DATA_DIR) / "gguf";

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

}  // namespace

TEST(GgufSmolLM2, OpensAndDequantizesEveryTensor) {
  SF_REQUIRE_SMOLLM2(path);
  const GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.architecture(), "llama");
  EXPECT_EQ(f.metadata().size(), 33u);
  EXPECT_EQ(f.get("llama.block_count").as_int(), 30);
  EXPECT_EQ(f.get("llama.embedding_length").as_int(), 576);
  EXPECT_NEAR(f.get("llama.attention.layer_norm_rms_epsilon").as_float(), 1e-5, 1e-9);
  EXPECT_EQ(f.get("tokenizer.ggml.tokens").as_string_array().size(), 49152u);
  EXPECT_EQ(f.get("tokenizer.ggml.merges").as_string_array().size(), 48900u);
  EXPECT_EQ(f.get("tokenizer.ggml.token_type").as_int_array().size(), 49152u);
  EXPECT_EQ(f.alignment(), 32u);
  ASSERT_EQ(f.tensors().size(), 272u);
  const GgufTensorInfo& embd = f.get_tensor("token_embd.weight");
  EXPECT_EQ(embd.dims, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(embd.type, GgufType::Q8_0);

  // Every tensor: finite values and an RMS like a trained model's (the file's range is 0.04 for
  // blk.0.attn_norm to 1.8 for output_norm).
  std::map<std::string, int> by_type;
  std::vector<float> out;
  double seconds = 0;
  int64_t weights = 0;
  for (const auto& t : f.tensors()) {
    SCOPED_TRACE(t.name);
    ++by_type[std::string(gguf_type_info(t.type).name)];
    out.resize(size_t(t.numel));
    const auto t0 = std::chrono::steady_clock::now();
    f.dequantize(t, out);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    weights += t.numel;
    double ss = 0;
    size_t non_finite = 0;
    for (float v : out) {
      non_finite += !std::isfinite(v);
      ss += double(v) * v;
    }
    EXPECT_EQ(non_finite, 0u);
    const double rms = std::sqrt(ss / double(out.size()));
    EXPECT_GT(rms, 1e-3);
    EXPECT_LT(rms, 10.0);
  }
  EXPECT_EQ(by_type, (std::map<std::string, int>{{"F32", 61}, {"Q4_1", 210}, {"Q8_0", 1}}));
  EXPECT_EQ(weights, 134515008);
  std::printf("dequantized %lld weights of %zu tensors in %.3f s on one core (%.2f ns/weight)\n",
              (long long)weights, f.tensors().size(), seconds, 1e9 * seconds / double(weights));

  // A few values against gguf-py, bit for bit (tests/data/gguf/smollm2_probe.json).
  const json probe = json::parse(std::ifstream(kData / "smollm2_probe.json"));
  for (const auto& [name, p] : probe.items()) {
    SCOPED_TRACE(name);
    const GgufTensorInfo& t = f.get_tensor(name);
    EXPECT_EQ(gguf_type_info(t.type).name, p["type"].get<std::string>());
    out.resize(size_t(t.numel));
    f.dequantize(t, out);
    const auto idx = p["index"].get<std::vector<size_t>>();
    const auto want = p["bits"].get<std::vector<uint32_t>>();
    for (size_t k = 0; k < idx.size(); ++k) EXPECT_EQ(bits(out[idx[k]]), want[k]) << idx[k];
    double ss = 0;
    for (float v : out) ss += double(v) * v;
    EXPECT_NEAR(std::sqrt(ss / double(out.size())), p["rms"].get<double>(), 1e-9);
  }
}
