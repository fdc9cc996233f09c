// sparseflow bench-serve: a load generator for any OpenAI-compatible server (sparseflow serve,
// llama.cpp's llama-server, vLLM). Streaming completions arrive as a Poisson process (or all at
// once), at most --concurrency in flight; it reports request and token throughput, TTFT,
// inter-token and end-to-end percentiles and the goodput under a latency limit, for one rate or a
// sweep, and writes every request's record to --json for `sparseflow audit --from-serve-*`.
#include <fmt/format.h>
#include <signal.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <limits>
#include <map>

#include "cli/commands.hpp"
#include "cli/table.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/output_path.hpp"
#include "core/progress.hpp"
#include "loadgen/arrivals.hpp"
#include "loadgen/load.hpp"
#include "loadgen/openai_client.hpp"
#include "loadgen/prompts.hpp"
#include "loadgen/results_json.hpp"
#include "report/svg_plot.hpp"

namespace sf::cli {

namespace {

using nlohmann::json;
using nlohmann::ordered_json;
namespace lg = sf::loadgen;

// Each worker is a thread with its own connection.
constexpr int64_t kMaxConcurrency = 4096;

struct BenchServeOptions {
  std::string url, rate, sweep, json, plot, api_key, model, gpu;
  int64_t requests = 0, prompt_tokens = 0, max_tokens = 0, concurrency = 0;
  std::optional<double> latency_limit_ms;
  uint64_t seed = 0;
  double timeout_s = 300;
  bool chat = false, force = false;
};

// "4" -> 4, "inf" -> +infinity; anything else, or a rate that is not > 0, is refused.
double parse_rate(const std::string& s, const char* flag) {
  if (s == "inf" || s == "infinity") return std::numeric_limits<double>::infinity();
  size_t used = 0;
  double r = 0;
  try {
    r = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != s.size() || s.empty() || !std::isfinite(r) || !(r > 0))
    fail(Status::InvalidArgument,
         "{} '{}': expected a request rate > 0 in requests/s, or inf (every request at once)", flag,
         s);
  return r;
}

std::string rate_text(double r) {
  return std::isinf(r) ? "inf" : fmt::format("{:g}", r);
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The command as run, without the API key (the JSON may be shared).
std::string command_line(const BenchServeOptions& o) {
  std::string c = fmt::format("sparseflow bench-serve --url {}", o.url);
  if (!o.sweep.empty())
    c += " --sweep " + o.sweep;
  else
    c += " --rate " + o.rate;
  c += fmt::format(" --requests {} --prompt-tokens {} --max-tokens {}", o.requests, o.prompt_tokens,
                   o.max_tokens);
  if (o.concurrency > 0) c += fmt::format(" --concurrency {}", o.concurrency);
  if (o.latency_limit_ms) c += fmt::format(" --latency-limit-ms {}", *o.latency_limit_ms);
  c += fmt::format(" --seed {}", o.seed);
  if (o.chat) c += " --chat";
  if (!o.model.empty()) c += fmt::format(" --model '{}'", o.model);
  if (!o.gpu.empty()) c += fmt::format(" --gpu '{}'", o.gpu);
  if (!o.json.empty()) c += " --json " + o.json;
  if (!o.plot.empty()) c += " --plot " + o.plot;
  return c;
}

// The model the requests name: --model, else the first /v1/models lists.
std::string served_model(const json& models, const BenchServeOptions& o) {
  if (!o.model.empty()) return o.model;
  if (models.is_object() && models.contains("data") && models["data"].is_array() &&
      !models["data"].empty() && models["data"][0].is_object() &&
      models["data"][0].contains("id") && models["data"][0]["id"].is_string())
    return models["data"][0]["id"].get<std::string>();
  fail(Status::InvalidArgument,
       "GET /v1/models at {} lists no model (answer: {}); pass the served model's name with "
       "--model NAME",
       o.url, models.dump().substr(0, 300));
}

struct Calibration {
  int64_t words_per_prompt = 0;
  ordered_json record;
};

// Two non-streaming probes (about P and P/2 tokens of words, max_tokens 1) tell how many of the
// server's tokens a word of the text costs, so that prompts come out at about --prompt-tokens
// whatever the tokenizer. They also warm the server up before the clock starts.
Calibration calibrate(lg::OpenAiClient& client, const std::string& model,
                      const BenchServeOptions& o, const std::string& path) {
  const auto& words = lg::prompt_words();
  auto probe = [&](int64_t n_words) -> std::optional<int64_t> {
    json body = lg::request_body(model, lg::prompt_from(words, 0, n_words), 1, o.chat);
    body.erase("stream");
    body.erase("stream_options");
    json answer;
    try {
      answer = client.post(path, body);
    } catch (const Error& e) {
      throw Error(e.status(),
                  fmt::format("sizing the prompts (a probe of {} words, max_tokens 1): {}", n_words,
                              e.what()));
    }
    if (answer.contains("usage") && answer["usage"].is_object() &&
        answer["usage"].contains("prompt_tokens") &&
        answer["usage"]["prompt_tokens"].is_number_integer())
      return answer["usage"]["prompt_tokens"].get<int64_t>();
    return std::nullopt;
  };
  Calibration c;
  // About P tokens at the 4 tokens per 3 words of common BPE vocabularies, so that the probe fits
  // wherever a prompt of P tokens does.
  const int64_t w1 = std::max<int64_t>(1, o.prompt_tokens * 3 / 4), w2 = w1 / 2;
  const auto t1 = probe(w1);
  const auto second = t1 && w2 > 0 ? probe(w2) : std::nullopt;
  const bool two = second.has_value();
  const int64_t t2 = second.value_or(0);
  if (!t1) {
    // No usage: English text runs about 4 tokens per 3 words in the common BPE vocabularies.
    c.words_per_prompt = std::max<int64_t>(1, std::llround(double(o.prompt_tokens) * 0.75));
    c.record = {{"probes", {{{"words", w1}, {"prompt_tokens", nullptr}}}},
                {"words_per_prompt", c.words_per_prompt},
                {"method", "the server reports no usage: 0.75 words per token assumed"}};
    return c;
  }
  c.words_per_prompt = lg::words_for_tokens(o.prompt_tokens, w1, *t1, two ? w2 : 0, t2);
  c.record = {{"probes", ordered_json::array()},
              {"words_per_prompt", c.words_per_prompt},
              {"method", two ? "a line through two probes' usage.prompt_tokens"
                             : "proportional to one probe's usage.prompt_tokens"}};
  c.record["probes"].push_back({{"words", w1}, {"prompt_tokens", *t1}});
  if (two) c.record["probes"].push_back({{"words", w2}, {"prompt_tokens", t2}});
  return c;
}

std::string ms(double v) {
  return fmt::format("{:.1f}", v);
}

void print_point(Table& t, const std::string& rate, const lg::Summary& s) {
  t.add_row({rate, fmt::format("{}/{}", s.succeeded, s.requests),
             format_number(s.request_throughput), format_number(s.output_tokens_per_s),
             ms(s.ttft_ms.p50), ms(s.ttft_ms.p90), ms(s.ttft_ms.p99), ms(s.itl_ms.p50),
             ms(s.itl_ms.p90), ms(s.itl_ms.p99), ms(s.e2e_ms.p50), ms(s.e2e_ms.p99),
             s.goodput ? format_number(*s.goodput) : std::string("-")});
}

void write_plot(const ordered_json& points, const BenchServeOptions& o, const std::string& model) {
  report::LineChart c;
  c.title = fmt::format("p99 latency against throughput: {}", model);
  c.x_label = "requests/s (achieved)";
  c.y_label = "p99 latency (ms)";
  report::Series ttft{"TTFT p99", {}}, itl{"inter-token p99", {}}, limit{"latency limit", {}};
  std::vector<std::tuple<double, double, double>> rows;
  for (const auto& p : points) {
    const auto& s = p["summary"];
    rows.emplace_back(s["request_throughput"].get<double>(), s["ttft_ms"]["p99"].get<double>(),
                      s["itl_ms"]["p99"].get<double>());
  }
  std::sort(rows.begin(), rows.end());
  for (auto [x, t, i] : rows) {
    ttft.points.emplace_back(x, t);
    itl.points.emplace_back(x, i);
  }
  c.series = {ttft, itl};
  if (o.latency_limit_ms && !rows.empty()) {
    limit.points = {{std::get<0>(rows.front()), *o.latency_limit_ms},
                    {std::get<0>(rows.back()), *o.latency_limit_ms}};
    c.series.push_back(limit);
  }
  report::write_svg(report::render_line_chart(c), o.plot);
}

void run_bench_serve(const BenchServeOptions& o) {
  if (o.rate.empty() == o.sweep.empty())
    fail(Status::InvalidArgument,
         "give the request rate: --rate R (requests/s, or inf) for one run, or --sweep R1,R2,... "
         "for several");
  std::vector<double> rates;
  if (!o.sweep.empty()) {
    std::string item;
    for (size_t i = 0; i <= o.sweep.size(); ++i) {
      if (i == o.sweep.size() || o.sweep[i] == ',') {
        rates.push_back(parse_rate(item, "--sweep"));
        item.clear();
      } else {
        item += o.sweep[i];
      }
    }
  } else {
    rates.push_back(parse_rate(o.rate, "--rate"));
  }
  if (o.concurrency > kMaxConcurrency)
    fail(Status::InvalidArgument,
         "--concurrency {}: at most {} (each request in flight holds a thread and a connection)",
         o.concurrency, kMaxConcurrency);
  if (o.latency_limit_ms && !(*o.latency_limit_ms > 0 && std::isfinite(*o.latency_limit_ms)))
    fail(Status::InvalidArgument, "--latency-limit-ms must be > 0, got {}", *o.latency_limit_ms);
  if (!(o.timeout_s > 0))
    fail(Status::InvalidArgument, "--timeout must be > 0 seconds, got {}", o.timeout_s);
  // Outputs: never replaced without --force, checked before the load runs.
  if (!o.json.empty()) check_output({o.json, "--json"}, {}, o.force);
  if (!o.plot.empty()) check_output({o.plot, "--plot"}, {{o.json, "--json"}}, o.force);
  const lg::ServerUrl url = lg::parse_server_url(o.url);
  // A server that closes a connection must fail our write, not kill the process.
  ::signal(SIGPIPE, SIG_IGN);

  lg::ClientOptions co{url, o.api_key, o.timeout_s};
  lg::OpenAiClient client(co);
  const json models = client.models();
  const std::string model = served_model(models, o);
  const std::string path = o.chat ? "/v1/chat/completions" : "/v1/completions";
  const Calibration cal = calibrate(client, model, o, path);
  const int64_t concurrency =
      o.concurrency > 0 ? o.concurrency : std::min(o.requests, kMaxConcurrency);

  fmt::print(
      "bench-serve: {} model \"{}\", {} requests per rate, prompts of about {} tokens ({} "
      "words), max_tokens {}, {}\n",
      url.display() + path, model, o.requests, o.prompt_tokens, cal.words_per_prompt, o.max_tokens,
      o.concurrency > 0 ? fmt::format("at most {} in flight", o.concurrency)
                        : std::string("no concurrency limit"));
  if (o.latency_limit_ms)
    fmt::print(
        "goodput: requests/s with TTFT <= {0} ms and their own p99 inter-token gap <= {0} "
        "ms\n",
        *o.latency_limit_ms);

  const auto prompts =
      lg::make_prompts(lg::prompt_words(), o.requests, cal.words_per_prompt, o.seed);
  lg::LoadPlan plan;
  plan.path = path;
  plan.chat = o.chat;
  plan.concurrency = concurrency;
  for (const auto& p : prompts)
    plan.bodies.push_back(lg::request_body(model, p, o.max_tokens, o.chat));

  Table t({"rate", "ok", "req/s", "tok/s", "TTFT p50", "p90", "p99", "ITL p50", "p90", "p99",
           "E2E p50", "p99", "goodput"});
  ordered_json points = ordered_json::array();
  int64_t succeeded = 0;
  std::string first_error;
  for (double rate : rates) {
    plan.arrivals = lg::poisson_arrivals(o.requests, rate, o.seed);
    Progress progress(fmt::format("rate {}", rate_text(rate)), double(o.requests), "requests");
    const auto records =
        lg::run_load(co, plan, [&](int64_t done) { progress.update(double(done)); });
    progress.finish();
    const lg::Summary s = lg::summarize(records, o.latency_limit_ms);
    succeeded += s.succeeded;
    print_point(t, rate_text(rate), s);
    ordered_json point = {{"rate", std::isinf(rate) ? ordered_json("inf") : ordered_json(rate)},
                          {"summary", lg::summary_json(s)}};
    // The distinct errors, each with how often it came.
    std::map<std::string, int64_t> errors;
    for (const auto& r : records)
      if (!r.ok) ++errors[r.error];
    ordered_json err = ordered_json::array();
    for (const auto& [msg, n] : errors) {
      err.push_back({{"error", msg}, {"count", n}});
      if (first_error.empty()) first_error = msg;
    }
    point["errors"] = std::move(err);
    point["requests"] = lg::records_json(records);
    points.push_back(std::move(point));
  }
  fmt::print("{}", t.str());
  fmt::print(
      "(latencies in ms; TTFT and end-to-end from the send; ITL: gaps between streamed "
      "chunks with text)\n");
  // The server's own count of the prompts, against the length asked for.
  int64_t counted = 0, prompt_sum = 0;
  for (const auto& p : points)
    for (const auto& r : p["requests"])
      if (r["prompt_tokens"].is_number_integer()) {
        ++counted;
        prompt_sum += r["prompt_tokens"].get<int64_t>();
      }
  if (counted > 0) {
    const double mean = double(prompt_sum) / double(counted);
    fmt::print("prompt tokens (the server's count): mean {:.1f}, asked about {}{}\n", mean,
               o.prompt_tokens,
               std::fabs(mean - double(o.prompt_tokens)) > 0.25 * double(o.prompt_tokens)
                   ? " -- off by more than 25%: the server adds tokens of its own (a chat "
                     "template, a BOS) that a prompt this short cannot make up for"
                   : "");
  }
  for (const auto& p : points)
    for (const auto& e : p["errors"])
      fmt::print("rate {}: {} request(s) failed: {}\n",
                 p["rate"].is_string() ? p["rate"].get<std::string>() : p["rate"].dump(),
                 e["count"].get<int64_t>(), e["error"].get<std::string>());

  ordered_json doc = {
      {"format", lg::kResultsFormat}, {"command", command_line(o)}, {"date", utc_now()}};
  doc["gpu"] = o.gpu.empty() ? ordered_json() : ordered_json(o.gpu);
  doc["server"] = {
      {"url", url.display()}, {"endpoint", path}, {"model", model}, {"models", models}};
  ordered_json params = {{"rates", ordered_json::array()},
                         {"requests", o.requests},
                         {"prompt_tokens", o.prompt_tokens},
                         {"max_tokens", o.max_tokens}};
  for (double r : rates)
    params["rates"].push_back(std::isinf(r) ? ordered_json("inf") : ordered_json(r));
  params["concurrency"] = o.concurrency > 0 ? ordered_json(o.concurrency) : ordered_json();
  params["latency_limit_ms"] =
      o.latency_limit_ms ? ordered_json(*o.latency_limit_ms) : ordered_json();
  params["seed"] = o.seed;
  params["chat"] = o.chat;
  params["temperature"] = 0;
  params["timeout_s"] = o.timeout_s;
  params["api_key"] = !o.api_key.empty();
  doc["parameters"] = std::move(params);
  doc["prompts"] = {{"text", "data/text/evaluation.txt (built in), words from a seeded start"},
                    {"calibration", cal.record}};
  doc["points"] = points;
  if (!o.json.empty()) {
    const std::string text = doc.dump(1) + "\n";
    AtomicFile f(o.json, o.force);
    f.write(text.data(), text.size());
    f.commit();
    fmt::print("wrote {}\n", o.json);
  }
  if (!o.plot.empty()) {
    write_plot(points, o, model);
    fmt::print("wrote {}\n", o.plot);
  }
  if (succeeded == 0) fail(Status::Io, "every request failed; the first error: {}", first_error);
}

}  // namespace

void add_bench_serve_command(CLI::App& app) {
  auto o = std::make_shared<BenchServeOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bench-serve",
      "Load-test an OpenAI-compatible server: throughput, TTFT / inter-token / end-to-end "
      "percentiles and goodput under a request rate");
  cmd->footer(
      "Requests are streaming completions (temperature 0, max_tokens T, the usage asked for) "
      "arriving as a Poisson process at --rate requests/s (inf: all at once), at most "
      "--concurrency in flight; a request that finds every slot busy is sent when one frees, and "
      "its latencies count from its send. Prompts are cut from a fixed English text from a seeded "
      "start, sized to about --prompt-tokens by two probes of the server's token count. TTFT: "
      "send to the first chunk with text. ITL: the gaps between chunks with text. Goodput "
      "(--latency-limit-ms L): successful requests per second whose TTFT <= L and whose own p99 "
      "inter-token gap <= L. Tokens out are the server's usage.completion_tokens, or the chunks "
      "with text when it gives none. See docs/SERVING.md.");
  cmd->add_option("--url", o->url,
                  "the server's base URL, e.g. http://127.0.0.1:8080 (a trailing /v1 is fine)")
      ->required();
  auto* rate =
      cmd->add_option("--rate", o->rate, "requests per second (a Poisson process), or inf");
  cmd->add_option("--sweep", o->sweep, "several rates, e.g. 1,2,4,8,inf: one run each, one JSON")
      ->excludes(rate);
  cmd->add_option("--requests", o->requests, "requests per rate")
      ->required()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--prompt-tokens", o->prompt_tokens,
                  "prompt length in the server's tokens (about)")
      ->required()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-tokens", o->max_tokens, "max_tokens of each request")
      ->required()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--concurrency", o->concurrency,
                  "requests in flight at most (default: no limit, i.e. --requests, up to 4096)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--latency-limit-ms", o->latency_limit_ms,
                  "goodput counts the successful requests whose TTFT <= L ms and whose own p99 "
                  "inter-token gap <= L ms");
  cmd->add_option("--json", o->json, "write every parameter, summary and request record here");
  cmd->add_option("--plot", o->plot,
                  "draw p99 TTFT and inter-token latency against throughput (SVG), across "
                  "--sweep");
  cmd->add_flag("--force", o->force, "replace an existing --json or --plot file");
  cmd->add_option("--seed", o->seed, "seed of the arrivals and the prompts")->capture_default_str();
  cmd->add_option("--api-key", o->api_key, "sent as 'Authorization: Bearer KEY' (not recorded)")
      ->envname("SPARSEFLOW_API_KEY");
  cmd->add_flag("--chat", o->chat, "use /v1/chat/completions with one user message");
  cmd->add_option("--model", o->model,
                  "the model to request (default: the first /v1/models lists)");
  cmd->add_option("--gpu", o->gpu,
                  "the GPU the server runs on (recorded for `sparseflow audit --from-serve-*`), "
                  "e.g. \"NVIDIA H100 80GB HBM3\"");
  cmd->add_option("--timeout", o->timeout_s, "seconds to wait for the next bytes of an answer")
      ->capture_default_str();
  cmd->callback([o] { run_bench_serve(*o); });
}

}  // namespace sf::cli
