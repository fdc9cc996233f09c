// Continuous batching over a session (session/session.hpp: new_sequence / step), with no HTTP in
// it: requests join the running batch between any two decode steps and leave it when they finish,
// each with its own prompt, sampling parameters, stop strings and KV state.
//
// One engine thread runs the loop; submit(), cancel() and the request's event queue are safe from
// any thread. Each step:
//   1. drops cancelled requests, queued or running, and returns their KV reservation;
//   2. admits queued requests in arrival order while the batch has room (max_batch) and the KV
//      budget covers the head request's reservation, prompt + max_tokens: admission never
//      overcommits, so a running request never runs out of KV;
//   3. runs one batched forward pass: one row for every decoding sequence, plus chunks of the
//      prompts being prefilled, at most prefill_chunk prompt tokens per step, so a long prompt
//      does not stall the streams already decoding;
//   4. samples each sequence's next token with its own sampler (its own seed), turns it into text,
//      applies stop strings, and pushes the text to the request; finished ones leave the batch.
// Because a batched pass gives each row what that sequence alone would get (Session::step), a
// request's tokens do not depend on what it was batched with.
//
// The KV reservation is what a request may grow to; memory follows the tokens actually held (a
// sequence's cache grows as it goes). A paged cache (fixed-size blocks, a block table per
// sequence) would let admission count blocks held instead of the worst case; that is the next step.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "model/sampling.hpp"
#include "serve/metrics.hpp"

namespace sf::session {
class Session;
}

namespace sf::serve {

struct RequestSpec {
  std::vector<int32_t> prompt;        // token ids, used as given
  std::optional<int64_t> max_tokens;  // new tokens at most; unset: what max_context leaves
  model::SamplingParams sampling;     // greedy, or temperature / top-k / top-p with a seed
  std::vector<std::string> stop;      // the output ends before the first of these it contains
  int logprobs = -1;                  // -1: none; N >= 0: each token's logprob and N alternatives
  std::string endpoint = "completions";  // for metrics only
};

// Why a request ended: "stop" (EOS or a stop string), "length" (max_tokens), "cancelled" (the
// client went away, or shutdown's deadline passed), "error" (the engine failed; the message says).
enum class Finish { Stop, Length, Cancelled, Error };
std::string_view finish_name(Finish f);

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0.0f;                        // log-softmax of the model's logits
  std::vector<std::pair<int32_t, float>> top;  // the N most likely tokens and their logprobs
};

// What a request hears, in order: any number of Text events, then one Done.
struct Event {
  enum class Kind { Text, Done } kind = Kind::Text;
  std::string text;                    // Text: new output text (never part of a stop string)
  std::vector<int32_t> tokens;         // Text: the tokens sampled since the previous event
  std::vector<TokenLogprob> logprobs;  // Text: theirs, when asked for
  // Done:
  Finish finish = Finish::Stop;
  std::string error;
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

// The caller's side of a submitted request. Events queue up here until taken.
class Request {
 public:
  uint64_t id() const { return id_; }
  int64_t prompt_tokens() const { return prompt_tokens_; }
  int64_t max_tokens() const { return max_tokens_; }
  // The next event; nullopt when none came within the timeout.
  std::optional<Event> next(std::chrono::milliseconds timeout);
  // Asks the scheduler to drop the request (a client that went away); a Done(Cancelled) follows
  // unless it had finished already. Safe to call more than once, from any thread.
  void cancel();
  bool cancel_requested() const { return cancel_.load(); }

 private:
  friend class Scheduler;
  struct Wake;
  void push(Event e);
  uint64_t id_ = 0;
  int64_t prompt_tokens_ = 0, max_tokens_ = 0;
  std::atomic<bool> cancel_{false};
  std::shared_ptr<Wake> wake_;  // the scheduler's, to notice a cancel while idle
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
};

struct SchedulerOptions {
  int64_t max_batch = 8;        // sequences decoding together
  int64_t max_context = 0;      // prompt + new tokens per sequence; 0: max_position_embeddings
  int64_t kv_budget = 0;        // KV tokens reserved over all sequences; 0: max_batch x max_context
  int64_t max_queue = 64;       // requests waiting for the batch; more are refused (QueueFull)
  int64_t prefill_chunk = 256;  // prompt tokens per step
};

enum class Admission {
  Queued,     // accepted: events follow on the request
  Invalid,    // malformed (empty prompt, an id outside the vocabulary, bad sampling parameters)
  TooLong,    // prompt + max_tokens over max_context, or over the whole KV budget
  QueueFull,  // the queue holds max_queue requests: try again later (HTTP 429)
  Draining,   // shutting down: no new requests (HTTP 503)
};

struct Submitted {
  Admission outcome = Admission::Queued;
  std::shared_ptr<Request> request;  // when Queued
  std::string message;               // when not: what was wrong and what to do
};

struct SchedulerStats {
  Gauges gauges;
  int64_t finished = 0;
};

class Scheduler {
 public:
  // Starts the engine thread. The session (CPU engine: Session::supports_steps) must outlive this.
  // Records into `metrics` when given (a server's, which counts what it refuses itself too).
  // Throws Error(InvalidArgument) for options out of range.
  Scheduler(session::Session& session, const SchedulerOptions& options,
            std::shared_ptr<Metrics> metrics = nullptr);
  ~Scheduler();  // cancels whatever is left and joins the engine thread
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  Submitted submit(RequestSpec spec);

  // Stops admitting new requests (submit answers Draining), lets queued and running ones finish
  // until the deadline, cancels what is left then, and returns once none is left.
  void drain(std::chrono::steady_clock::time_point deadline);
  bool draining() const { return draining_.load(); }

  const SchedulerOptions& options() const { return opt_; }
  SchedulerStats stats() const;
  Metrics& metrics() { return *metrics_; }

 private:
  struct Seq;
  void loop();
  void finish(Seq& s, Finish why, std::string error = {});
  void emit_token(Seq& s, int32_t id, std::span<const float> logits);
  void publish_locked();
  // Takes the finished sequences out of the queue and the batch and returns their KV reservation;
  // deliver() then sends their Done events, so a client that sees Done sees its KV returned.
  std::vector<std::unique_ptr<Seq>> retire_locked();
  void deliver(std::vector<std::unique_ptr<Seq>> retired);

  session::Session& session_;
  SchedulerOptions opt_;
  std::shared_ptr<Metrics> metrics_;
  std::shared_ptr<Request::Wake> wake_;  // mutex + condition variable of the engine thread
  // Under wake_'s mutex:
  std::deque<std::unique_ptr<Seq>> queue_;
  int64_t reserved_ = 0;  // KV tokens reserved by running sequences
  bool stop_ = false;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  Gauges gauges_;
  int64_t finished_ = 0;
  // The engine thread's own:
  std::vector<std::unique_ptr<Seq>> running_;
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_id_{1};
  std::condition_variable idle_;  // drain() waits on it (with wake_'s mutex)
  std::thread thread_;
};

}  // namespace sf::serve
