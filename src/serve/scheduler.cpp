#include "serve/scheduler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.hpp"
#include "serve/stop_strings.hpp"
#include "session/session.hpp"
#include "tokenizer/utf8_stream.hpp"

namespace sf::serve {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The most alternatives a request may ask for per token: OpenAI's completions allow 5, its chat
// 20; each costs a partial sort of the vocabulary.
constexpr int kMaxLogprobs = 20;

}  // namespace

std::string_view finish_name(Finish f) {
  switch (f) {
    case Finish::Stop:
      return "stop";
    case Finish::Length:
      return "length";
    case Finish::Cancelled:
      return "cancelled";
    case Finish::Error:
      return "error";
  }
  return "?";
}

struct Request::Wake {
  std::mutex mu;
  std::condition_variable cv;
};

std::optional<Event> Request::next(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
  Event e = std::move(events_.front());
  events_.pop_front();
  return e;
}

void Request::cancel() {
  cancel_ = true;
  if (wake_) {
    // Taking the scheduler's lock orders the flag before its next look at the queue.
    { const std::lock_guard lock(wake_->mu); }
    wake_->cv.notify_all();
  }
}

void Request::push(Event e) {
  {
    const std::lock_guard lock(mu_);
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

struct Scheduler::Seq {
  std::shared_ptr<Request> req;
  RequestSpec spec;
  int64_t max_tokens = 0;
  int64_t reserve = 0;  // KV tokens: prompt + max_tokens
  model::Sampler sampler;
  std::unique_ptr<session::Sequence> kv;
  int64_t fed = 0;    // prompt tokens run so far
  int32_t last = -1;  // the token the next step feeds, once the prompt is in
  int64_t generated = 0;
  tok::Utf8Stream utf8;
  StopFilter stop;
  Clock::time_point arrived, last_token_at;
  bool done = false;
  Event final;  // the Done event, delivered once the sequence has left and its KV is returned

  Seq(RequestSpec s, int64_t max_new)
      : spec(std::move(s)),
        max_tokens(max_new),
        reserve(int64_t(spec.prompt.size()) + max_new),
        sampler(spec.sampling),
        stop(spec.stop),
        arrived(Clock::now()) {}
  bool prefilling() const { return fed < int64_t(spec.prompt.size()); }
};

Scheduler::Scheduler(session::Session& session, const SchedulerOptions& options,
                     std::shared_ptr<Metrics> metrics)
    : session_(session),
      opt_(options),
      metrics_(metrics ? std::move(metrics) : std::make_shared<Metrics>()),
      wake_(std::make_shared<Request::Wake>()) {
  const int64_t max_pos = session.model().config().max_position_embeddings;
  if (!session.supports_steps())
    fail(Status::UnsupportedShape,
         "continuous batching runs on the CPU engine for now; this session runs on {}. Use "
         "--device cpu.",
         session.device());
  if (opt_.max_context == 0) opt_.max_context = max_pos;
  if (opt_.max_batch < 1)
    fail(Status::InvalidArgument, "max_batch must be >= 1, got {}.", opt_.max_batch);
  if (opt_.max_context < 2 || opt_.max_context > max_pos)
    fail(Status::InvalidArgument,
         "max_context must be in [2, {}] (the model's max_position_embeddings), got {}.", max_pos,
         opt_.max_context);
  if (opt_.kv_budget == 0) opt_.kv_budget = opt_.max_batch * opt_.max_context;
  if (opt_.kv_budget < 2)
    fail(Status::InvalidArgument, "the KV budget must be >= 2 tokens, got {}.", opt_.kv_budget);
  if (opt_.max_queue < 0)
    fail(Status::InvalidArgument, "max_queue must be >= 0, got {}.", opt_.max_queue);
  if (opt_.prefill_chunk < 1)
    fail(Status::InvalidArgument, "prefill_chunk must be >= 1, got {}.", opt_.prefill_chunk);
  session_.start();
  gauges_.max_batch = opt_.max_batch;
  gauges_.max_queue = opt_.max_queue;
  gauges_.kv_tokens_budget = opt_.kv_budget;
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    const std::lock_guard lock(wake_->mu);
    stop_ = true;
  }
  wake_->cv.notify_all();
  if (thread_.joinable()) thread_.join();
}

Submitted Scheduler::submit(RequestSpec spec) {
  metrics_->request_received(spec.endpoint);
  auto reject = [&](Admission a, std::string_view reason, std::string message) {
    metrics_->request_rejected(reason);
    return Submitted{a, nullptr, std::move(message)};
  };
  if (draining_)
    return reject(Admission::Draining, "draining",
                  "the server is shutting down and takes no new requests; retry on another "
                  "replica or after it restarts.");
  const int64_t V = session_.model().config().vocab_size;
  const int64_t P = int64_t(spec.prompt.size()), C = opt_.max_context;
  if (P == 0) return reject(Admission::Invalid, "invalid", "the prompt is empty.");
  for (size_t i = 0; i < spec.prompt.size(); ++i)
    if (spec.prompt[i] < 0 || spec.prompt[i] >= V)
      return reject(Admission::Invalid, "invalid",
                    fmt::format("prompt token {} at index {} is outside the vocabulary [0, {}).",
                                spec.prompt[i], i, V));
  if (P >= C)
    return reject(Admission::TooLong, "too_long",
                  fmt::format("this server's maximum context length is {} tokens per request "
                              "(prompt and completion), and the prompt has {} tokens: shorten "
                              "it.",
                              C, P));
  const int64_t max_new = spec.max_tokens.value_or(C - P);
  if (max_new < 1)
    return reject(Admission::Invalid, "invalid",
                  fmt::format("max_tokens must be at least 1, got {}.", max_new));
  if (P + max_new > C)
    return reject(Admission::TooLong, "too_long",
                  fmt::format("this server's maximum context length is {} tokens per request, "
                              "and the request asks for {} ({} in the prompt, {} in the "
                              "completion): lower max_tokens or shorten the prompt.",
                              C, P + max_new, P, max_new));
  if (P + max_new > opt_.kv_budget)
    return reject(Admission::TooLong, "too_long",
                  fmt::format("the request needs {} KV tokens, more than the server's whole KV "
                              "budget of {}: lower max_tokens or shorten the prompt.",
                              P + max_new, opt_.kv_budget));
  if (spec.logprobs > kMaxLogprobs)
    return reject(Admission::Invalid, "invalid",
                  fmt::format("logprobs must be at most {}, got {}.", kMaxLogprobs, spec.logprobs));
  std::unique_ptr<Seq> s;
  try {
    s = std::make_unique<Seq>(std::move(spec), max_new);  // the sampler checks its parameters
  } catch (const Error& e) {
    return reject(Admission::Invalid, "invalid", e.what());
  }
  auto req = std::make_shared<Request>();
  req->id_ = next_id_++;
  req->prompt_tokens_ = P;
  req->max_tokens_ = max_new;
  req->wake_ = wake_;
  s->req = req;
  {
    const std::lock_guard lock(wake_->mu);
    // Checked again under the lock: drain() may have started since the check above.
    if (draining_) return reject(Admission::Draining, "draining", "the server is shutting down.");
    // The queue counts the requests that must wait: one that a free batch slot takes at the next
    // step passes through it without counting against max_queue.
    const int64_t free_slots = std::max<int64_t>(0, opt_.max_batch - gauges_.running);
    if (int64_t(queue_.size()) >= opt_.max_queue + free_slots)
      return reject(Admission::QueueFull, "queue_full",
                    fmt::format("the server is busy: {} requests are waiting already. Retry "
                                "after a moment.",
                                queue_.size()));
    queue_.push_back(std::move(s));
    gauges_.queued = int64_t(queue_.size());
  }
  wake_->cv.notify_all();
  return {Admission::Queued, std::move(req), {}};
}

void Scheduler::drain(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(wake_->mu);
  draining_ = true;
  gauges_.draining = true;
  deadline_ = deadline;
  wake_->cv.notify_all();
  idle_.wait(lock, [&] { return queue_.empty() && gauges_.running == 0; });
}

SchedulerStats Scheduler::stats() const {
  const std::lock_guard lock(wake_->mu);
  return {gauges_, finished_};
}

void Scheduler::finish(Seq& s, Finish why, std::string error) {
  s.final.kind = Event::Kind::Done;
  s.final.finish = why;
  s.final.error = std::move(error);
  s.final.prompt_tokens = int64_t(s.spec.prompt.size());
  s.final.completion_tokens = s.generated;
  metrics_->request_finished(finish_name(why), seconds_between(s.arrived, Clock::now()));
  s.done = true;
}

std::vector<std::unique_ptr<Scheduler::Seq>> Scheduler::retire_locked() {
  std::vector<std::unique_ptr<Seq>> out;
  for (auto& s : queue_)
    if (s->done) out.push_back(std::move(s));
  std::erase_if(queue_, [](const auto& s) { return !s; });
  for (auto& s : running_)
    if (s->done) {
      reserved_ -= s->reserve;
      out.push_back(std::move(s));
    }
  std::erase_if(running_, [](const auto& s) { return !s; });
  finished_ += int64_t(out.size());
  publish_locked();
  if (running_.empty() && queue_.empty()) idle_.notify_all();
  return out;
}

void Scheduler::deliver(std::vector<std::unique_ptr<Seq>> retired) {
  for (auto& s : retired) s->req->push(std::move(s->final));
}

void Scheduler::emit_token(Seq& s, int32_t id, std::span<const float> logits) {
  const auto now = Clock::now();
  if (s.generated == 0)
    metrics_->first_token(seconds_between(s.arrived, now));
  else
    metrics_->next_token(seconds_between(s.last_token_at, now));
  s.last_token_at = now;
  ++s.generated;
  s.last = id;

  Event e;
  e.tokens = {id};
  if (s.spec.logprobs >= 0) {
    // log-softmax of the model's own distribution (before temperature), as OpenAI reports it.
    const float mx = *std::max_element(logits.begin(), logits.end());
    double sum = 0.0;
    for (const float l : logits) sum += std::exp(double(l) - mx);
    const double lse = double(mx) + std::log(sum);
    TokenLogprob lp{id, float(double(logits[size_t(id)]) - lse), {}};
    if (s.spec.logprobs > 0) {
      std::vector<int32_t> idx(logits.size());
      std::iota(idx.begin(), idx.end(), 0);
      const size_t k = std::min(size_t(s.spec.logprobs), idx.size());
      std::partial_sort(idx.begin(), idx.begin() + ptrdiff_t(k), idx.end(),
                        [&](int32_t a, int32_t b) {
                          return logits[size_t(a)] > logits[size_t(b)] ||
                                 (logits[size_t(a)] == logits[size_t(b)] && a < b);
                        });
      for (size_t i = 0; i < k; ++i)
        lp.top.emplace_back(idx[i], float(double(logits[size_t(idx[i])]) - lse));
    }
    e.logprobs.push_back(std::move(lp));
  }
  // EOS ends the output without being part of it (its text would be "<|im_end|>" or "</s>").
  const bool eos = session_.model().config().is_eos(id);
  const bool has_text = session_.has_tokenizer();
  if (!eos && has_text) e.text = s.stop.push(s.utf8.push(session_.token_bytes(id)));
  const bool end = eos || s.stop.stopped() || s.generated >= s.max_tokens;
  if (end && !s.stop.stopped()) {
    e.text += s.stop.push(s.utf8.finish());  // a character the last token left unfinished
    if (!s.stop.stopped()) e.text += s.stop.flush();
  }
  s.req->push(std::move(e));
  if (end) finish(s, eos || s.stop.stopped() ? Finish::Stop : Finish::Length);
}

void Scheduler::publish_locked() {
  gauges_.queued = int64_t(queue_.size());
  gauges_.running = int64_t(running_.size());
  gauges_.kv_tokens_reserved = reserved_;
  int64_t held = 0, bytes = 0;
  for (const auto& s : running_)
    if (s->kv) {
      held += s->kv->length();
      bytes += int64_t(s->kv->bytes());
    }
  gauges_.kv_tokens_held = held;
  gauges_.kv_bytes = bytes;
}

void Scheduler::loop() {
  for (;;) {
    std::vector<std::unique_ptr<Seq>> retired;
    {
      std::unique_lock lock(wake_->mu);
      wake_->cv.wait(lock, [&] { return stop_ || !running_.empty() || !queue_.empty(); });
      const bool out_of_time = stop_ || (deadline_ && Clock::now() >= *deadline_);
      for (auto& s : queue_)
        if (out_of_time || s->req->cancel_requested()) finish(*s, Finish::Cancelled);
      for (auto& s : running_)
        if (out_of_time || s->req->cancel_requested()) finish(*s, Finish::Cancelled);
      retired = retire_locked();
      // Admission in arrival order: a head request that does not fit waits for KV to be returned
      // rather than being overtaken by smaller ones (which could starve it).
      while (!queue_.empty() && int64_t(running_.size()) < opt_.max_batch &&
             reserved_ + queue_.front()->reserve <= opt_.kv_budget) {
        std::unique_ptr<Seq> s = std::move(queue_.front());
        queue_.pop_front();
        try {
          s->kv = session_.new_sequence(s->reserve);
        } catch (const std::exception& e) {
          finish(*s, Finish::Error, e.what());
          ++finished_;
          retired.push_back(std::move(s));
          continue;
        }
        reserved_ += s->reserve;
        metrics_->prompt_tokens(int64_t(s->spec.prompt.size()));
        running_.push_back(std::move(s));
      }
      publish_locked();
      if (running_.empty() && queue_.empty()) idle_.notify_all();
      if (stop_ && running_.empty() && queue_.empty()) {
        lock.unlock();
        deliver(std::move(retired));
        return;
      }
    }
    deliver(std::move(retired));
    if (running_.empty()) continue;

    // One batched pass: every decoding sequence's last token, then prompt chunks in admission
    // order while the step's prefill budget lasts.
    std::vector<session::StepInput> inputs;
    std::vector<Seq*> who;
    std::vector<int64_t> fed;  // prompt tokens each input adds (0 for a decode row)
    int64_t budget = opt_.prefill_chunk;
    for (auto& s : running_) {
      if (!s->prefilling()) {
        inputs.push_back({s->kv.get(), std::span<const int32_t>(&s->last, 1)});
        who.push_back(s.get());
        fed.push_back(0);
      }
    }
    for (auto& s : running_) {
      if (s->prefilling() && budget > 0) {
        const int64_t n = std::min(budget, int64_t(s->spec.prompt.size()) - s->fed);
        inputs.push_back(
            {s->kv.get(),
             std::span<const int32_t>(s->spec.prompt).subspan(size_t(s->fed), size_t(n))});
        who.push_back(s.get());
        fed.push_back(n);
        budget -= n;
      }
    }
    std::vector<float> logits;
    try {
      logits = session_.step(inputs);
    } catch (const std::exception& e) {
      // Nothing a request sent reaches here (submit checked it): the engine itself failed. The
      // batch's requests end with the message; the server goes on.
      for (Seq* s : who) finish(*s, Finish::Error, e.what());
    }
    if (logits.empty()) {
      std::unique_lock lock(wake_->mu);
      auto gone = retire_locked();
      lock.unlock();
      deliver(std::move(gone));
      continue;
    }
    const size_t V = logits.size() / inputs.size();
    int64_t sampled = 0;
    for (size_t i = 0; i < who.size(); ++i) {
      Seq& s = *who[i];
      s.fed += fed[i];
      if (s.prefilling()) continue;  // the prompt's last chunk is still to come
      const std::span<const float> row(logits.data() + i * V, V);
      emit_token(s, s.sampler.sample(row), row);
      ++sampled;
    }
    metrics_->step(int64_t(std::accumulate(fed.begin(), fed.end(), int64_t(0))) +
                       int64_t(std::count(fed.begin(), fed.end(), 0)),
                   sampled);
    std::unique_lock lock(wake_->mu);
    auto gone = retire_locked();
    lock.unlock();
    deliver(std::move(gone));
  }
}

}  // namespace sf::serve
