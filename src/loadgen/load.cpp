#include "loadgen/load.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "core/error.hpp"

namespace sf::loadgen {

std::vector<RequestRecord> run_load(const ClientOptions& client, const LoadPlan& plan,
                                    const std::function<void(int64_t done)>& on_done) {
  const int64_t n = int64_t(plan.bodies.size());
  if (plan.arrivals.size() != plan.bodies.size())
    fail(Status::InvalidArgument, "a load plan needs one arrival per request: {} for {}",
         plan.arrivals.size(), n);
  if (plan.concurrency < 1)
    fail(Status::InvalidArgument, "--concurrency must be >= 1, got {}", plan.concurrency);
  std::vector<RequestRecord> records(static_cast<size_t>(n));
  if (n == 0) return records;

  // Every worker's connection object exists before the clock starts.
  const int64_t workers = std::min(plan.concurrency, n);
  std::vector<std::unique_ptr<OpenAiClient>> clients;
  for (int64_t w = 0; w < workers; ++w) clients.push_back(std::make_unique<OpenAiClient>(client));

  std::atomic<int64_t> next{0};
  std::mutex done_mutex;
  int64_t done = 0;
  std::exception_ptr failure;
  // A little slack so that the threads are running when the first arrival is due.
  const auto start = Clock::now() + std::chrono::milliseconds(20);
  auto work = [&](OpenAiClient& c) {
    try {
      for (int64_t i = next++; i < n; i = next++) {
        const double at = plan.arrivals[size_t(i)];
        std::this_thread::sleep_until(
            start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(at)));
        RequestRecord r = c.stream(plan.path, plan.bodies[size_t(i)], plan.chat, start);
        r.scheduled_s = at;
        std::lock_guard<std::mutex> lock(done_mutex);
        records[size_t(i)] = std::move(r);
        ++done;
        if (on_done) on_done(done);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(done_mutex);
      if (!failure) failure = std::current_exception();
      next = n;  // the others stop after their current request
    }
  };
  std::vector<std::thread> threads;
  for (auto& c : clients) threads.emplace_back(work, std::ref(*c));
  for (auto& t : threads) t.join();
  if (failure) std::rethrow_exception(failure);
  return records;
}

}  // namespace sf::loadgen
