// The continuous-batching scheduler on the real model, SmolLM2-135M-Instruct (skipped, saying why,
// when its GGUF is not cached): 8 chat requests of different lengths in flight together, greedy,
// each equal to the same request alone (the "each gets exactly its own tokens").
#include <gtest/gtest.h>

#include <cstdio>

#include "scheduler_test_util.hpp"
#include "smollm2_gguf.hpp"

namespace sf::serve {
namespace {

using namespace test;

TEST(SchedulerSmolLM2, ConcurrentChatsGetWhatEachGetsAlone) {
  SF_REQUIRE_SMOLLM2(g);
  auto s = open_cpu(g);
  const char* kQuestions[] = {"What is 2+2?",
                              "Name a color.",
                              "Say hi.",
                              "Write one sentence about the sea and the wind over it.",
                              "What is the capital of France?",
                              "Count to five.",
                              "Give me a synonym for happy.",
                              "What day comes after Monday?"};
  std::vector<RequestSpec> specs;
  std::vector<std::vector<int32_t>> want;
  int64_t tokens = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 8; ++i) {
    std::vector<chat::ChatMessage> m = {{"user", kQuestions[i]}};
    specs.push_back(spec_of(s->chat_ids(m), 10 + 2 * i));
    want.push_back(alone(*s, specs.back()));
    tokens += int64_t(want.back().size());
  }
  const auto t1 = std::chrono::steady_clock::now();
  SchedulerOptions o;
  o.max_batch = 8;
  o.max_context = 512;
  o.prefill_chunk = 64;
  Scheduler sched(*s, o);
  std::vector<std::shared_ptr<Request>> reqs;
  for (const auto& r : specs) reqs.push_back(sched.submit(r).request);
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(reqs[i]);
    EXPECT_EQ(collect(reqs[i]).tokens, want[i]) << kQuestions[i];
  }
  const auto t2 = std::chrono::steady_clock::now();
  EXPECT_EQ(sched.stats().gauges.kv_tokens_reserved, 0);
  // Not asserted (a test is not a benchmark): what batching bought, in the test's log.
  const auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  std::printf(
      "8 requests, %lld tokens: one at a time %.2f s (%.1f tok/s), batched %.2f s "
      "(%.1f tok/s)\n",
      (long long)tokens, secs(t0, t1), double(tokens) / secs(t0, t1), secs(t1, t2),
      double(tokens) / secs(t1, t2));
}

}  // namespace
}  // namespace sf::serve
