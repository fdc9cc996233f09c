// Text generation and scoring on top of the CPU forward pass: prefill the prompt once, then decode
// one token at a time with the KV cache; perplexity over non-overlapping windows.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "model/cpu_engine.hpp"
#include "model/sampling.hpp"

namespace sf::model {

struct GenerateResult {
  std::vector<int32_t> ids;  // generated tokens only; ends with EOS when generation stopped there
  double prefill_ms = 0.0;   // the prompt's forward pass (gives the first new token)
  double decode_ms = 0.0;    // all incremental forward passes
  int64_t decode_steps = 0;  // incremental forward passes run
  double decode_tokens_per_s() const {
    return decode_ms > 0.0 ? 1000.0 * double(decode_steps) / decode_ms : 0.0;
  }
};

// Generates up to max_new_tokens after `prompt` (used exactly as given), stopping after EOS
// (config.eos_token_id) like HF's generate(). on_token is called with each token as it is chosen.
// Throws Error(InvalidArgument) when prompt + max_new_tokens exceeds max_position_embeddings.
GenerateResult generate(CpuEngine& opt, std::span<const int32_t> prompt, int64_t max_new_tokens,
                        Sampler& sampler, const std::function<void(int32_t)>& on_token = {});

struct PerplexityResult {
  double nll_sum = 0.0;   // sum over predicted tokens of -log p(token | its window's prefix)
  int64_t predicted = 0;  // tokens predicted (each window's first token is context only)
  int64_t windows = 0;
  double mean_nll() const { return predicted ? nll_sum / double(predicted) : 0.0; }
  double perplexity() const;  // exp(mean NLL), HF's exp(loss) on the same ids when one window
};

// Splits `ids` into non-overlapping windows of `context` tokens (0: max_position_embeddings) and
// scores each window independently. Throws Error(InvalidArgument) when fewer than 2 tokens would be
// scored or context exceeds max_position_embeddings. on_window, when set, sees each window's logits
// [len, vocab] (row i predicts token i + 1; the last row predicts nothing) after they were scored.
// show_progress = false draws no bar (for a caller that runs many and draws its own).
PerplexityResult perplexity(
    CpuEngine& opt, std::span<const int32_t> ids, int64_t context = 0,
    const std::function<void(std::span<const float> logits, size_t len)>& on_window = {},
    bool show_progress = true);

}  // namespace sf::model
