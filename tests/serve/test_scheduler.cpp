// The continuous-batching scheduler without sockets, on the built-in tiny OPT (random weights,
// always there; test_scheduler_smollm2 runs the real model):
//   - N requests in flight together, with different prompt lengths, max_tokens, sampling
//     parameters and seeds, each get exactly the tokens the same request gets alone (through
//     Session::generate_ids, an independent path);
//   - the KV reservation never exceeds the budget and is all returned afterwards;
//   - cancellation, a full queue, requests over the context, draining, stop strings, logprobs.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <thread>

#include "scheduler_test_util.hpp"
#include "session/builtin_model.hpp"

namespace sf::serve {
namespace {

using namespace test;

std::string tiny_model_path() {
  static const std::string path = [] {
    const fs::path dir =
        fs::temp_directory_path() / ("sf_test_scheduler_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const std::string p = (dir / "tiny.sf").string();
    session::write_builtin_model(p, /*replace=*/true);
    return p;
  }();
  return path;
}

std::vector<int32_t> prompt_of(session::Session& s, int i) {
  static const char* kTexts[] = {
      "Hello",
      "The quick brown fox jumps over the lazy dog because",
      "One two three",
      "A much longer prompt that goes on and on about nothing in particular so that its prefill "
      "takes more than one chunk of the scheduler's budget",
      "Why",
      "Paris is the capital of",
      "In 1492,",
      "Numbers: 1, 2, 3, 4,"};
  return s.tokenize(kTexts[i % 8]);
}

TEST(Scheduler, ConcurrentRequestsGetWhatEachGetsAlone) {
  auto s = open_cpu(tiny_model_path());
  std::vector<RequestSpec> specs;
  for (int i = 0; i < 8; ++i) {
    RequestSpec r = spec_of(prompt_of(*s, i), 5 + 3 * i);
    if (i % 3 == 1) {  // some sample, each with its own seed and settings
      r.sampling.greedy = false;
      r.sampling.temperature = 0.7f + 0.1f * float(i);
      r.sampling.top_k = i % 2 ? 40 : 0;
      r.sampling.top_p = 0.9f;
      r.sampling.seed = 1000 + uint64_t(i);
    }
    specs.push_back(std::move(r));
  }
  std::vector<std::vector<int32_t>> want;
  for (const auto& r : specs) want.push_back(alone(*s, r));

  SchedulerOptions o;
  o.max_batch = 4;      // 8 requests: some wait and join as others leave
  o.prefill_chunk = 7;  // prompts prefill over several steps, beside decoding rows
  Scheduler sched(*s, o);
  std::vector<std::shared_ptr<Request>> reqs;
  for (const auto& r : specs) {
    auto sub = sched.submit(r);
    ASSERT_EQ(sub.outcome, Admission::Queued) << sub.message;
    reqs.push_back(sub.request);
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    const Outcome got = collect(reqs[i]);
    EXPECT_EQ(got.tokens, want[i]) << "request " << i;
    EXPECT_EQ(got.done.completion_tokens, int64_t(want[i].size()));
    EXPECT_EQ(got.done.prompt_tokens, int64_t(specs[i].prompt.size()));
    const bool eos = !want[i].empty() && s->model().config().is_eos(want[i].back());
    EXPECT_EQ(got.done.finish, eos ? Finish::Stop : Finish::Length) << "request " << i;
    // The text is the tokens' text (EOS left out).
    std::vector<int32_t> shown = want[i];
    if (eos) shown.pop_back();
    EXPECT_EQ(got.text, s->detokenize(shown)) << "request " << i;
  }
  const auto st = sched.stats();
  EXPECT_EQ(st.gauges.kv_tokens_reserved, 0);
  EXPECT_EQ(st.gauges.running, 0);
  EXPECT_EQ(st.gauges.queued, 0);
  EXPECT_EQ(st.finished, 8);
}

TEST(Scheduler, AdmissionNeverOvercommitsTheKvBudget) {
  auto s = open_cpu(tiny_model_path());
  SchedulerOptions o;
  o.max_batch = 8;
  o.kv_budget = 70;  // two requests of ~30 tokens at a time, not three
  Scheduler sched(*s, o);
  std::vector<std::shared_ptr<Request>> reqs;
  for (int i = 0; i < 6; ++i) {
    auto sub = sched.submit(spec_of(prompt_of(*s, i % 3), 25));
    ASSERT_EQ(sub.outcome, Admission::Queued) << sub.message;
    reqs.push_back(sub.request);
  }
  int64_t most = 0, most_running = 0;
  std::atomic<bool> done{false};
  std::thread watch([&] {
    while (!done) {
      const auto g = sched.stats().gauges;
      most = std::max(most, g.kv_tokens_reserved);
      most_running = std::max(most_running, g.running);
      std::this_thread::sleep_for(1ms);
    }
  });
  for (auto& r : reqs) EXPECT_NE(collect(r).done.finish, Finish::Error);
  done = true;
  watch.join();
  EXPECT_LE(most, 70);
  EXPECT_LE(most_running, 2);
  EXPECT_EQ(sched.stats().gauges.kv_tokens_reserved, 0);
  // A request that could never fit the whole budget is refused up front.
  auto big = sched.submit(spec_of(prompt_of(*s, 3), 60));
  EXPECT_EQ(big.outcome, Admission::TooLong);
  EXPECT_NE(big.message.find("KV budget"), std::string::npos) << big.message;
}

TEST(Scheduler, CancelFreesTheSequenceAndTheNextRequestIsRight) {
  auto s = open_cpu(tiny_model_path());
  const int64_t room = s->model().config().max_position_embeddings - 8;
  Scheduler sched(*s, {});
  RequestSpec longer = spec_of(prompt_of(*s, 0), room);
  longer.sampling.greedy = false;  // random weights' greedy text may end early at EOS
  longer.sampling.seed = 5;
  auto sub = sched.submit(longer);
  ASSERT_EQ(sub.outcome, Admission::Queued);
  auto first = sub.request->next(60s);
  ASSERT_TRUE(first && first->kind == Event::Kind::Text);
  sub.request->cancel();
  const Outcome rest = collect(sub.request);
  EXPECT_EQ(rest.done.finish, Finish::Cancelled);
  EXPECT_LT(rest.done.completion_tokens, room);
  EXPECT_EQ(sched.stats().gauges.kv_tokens_reserved, 0);
  const RequestSpec next = spec_of(prompt_of(*s, 2), 9);
  auto again = sched.submit(next);
  ASSERT_EQ(again.outcome, Admission::Queued);
  EXPECT_EQ(collect(again.request).tokens, alone(*s, next));
}

TEST(Scheduler, FullQueueRefusesAndBadRequestsSayWhy) {
  auto s = open_cpu(tiny_model_path());
  const int64_t ctx = s->model().config().max_position_embeddings;
  SchedulerOptions o;
  o.max_batch = 1;
  o.max_queue = 2;
  Scheduler sched(*s, o);
  int queued = 0, full = 0;
  std::vector<std::shared_ptr<Request>> reqs;
  for (int i = 0; i < 6; ++i) {
    RequestSpec r = spec_of(prompt_of(*s, 0), ctx - 8);
    r.sampling.greedy = false;
    auto sub = sched.submit(r);
    if (sub.outcome == Admission::Queued) {
      ++queued;
      reqs.push_back(sub.request);
    } else {
      EXPECT_EQ(sub.outcome, Admission::QueueFull);
      EXPECT_NE(sub.message.find("busy"), std::string::npos);
      ++full;
    }
  }
  EXPECT_GE(queued, 2);
  EXPECT_LE(queued, 3);  // one running, two waiting
  EXPECT_EQ(queued + full, 6);
  for (auto& r : reqs) r->cancel();
  for (auto& r : reqs) EXPECT_EQ(collect(r).done.finish, Finish::Cancelled);

  EXPECT_EQ(sched.submit(spec_of({}, 4)).outcome, Admission::Invalid);
  EXPECT_EQ(sched.submit(spec_of({-1}, 4)).outcome, Admission::Invalid);
  EXPECT_EQ(sched.submit(spec_of(prompt_of(*s, 0), 0)).outcome, Admission::Invalid);
  auto over = sched.submit(spec_of(std::vector<int32_t>(size_t(ctx), 5), 1));
  EXPECT_EQ(over.outcome, Admission::TooLong);
  EXPECT_NE(over.message.find("maximum context length"), std::string::npos) << over.message;
  EXPECT_EQ(sched.submit(spec_of(prompt_of(*s, 0), ctx)).outcome, Admission::TooLong);
  RequestSpec hot = spec_of(prompt_of(*s, 0), 4);
  hot.sampling.greedy = false;
  hot.sampling.temperature = -1.0f;
  auto bad = sched.submit(hot);
  EXPECT_EQ(bad.outcome, Admission::Invalid);
  EXPECT_NE(bad.message.find("temperature"), std::string::npos) << bad.message;
}

TEST(Scheduler, DrainFinishesInFlightThenRefuses) {
  auto s = open_cpu(tiny_model_path());
  Scheduler sched(*s, {});
  const RequestSpec r = spec_of(prompt_of(*s, 1), 12);
  auto a = sched.submit(r), b = sched.submit(r);
  ASSERT_EQ(a.outcome, Admission::Queued);
  ASSERT_EQ(b.outcome, Admission::Queued);
  sched.drain(std::chrono::steady_clock::now() + 60s);
  EXPECT_EQ(collect(a.request).tokens, alone(*s, r));
  EXPECT_EQ(collect(b.request).tokens, alone(*s, r));
  EXPECT_EQ(sched.submit(r).outcome, Admission::Draining);
}

TEST(Scheduler, DrainPastItsDeadlineCancels) {
  auto s = open_cpu(tiny_model_path());
  Scheduler sched(*s, {});
  RequestSpec r = spec_of(prompt_of(*s, 1), s->model().config().max_position_embeddings - 16);
  r.sampling.greedy = false;
  auto a = sched.submit(r);
  ASSERT_EQ(a.outcome, Admission::Queued);
  ASSERT_TRUE(a.request->next(60s));  // running
  sched.drain(std::chrono::steady_clock::now());
  EXPECT_EQ(collect(a.request).done.finish, Finish::Cancelled);
  EXPECT_EQ(sched.stats().gauges.kv_tokens_reserved, 0);
}

TEST(Scheduler, StopStringEndsTheOutputBeforeIt) {
  auto s = open_cpu(tiny_model_path());
  Scheduler sched(*s, {});
  RequestSpec r = spec_of(prompt_of(*s, 5), 24);
  const std::vector<int32_t> ids = alone(*s, r);
  std::string full = s->detokenize(ids);
  if (full.size() < 6) GTEST_SKIP() << "the random model's output is too short to cut";
  const std::string stop = full.substr(full.size() / 2, 3);
  const size_t at = full.find(stop);
  r.stop = {stop};
  const Outcome got = collect(sched.submit(r).request);
  EXPECT_EQ(got.text, full.substr(0, at));
  EXPECT_EQ(got.done.finish, Finish::Stop);
}

TEST(Scheduler, LogprobsAreTheModelsAndSumToAtMostOne) {
  auto s = open_cpu(tiny_model_path());
  Scheduler sched(*s, {});
  RequestSpec r = spec_of(prompt_of(*s, 2), 4);
  r.logprobs = 3;
  auto sub = sched.submit(r);
  int seen = 0;
  for (;;) {
    auto e = sub.request->next(60s);
    ASSERT_TRUE(e);
    if (e->kind == Event::Kind::Done) break;
    ASSERT_EQ(e->logprobs.size(), e->tokens.size());
    for (const auto& lp : e->logprobs) {
      ++seen;
      ASSERT_EQ(lp.top.size(), 3u);
      EXPECT_EQ(lp.top[0].first, lp.id);  // greedy picks the most likely
      EXPECT_FLOAT_EQ(lp.top[0].second, lp.logprob);
      EXPECT_LE(lp.top[0].second, 0.0f);
      EXPECT_GE(lp.top[0].second, lp.top[1].second);
      double mass = 0;
      for (const auto& [id, l] : lp.top) mass += std::exp(double(l));
      EXPECT_LE(mass, 1.0 + 1e-6);
    }
  }
  EXPECT_GT(seen, 0);
}

}  // namespace
}  // namespace sf::serve
