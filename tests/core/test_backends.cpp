// The backend registry (backend/backends.hpp) answers the same way the build was configured, and a
// GPU entry point asked of a build or machine without one fails with a reason a user can act on.
#include <gtest/gtest.h>

#include "backend/backends.hpp"
#include "core/error.hpp"

namespace {

using sf::Error;
using sf::Status;
namespace backend = sf::backend;

TEST(Backends, ListMatchesTheBuild) {
  const auto all = backend::backends();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "cpu");
  EXPECT_TRUE(all[0].compiled);
  EXPECT_EQ(all[0].unavailable, "");
  EXPECT_EQ(all[1].name, "cuda");
#if SPARSEFLOW_WITH_CUDA
  EXPECT_TRUE(all[1].compiled);
  EXPECT_NE(backend::cuda(), nullptr);
#else
  EXPECT_FALSE(all[1].compiled);
  EXPECT_EQ(backend::cuda(), nullptr);
  EXPECT_NE(all[1].unavailable.find("no CUDA backend"), std::string::npos) << all[1].unavailable;
#endif
  EXPECT_EQ(all[1].unavailable, backend::cuda_unavailable_reason());
  EXPECT_FALSE(backend::find_backend("tpu").has_value());
  EXPECT_EQ(backend::find_backend("cpu")->name, "cpu");
}

TEST(Backends, RequireCudaNamesWhatAndWhy) {
  const std::string why = backend::cuda_unavailable_reason();
  if (why.empty()) {
    EXPECT_NO_THROW(backend::require_cuda("this test"));
    GTEST_SKIP() << "a CUDA device is usable here; the refusal is tested on machines without one";
  }
  try {
    backend::require_cuda("generate --device cuda");
    FAIL() << "require_cuda did not throw without a usable GPU";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::NoDevice);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("generate --device cuda needs a CUDA GPU"), std::string::npos) << msg;
    EXPECT_NE(msg.find(why), std::string::npos) << msg;
  }
}

}  // namespace
