#include "model/generate.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "core/error.hpp"
#include "core/progress.hpp"

namespace sf::model {

namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

GenerateResult generate(CpuEngine& opt, std::span<const int32_t> prompt, int64_t max_new_tokens,
                        Sampler& sampler, const std::function<void(int32_t)>& on_token) {
  const auto& cfg = opt.config();
  if (prompt.empty())
    fail(Status::InvalidArgument, "generate() needs a prompt of at least one token.");
  if (max_new_tokens < 0)
    fail(Status::InvalidArgument, "max_new_tokens must be >= 0, got {}.", max_new_tokens);
  const int64_t total = int64_t(prompt.size()) + max_new_tokens;
  if (total > cfg.max_position_embeddings)
    fail(Status::InvalidArgument,
         "prompt ({} tokens) + max new tokens ({}) = {} exceeds the model's "
         "max_position_embeddings ({}); ask for fewer new tokens or shorten the prompt.",
         prompt.size(), max_new_tokens, total, cfg.max_position_embeddings);
  GenerateResult res;
  if (max_new_tokens == 0) return res;
  KvCache cache = opt.make_cache(total);

  auto t0 = std::chrono::steady_clock::now();
  std::vector<float> logits = opt.forward(prompt, cache);
  res.prefill_ms = ms_since(t0);
  for (;;) {
    const int32_t next = sampler.sample(logits);
    res.ids.push_back(next);
    if (on_token) on_token(next);
    if (cfg.is_eos(next) || int64_t(res.ids.size()) == max_new_tokens) break;
    t0 = std::chrono::steady_clock::now();
    logits = opt.forward(std::span<const int32_t>(&next, 1), cache);
    res.decode_ms += ms_since(t0);
    ++res.decode_steps;
  }
  return res;
}

double PerplexityResult::perplexity() const {
  return std::exp(mean_nll());
}

PerplexityResult perplexity(
    CpuEngine& opt, std::span<const int32_t> ids, int64_t context,
    const std::function<void(std::span<const float> logits, size_t len)>& on_window,
    bool show_progress) {
  const auto& cfg = opt.config();
  if (context == 0) context = cfg.max_position_embeddings;
  if (context < 2 || context > cfg.max_position_embeddings)
    fail(Status::InvalidArgument, "context must be in [2, {}] (max_position_embeddings), got {}.",
         cfg.max_position_embeddings, context);
  if (ids.size() < 2)
    fail(Status::InvalidArgument,
         "perplexity needs at least 2 tokens (the first is context only), got {}.", ids.size());
  PerplexityResult res;
  KvCache cache = opt.make_cache(context);
  const int64_t V = cfg.vocab_size;
  std::optional<Progress> bar;
  if (show_progress) bar.emplace("perplexity", double(ids.size()), "tokens");
  for (size_t start = 0; start < ids.size(); start += size_t(context)) {
    const size_t len = std::min(ids.size() - start, size_t(context));
    if (len < 2) break;  // a trailing single token has nothing to predict
    if (bar) bar->update(double(start));
    cache.clear();
    auto window = ids.subspan(start, len);
    std::vector<float> logits = opt.forward(window, cache, /*all_logits=*/true);  // [len, vocab]
    for (size_t i = 0; i + 1 < len; ++i) {
      const float* row = logits.data() + int64_t(i) * V;
      double mx = row[0];
      for (int64_t j = 1; j < V; ++j) mx = std::max(mx, double(row[j]));
      double sum = 0.0;
      for (int64_t j = 0; j < V; ++j) sum += std::exp(double(row[j]) - mx);
      res.nll_sum += mx + std::log(sum) - double(row[window[i + 1]]);
    }
    res.predicted += int64_t(len) - 1;
    ++res.windows;
    if (on_window) on_window(logits, len);
  }
  if (bar) {
    bar->update(double(ids.size()));
    bar->finish();
  }
  return res;
}

}  // namespace sf::model
