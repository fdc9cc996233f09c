// The header-only C++ layer (sparseflow.hpp), linked against libsparseflow.so only: statuses
// arrive as sparseflow::Error with the C message, handles free themselves.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "sparseflow/sparseflow.hpp"

namespace {

// 4 x 8 fp32; row r, group g holds {a, b, c, d} with |b| and |d| the two largest.
std::vector<float> dense_4x8() {
  std::vector<float> w(32);
  for (int i = 0; i < 32; ++i) w[i] = (i % 2 ? 1.0f : 0.25f) * float(1 + i % 7) * (i % 3 ? 1 : -1);
  return w;
}

TEST(CppWrapper, VersionMatchesHeader) {
  EXPECT_EQ(sparseflow::version(), std::to_string(SF_VERSION_MAJOR) + "." +
                                       std::to_string(SF_VERSION_MINOR) + "." +
                                       std::to_string(SF_VERSION_PATCH));
}

TEST(CppWrapper, ErrorsCarryStatusAndMessage) {
  std::vector<float> w = dense_4x8(), out(32);
  try {
    sparseflow::prune_24(w.data(), SF_DTYPE_F32, 4, 6, out.data());
    FAIL() << "K = 6 must be rejected";
  } catch (const sparseflow::Error& e) {
    EXPECT_EQ(e.status(), SF_ERR_UNSUPPORTED_SHAPE);
    EXPECT_EQ(std::string(e.what()), std::string(sf_last_error()));
    EXPECT_NE(std::string(e.what()).find("sf_prune_24"), std::string::npos) << e.what();
  }
  try {
    sparseflow::prune_24(w.data(), SF_DTYPE_F32, 4, 8, out.data(), SF_PRUNE_WANDA, nullptr);
    FAIL() << "wanda without norms must be rejected";
  } catch (const sparseflow::Error& e) {
    EXPECT_EQ(e.status(), SF_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("act_norms"), std::string::npos) << e.what();
  }
  // A non-2:4 matrix cannot be compressed; the error names where it is not.
  try {
    (void)sparseflow::Sparse24::compress(w.data(), SF_DTYPE_F32, 4, 8);
    FAIL() << "a dense matrix must not compress";
  } catch (const sparseflow::Error& e) {
    EXPECT_EQ(e.status(), SF_ERR_INVALID_ARGUMENT);
  }
}

TEST(CppWrapper, PruneCheckCompressRoundTrip) {
  const std::vector<float> w = dense_4x8();
  std::vector<float> pruned(32);
  EXPECT_FALSE(sparseflow::check_24(w.data(), SF_DTYPE_F32, 4, 8).is_24);
  sparseflow::prune_24(w.data(), SF_DTYPE_F32, 4, 8, pruned.data());
  const auto c = sparseflow::check_24(pruned.data(), SF_DTYPE_F32, 4, 8);
  EXPECT_TRUE(c.is_24);
  EXPECT_EQ(c.first_row, -1);
  // Each group keeps its two largest magnitudes.
  for (int r = 0; r < 4; ++r)
    for (int g = 0; g < 2; ++g) {
      int kept = 0;
      for (int j = 0; j < 4; ++j) {
        const int i = r * 8 + 4 * g + j;
        if (pruned[i] == 0.0f) continue;
        ++kept;
        EXPECT_EQ(pruned[i], w[i]);
        int larger = 0;  // how many in the group beat it (ties to the lower index)
        for (int o = 0; o < 4; ++o) {
          const float a = std::fabs(w[r * 8 + 4 * g + o]), b = std::fabs(w[i]);
          larger += a > b || (a == b && o < j);
        }
        EXPECT_LT(larger, 2) << "row " << r << " col " << 4 * g + j;
      }
      EXPECT_EQ(kept, 2);
    }

  sparseflow::Sparse24 s = sparseflow::Sparse24::compress(pruned.data(), SF_DTYPE_F32, 4, 8);
  EXPECT_EQ(s.shape(), std::make_pair(int64_t(4), int64_t(8)));
  EXPECT_EQ(s.padded_shape(), std::make_pair(int64_t(16), int64_t(32)));
  EXPECT_EQ(s.dtype(), SF_DTYPE_F32);
  EXPECT_EQ(s.values().second, size_t(16 * 16 * 4));
  EXPECT_EQ(s.meta().second, size_t(16 * 4));
  EXPECT_EQ(s.compressed_bytes(), s.values().second + s.meta().second);
  std::vector<float> back(32, NAN);
  s.decompress(back.data());
  EXPECT_EQ(std::memcmp(back.data(), pruned.data(), 32 * sizeof(float)), 0);

  // y = relu(x W^T + bias), M = 2, checked against a plain loop.
  const std::vector<float> x = {1, -2, 3, -4, 5, -6, 7, -8, 0.5f, 0.5f, 0.5f, 0.5f, 1, 1, 1, 1};
  const std::vector<float> bias = {0.5f, -100, 1, 2};
  std::vector<float> y(8, NAN);
  sparseflow::Epilogue ep;
  ep.bias = bias.data();
  ep.act = SF_ACT_RELU;
  s.gemm_cpu(x.data(), SF_DTYPE_F32, 2, y.data(), SF_DTYPE_F32, ep);
  for (int m = 0; m < 2; ++m)
    for (int n = 0; n < 4; ++n) {
      double acc = bias[n];
      for (int k = 0; k < 8; ++k) acc += double(x[m * 8 + k]) * pruned[n * 8 + k];
      EXPECT_NEAR(y[m * 4 + n], std::max(acc, 0.0), 1e-5) << m << "," << n;
    }

  // Moving hands the handle over; the moved-from object reports errors instead of crashing.
  sparseflow::Sparse24 t = std::move(s);
  EXPECT_EQ(t.rows(), 4);
  EXPECT_THROW((void)s.rows(), sparseflow::Error);  // NOLINT(bugprone-use-after-move)
}

// The session through the wrapper: the built-in model, a stop requested by the callback, an
// exception from the callback rethrown after the call, and errors as sparseflow::Error.
TEST(CppWrapper, SessionGeneratesStopsAndRethrows) {
  char dir[] = "/tmp/sf_cpp_session_XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/builtin.sf";
  sparseflow::synth_builtin(path);
  EXPECT_THROW(sparseflow::synth_builtin(path), sparseflow::Error);  // exists, no force
  sf_session_options o;
  sf_session_options_init(&o);
  o.device = "cpu";
  sparseflow::Session s(path, &o);
  EXPECT_NE(s.info_json().find("\"architecture\":\"opt\""), std::string::npos);

  sf_generate_params p;
  sf_generate_params_init(&p);
  p.max_new_tokens = 6;
  std::string streamed;
  int calls = 0;
  const std::string full = s.generate("Hello", &p, [&](int32_t, std::string_view text) {
    streamed += text;
    return ++calls < 2;  // stop after the second token
  });
  EXPECT_EQ(calls, 2);
  EXPECT_NE(full.find("\"stopped_by\":\"callback\""), std::string::npos) << full;

  EXPECT_THROW(
      s.generate("Hello", &p,
                 [](int32_t, std::string_view) -> bool { throw std::runtime_error("mine"); }),
      std::runtime_error);
  const std::string again = s.generate_ids({2, 5, 7}, &p);  // still usable
  EXPECT_NE(again.find("\"prompt_ids\":[2,5,7]"), std::string::npos) << again;

  const auto ids = s.tokenize("Hello world");
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], 2);
  EXPECT_EQ(s.detokenize({ids.begin() + 1, ids.end()}), "Hello world");
  EXPECT_DOUBLE_EQ(s.perplexity("Hello world"), s.perplexity(ids));
  try {
    (void)s.offload_stats_json();
    FAIL() << "a CPU session has no offload stats";
  } catch (const sparseflow::Error& e) {
    EXPECT_EQ(e.status(), SF_ERR_NOT_FOUND);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
