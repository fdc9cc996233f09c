// The load generator's arithmetic and parsing, each case small enough to check by hand.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>
#include <set>

#include "core/error.hpp"
#include "loadgen/arrivals.hpp"
#include "loadgen/latency_stats.hpp"
#include "loadgen/openai_client.hpp"
#include "loadgen/prompts.hpp"
#include "loadgen/sse.hpp"

using namespace sf::loadgen;
using nlohmann::json;

TEST(Percentile, LinearInterpolationBetweenClosestRanks) {
  // Sorted: 10 20 30 40 50; rank = p/100 x 4.
  const std::vector<double> v = {50, 10, 40, 20, 30};
  EXPECT_DOUBLE_EQ(percentile(v, 0), 10);
  EXPECT_DOUBLE_EQ(percentile(v, 50), 30);
  EXPECT_DOUBLE_EQ(percentile(v, 90), 46);    // rank 3.6: 40 + 0.6 x 10
  EXPECT_DOUBLE_EQ(percentile(v, 99), 49.6);  // rank 3.96
  EXPECT_DOUBLE_EQ(percentile(v, 100), 50);
  EXPECT_DOUBLE_EQ(percentile({7}, 99), 7);
  EXPECT_THROW(percentile({}, 50), sf::Error);
  EXPECT_THROW(percentile(v, 101), sf::Error);
  EXPECT_THROW(percentile(v, std::nan("")), sf::Error);
}

RequestRecord rec(double ttft, std::vector<double> itl, int64_t tokens, double end_s,
                  bool ok = true) {
  RequestRecord r;
  r.ok = ok;
  r.ttft_ms = ttft;
  r.itl_ms = std::move(itl);
  r.completion_tokens = tokens;
  r.prompt_tokens = 16;
  r.chunks = tokens;
  r.e2e_ms = ttft + 100;
  r.end_s = end_s;
  return r;
}

TEST(Goodput, LimitAppliesToTtftAndTheRequestsOwnP99Gap) {
  EXPECT_TRUE(meets_limit(rec(100, {10, 20, 30}, 4, 1), 100));  // TTFT == limit counts
  EXPECT_FALSE(meets_limit(rec(100.5, {10}, 2, 1), 100));
  // Gaps 10 and 200: p99 at rank 0.99 = 10 + 0.99 x 190 = 198.1 > 100.
  EXPECT_FALSE(meets_limit(rec(50, {10, 200}, 3, 1), 100));
  EXPECT_TRUE(meets_limit(rec(50, {}, 1, 1), 100));  // one chunk: no gap to judge
  EXPECT_FALSE(meets_limit(rec(1, {1}, 2, 1, /*ok=*/false), 100));
}

TEST(Summary, HandComputedRun) {
  // Four requests over 2 s: three succeed, two of them within 100 ms.
  std::vector<RequestRecord> rs = {rec(50, {20, 30}, 3, 0.5), rec(80, {40}, 2, 1.0),
                                   rec(150, {10}, 2, 2.0), rec(0, {}, 0, 1.5, false)};
  rs[3].completion_tokens = -1;
  rs[1].start_s = 0.3;
  rs[1].scheduled_s = 0.1;  // held back 200 ms by the concurrency limit
  const Summary s = summarize(rs, 100.0);
  EXPECT_EQ(s.requests, 4);
  EXPECT_EQ(s.succeeded, 3);
  EXPECT_EQ(s.errors, 1);
  EXPECT_DOUBLE_EQ(s.duration_s, 2.0);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.5);   // 3 / 2 s
  EXPECT_EQ(s.output_tokens, 7);                 // 3 + 2 + 2
  EXPECT_DOUBLE_EQ(s.output_tokens_per_s, 3.5);  // 7 / 2 s
  EXPECT_EQ(s.prompt_tokens, 48);
  EXPECT_TRUE(s.tokens_from_usage);
  EXPECT_EQ(s.good, 2);
  ASSERT_TRUE(s.goodput.has_value());
  EXPECT_DOUBLE_EQ(*s.goodput, 1.0);  // 2 / 2 s
  // TTFT 50 80 150: p50 80, mean 93.33; ITL pooled 10 20 30 40: p50 25, p90 37.
  EXPECT_DOUBLE_EQ(s.ttft_ms.p50, 80);
  EXPECT_NEAR(s.ttft_ms.mean, 280.0 / 3.0, 1e-12);
  EXPECT_DOUBLE_EQ(s.itl_ms.p50, 25);
  EXPECT_DOUBLE_EQ(s.itl_ms.p90, 37);
  EXPECT_DOUBLE_EQ(s.mean_client_wait_ms, 50);  // 200 ms over 4 requests
  EXPECT_LE(s.ttft_ms.p50, s.ttft_ms.p90);
  EXPECT_LE(s.ttft_ms.p90, s.ttft_ms.p99);
  EXPECT_FALSE(summarize(rs, std::nullopt).goodput.has_value());
}

TEST(Summary, ChunksCountWhenTheServerGivesNoUsage) {
  std::vector<RequestRecord> rs = {rec(10, {}, 3, 1.0)};
  rs[0].completion_tokens = -1;
  rs[0].chunks = 5;
  const Summary s = summarize(rs, std::nullopt);
  EXPECT_EQ(s.output_tokens, 5);
  EXPECT_FALSE(s.tokens_from_usage);
}

TEST(Arrivals, PoissonIsDeterministicAscendingWithTheRightMean) {
  const auto a = poisson_arrivals(20000, 50.0, 7);
  EXPECT_EQ(a, poisson_arrivals(20000, 50.0, 7));
  EXPECT_NE(a, poisson_arrivals(20000, 50.0, 8));
  EXPECT_EQ(a[0], 0.0);
  for (size_t i = 1; i < a.size(); ++i) ASSERT_GE(a[i], a[i - 1]);
  // Mean gap 1/50 = 0.02 s; the standard error of a mean of 19999 exponential gaps is
  // 0.02 / sqrt(19999) = 1.4e-4, so 1e-3 is seven of them.
  const double mean_gap = a.back() / double(a.size() - 1);
  EXPECT_NEAR(mean_gap, 0.02, 1e-3);
  // An exponential's standard deviation equals its mean: the gaps are not evenly spaced.
  double ss = 0;
  for (size_t i = 1; i < a.size(); ++i) ss += std::pow(a[i] - a[i - 1] - mean_gap, 2);
  EXPECT_NEAR(std::sqrt(ss / double(a.size() - 2)), 0.02, 2e-3);
  // The same seed at twice the rate: the same schedule, twice as fast.
  const auto b = poisson_arrivals(20000, 100.0, 7);
  EXPECT_NEAR(b[123] * 2, a[123], 1e-12);
}

TEST(Arrivals, InfiniteRateSendsEverythingAtOnceAndBadRatesAreRefused) {
  EXPECT_EQ(poisson_arrivals(3, std::numeric_limits<double>::infinity(), 1),
            (std::vector<double>{0, 0, 0}));
  EXPECT_TRUE(poisson_arrivals(0, 1, 1).empty());
  EXPECT_THROW(poisson_arrivals(3, 0, 1), sf::Error);
  EXPECT_THROW(poisson_arrivals(3, -2, 1), sf::Error);
  EXPECT_THROW(poisson_arrivals(3, std::nan(""), 1), sf::Error);
  EXPECT_THROW(poisson_arrivals(-1, 1, 1), sf::Error);
}

TEST(Prompts, WordsFromTheBuiltInTextDeterministicFromTheSeed) {
  const auto& words = prompt_words();
  ASSERT_GT(words.size(), 300u);  // data/text/evaluation.txt
  EXPECT_EQ(words[0], "The");
  EXPECT_EQ(prompt_from({"a", "b", "c"}, 2, 4), "c a b c");  // wraps around
  const auto p = make_prompts(words, 16, 12, 3);
  EXPECT_EQ(p, make_prompts(words, 16, 12, 3));
  EXPECT_NE(p, make_prompts(words, 16, 12, 4));
  std::set<std::string> distinct(p.begin(), p.end());
  EXPECT_GT(distinct.size(), 12u);  // different starts, so a prefix cache cannot answer them all
  for (const auto& s : p) EXPECT_EQ(split_words(s).size(), 12u);
  EXPECT_THROW(make_prompts(words, 1, 0, 1), sf::Error);
}

TEST(Prompts, WordsForTokensSeparatesTheFixedPart) {
  // 12 words -> 40 tokens, 6 -> 25: 2.5 tokens per word plus 10 fixed (a chat template);
  // 60 tokens -> (60 - 10) / 2.5 = 20 words.
  EXPECT_EQ(words_for_tokens(60, 12, 40, 6, 25), 20);
  EXPECT_EQ(words_for_tokens(60, 12, 18), 40);       // one probe: 1.5 tokens per word
  EXPECT_EQ(words_for_tokens(5, 12, 40, 6, 25), 1);  // the template alone is longer
  EXPECT_EQ(words_for_tokens(7, 0, 0), 7);           // nothing known: a word per token
}

TEST(Sse, EventsSplitAnywhereAndCrLf) {
  std::vector<std::string> got;
  SseParser p([&](const std::string& d) {
    got.push_back(d);
    return true;
  });
  const std::string stream =
      ": keep-alive\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata:two\ndata: lines\n\ndata: [DONE]\n\n";
  for (char c : stream) ASSERT_TRUE(p.feed(std::string_view(&c, 1)));  // one byte at a time
  EXPECT_TRUE(p.finish());
  EXPECT_EQ(got, (std::vector<std::string>{"{\"a\":1}", "two\nlines", "[DONE]"}));

  std::vector<std::string> tail;
  SseParser q([&](const std::string& d) {
    tail.push_back(d);
    return d != "stop";
  });
  EXPECT_FALSE(q.feed("data: stop\n\ndata: never\n\n"));  // the callback ends the parse
  EXPECT_EQ(tail, (std::vector<std::string>{"stop"}));
  SseParser r([&](const std::string& d) {
    tail.push_back(d);
    return true;
  });
  r.feed("data: unterminated");
  r.finish();  // an event the stream did not close is still delivered
  EXPECT_EQ(tail.back(), "unterminated");
}

TEST(StreamChunks, CompletionsChatUsageAndErrors) {
  auto c = read_chunk(json::parse(R"({"choices":[{"index":0,"text":"Hi","finish_reason":null}]})"),
                      false);
  EXPECT_EQ(c.text, "Hi");
  EXPECT_FALSE(c.finished);
  c = read_chunk(json::parse(R"({"choices":[{"delta":{"role":"assistant","content":""}}]})"), true);
  EXPECT_EQ(c.text, "");
  c = read_chunk(json::parse(R"({"choices":[{"delta":{"content":" there"}}]})"), true);
  EXPECT_EQ(c.text, " there");
  c = read_chunk(json::parse(R"({"choices":[{"delta":{},"finish_reason":"length"}]})"), true);
  EXPECT_TRUE(c.finished);
  c = read_chunk(
      json::parse(R"({"choices":[],"usage":{"prompt_tokens":16,"completion_tokens":8}})"), false);
  EXPECT_EQ(c.prompt_tokens, 16);
  EXPECT_EQ(c.completion_tokens, 8);
  c = read_chunk(json::parse(R"({"error":{"message":"cancelled","type":"server_error"}})"), false);
  ASSERT_TRUE(c.error.has_value());
  EXPECT_EQ(*c.error, "cancelled");
  EXPECT_EQ(read_chunk(json::parse("[1]"), false).text, "");  // not an object: nothing
}

TEST(ServerUrls, BaseUrlsWithOrWithoutV1) {
  auto u = parse_server_url("http://127.0.0.1:8080");
  EXPECT_EQ(u.scheme_host_port, "http://127.0.0.1:8080");
  EXPECT_EQ(u.prefix, "");
  u = parse_server_url("http://localhost:8000/v1/");
  EXPECT_EQ(u.scheme_host_port, "http://localhost:8000");
  EXPECT_EQ(u.prefix, "");
  u = parse_server_url("https://gw.example/llm/v1");
  EXPECT_EQ(u.scheme_host_port, "https://gw.example");
  EXPECT_EQ(u.prefix, "/llm");
  for (const char* bad : {"127.0.0.1:8080", "ftp://h", "http://", "http://h/?x=1"})
    EXPECT_THROW(parse_server_url(bad), sf::Error) << bad;
}

TEST(HttpErrors, TheServersMessageOrItsBody) {
  EXPECT_EQ(http_error(400, R"({"error":{"message":"'max_tokens' must be >= 1"}})"),
            "HTTP 400: 'max_tokens' must be >= 1");
  EXPECT_EQ(http_error(502, "Bad Gateway"), "HTTP 502: Bad Gateway");
  EXPECT_EQ(http_error(500, ""), "HTTP 500: (empty body)");
}

TEST(RequestBodies, StreamingGreedyWithUsage) {
  const json c = request_body("m", "Hello", 8, false);
  EXPECT_EQ(c["prompt"], "Hello");
  EXPECT_EQ(c["max_tokens"], 8);
  EXPECT_EQ(c["stream"], true);
  EXPECT_EQ(c["stream_options"]["include_usage"], true);
  EXPECT_EQ(c["temperature"], 0);
  const json chat = request_body("m", "Hello", 8, true);
  EXPECT_EQ(chat["messages"][0]["content"], "Hello");
  EXPECT_FALSE(chat.contains("prompt"));
}
