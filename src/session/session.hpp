// The one way into a model (STYLE.md 14): the CLI's generate and perplexity, the C ABI's
// sf_session_* and so the Python package all open a Session. It owns the model, its tokenizer and
// one engine: the CPU forward pass, the CUDA engine, or the CUDA engine with neuron-level
// offloading of the FFN. The CUDA engines are reached only through the backend registry
// (backend/backends.hpp), so this file builds and links in a build without CUDA.
//
// Prompts given as text get BOS prepended (as HF's OPT tokenizer does); ids are used as given.
// A session is used by one thread at a time, except that tokenize, detokenize, token_bytes,
// render_chat and chat_ids may be called from other threads while one thread runs step(): a
// server tokenizes requests on its connection threads while its scheduler decodes.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "chat/chat_template.hpp"
#include "model/generate.hpp"
#include "model/sampling.hpp"
#include "model/weights.hpp"
#include "offload/offload_options.hpp"
#include "session/layer_streaming.hpp"

namespace sf::offload {
struct Plan;
struct OffloadStats;
}  // namespace sf::offload

namespace sf::session {

struct SessionOptions {
  std::string device = "auto";  // "cpu", "cuda", or "auto" (cuda when a GPU is usable, else cpu)
  int threads = 0;              // CPU threads of this session's calls; 0: OpenMP's default
  // Offloaded inference when offload.enabled() (a gpu_memory budget): needs the CUDA backend.
  offload::OffloadOptions offload;
  // KV cache tokens the offload plan reserves out of the GPU budget; 0: what the first request
  // needs when the engine starts on it, max_position_embeddings when start() is called first.
  int64_t context_tokens = 0;
  model::OpenOptions open;  // how the model file or directory is read
  // Who is asking, for messages: "generate" makes them name the CLI's flags ("generate --device
  // cuda needs a CUDA GPU: ..."); empty, they name the options.
  std::string label;
};

struct GenerateParams {
  int64_t max_new_tokens = 32;  // lowered to what max_position_embeddings leaves (see Generation)
  model::SamplingParams sampling;
};

// Called with each new token and the UTF-8 text it completes: "" while a character is still
// incomplete (and always without a tokenizer). Return false to stop generating after this token.
using TokenCallback = std::function<bool(int32_t id, std::string_view text)>;

enum class StopReason { Eos, MaxTokens, Callback };
std::string_view stop_reason_name(StopReason r);  // "eos", "max_tokens", "callback"

struct Generation {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> ids;  // new tokens only; ends with EOS when generation stopped there
  std::string text;          // the streamed pieces joined, plus the tail of a cut character
  double prefill_ms = 0.0;
  double decode_ms = 0.0;
  int64_t decode_steps = 0;
  int64_t max_new_tokens = 0;  // as run: the request's, or lower when the context ran out
  StopReason stopped_by = StopReason::MaxTokens;
  double decode_tokens_per_s() const {
    return decode_ms > 0.0 ? 1000.0 * double(decode_steps) / decode_ms : 0.0;
  }
  nlohmann::ordered_json to_json() const;
};

// The keys and values of one sequence decoded step by step (Session::step): a continuous-batching
// scheduler keeps one per request. Its memory grows with the tokens it holds, up to its limit.
class Sequence {
 public:
  ~Sequence();
  Sequence(const Sequence&) = delete;
  Sequence& operator=(const Sequence&) = delete;
  int64_t length() const;  // tokens whose keys and values it holds
  int64_t limit() const;   // the most it may hold, fixed when it was made
  size_t bytes() const;    // memory allocated for it now
  // Bytes one token's keys and values take (every layer): the KV cost of a token.
  int64_t bytes_per_token() const;

 private:
  friend class Session;
  struct Impl;
  explicit Sequence(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One sequence's part of a step: its new tokens (a chunk of its prompt, or the token it sampled).
struct StepInput {
  Sequence* sequence = nullptr;
  std::span<const int32_t> tokens;
};

class Session {
 public:
  // Opens the model (a .sf file or an HF checkpoint directory) and its tokenizer, and checks the
  // options. The engine starts on the first request, or on start(). Throws sf::Error.
  static std::unique_ptr<Session> open(const std::string& path, const SessionOptions& options);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Builds the engine now (uploading weights; for offloading, planning for context_tokens, 0 =
  // options' context_tokens, else max_position_embeddings). Throws Error(NoDevice) for a GPU that
  // is not usable. Does nothing once started.
  void start(int64_t context_tokens = 0);
  bool started() const;

  // The new-token count a prompt of `prompt_tokens` leaves room for: max_new_tokens, or less where
  // max_position_embeddings runs out. Throws Error(InvalidArgument) when the prompt fills it.
  int64_t room_for(size_t prompt_tokens, int64_t max_new_tokens) const;

  // Generation stops after EOS, after max_new_tokens, or when the callback returns false; the
  // session stays usable after each.
  Generation generate(std::string_view prompt, const GenerateParams& params,
                      const TokenCallback& on_token = {});
  Generation generate_ids(std::span<const int32_t> prompt, const GenerateParams& params,
                          const TokenCallback& on_token = {});

  // Step-wise decoding of many sequences at once, for a scheduler that lets requests join and leave
  // between steps. new_sequence makes an empty one that may hold up to limit_tokens (at most
  // max_position_embeddings). step runs one forward pass over every input together: each input's
  // tokens are appended to its sequence, and the logits of each input's last token come back,
  // [inputs.size(), vocab]. Row i is what a forward pass over that sequence alone gives (bit for
  // bit with dense weights), so a request's tokens do not depend on what it was batched with.
  // The CPU engine only: Error(UnsupportedShape) on the GPU engines, which decode one sequence
  // per call; Error(InvalidArgument) for a sequence over its limit, an id outside the vocabulary,
  // or one sequence twice in a step.
  bool supports_steps() const;
  std::unique_ptr<Sequence> new_sequence(int64_t limit_tokens);
  std::vector<float> step(std::span<const StepInput> inputs);
  // One token's bytes (token_bytes of the tokenizer): pieces to stream through tok::Utf8Stream.
  std::string token_bytes(int32_t id) const;

  // exp(mean NLL) over non-overlapping windows of `context` tokens (0: max_position_embeddings).
  model::PerplexityResult perplexity(std::span<const int32_t> ids, int64_t context = 0);
  model::PerplexityResult perplexity_text(std::string_view text, int64_t context = 0);
  // The logits of every position of `ids` run as one sequence from an empty cache: [ids.size(),
  // vocab], row i predicting token i + 1. What eval compares between two models. Throws
  // Error(InvalidArgument) for an empty or too long sequence, Error(UnsupportedShape) when
  // offloaded.
  std::vector<float> logits(std::span<const int32_t> ids);

  bool has_tokenizer() const;
  // Throw Error(NotFound) when the model has no tokenizer.
  std::vector<int32_t> tokenize(std::string_view text, bool add_bos = true) const;
  std::string detokenize(std::span<const int32_t> ids) const;

  // A conversation as the model's own chat template renders it (as HF's apply_chat_template
  // does), and its token ids (special tokens written in the text split out, nothing added: HF's
  // apply_chat_template(tokenize=True)). Throws Error(NotFound) for a model without a chat
  // template, and what the template's renderer throws (a construct it cannot render, the
  // template's own raise_exception).
  bool has_chat_template() const;
  std::string render_chat(std::span<const chat::ChatMessage> messages,
                          bool add_generation_prompt = true) const;
  std::vector<int32_t> chat_ids(std::span<const chat::ChatMessage> messages,
                                bool add_generation_prompt = true) const;

  const model::Model& model() const;
  std::string device() const;  // "cpu" or "cuda", as resolved from the options
  bool offloaded() const;
  // Architecture, shapes, weights (2:4 or dense), device, offloading and memory.
  nlohmann::ordered_json info() const;
  // The placement plan and the stats of the last generate() that ran to its end; null / nullopt
  // when not offloaded (or, for the plan, not started).
  const offload::Plan* plan() const;
  // Set when the budget runs a model without neuron-level offloading by streaming whole layers
  // from host memory (layer_streaming.hpp); null otherwise or before start().
  const LayerStreamingPlan* layer_streaming() const;
  std::optional<offload::OffloadStats> offload_stats() const;

 private:
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sf::session
