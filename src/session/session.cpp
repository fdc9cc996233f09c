#include "session/session.hpp"

#include <fmt/format.h>
#include <omp.h>

#include <chrono>
#include <mutex>

#include "backend/backends.hpp"
#include "core/error.hpp"
#include "model/cpu_engine.hpp"
#include "offload/offloaded_opt.hpp"
#include "offload/planner.hpp"
#include "session/layer_streaming.hpp"
#include "session/model_tokenizer.hpp"
#include "tokenizer/utf8_stream.hpp"

namespace sf::session {

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Thrown from inside the engine's per-token hook when the caller's callback asks to stop. Every
// engine calls that hook between forward passes, with the GPU stream synchronised, and every
// generate() starts from an empty KV cache, so unwinding from it leaves the engine reusable.
struct StopRequested {};

uint64_t weight_bytes(const model::Model& m) {
  uint64_t bytes = 0;
  for (const auto& [name, t] : m.dense_tensors())
    bytes += uint64_t(t.numel()) * dtype_size(t.dtype);
  for (const auto& [name, c] : m.sparse_tensors()) bytes += c.compressed_bytes();
  return bytes;
}

}  // namespace

std::string_view stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::Eos:
      return "eos";
    case StopReason::MaxTokens:
      return "max_tokens";
    case StopReason::Callback:
      return "callback";
  }
  return "?";
}

nlohmann::ordered_json Generation::to_json() const {
  return {{"text", text},
          {"ids", ids},
          {"prompt_ids", prompt_ids},
          {"prefill_ms", prefill_ms},
          {"decode_ms", decode_ms},
          {"decode_steps", decode_steps},
          {"decode_tokens_per_s", decode_tokens_per_s()},
          {"max_new_tokens", max_new_tokens},
          {"stopped_by", std::string(stop_reason_name(stopped_by))}};
}

struct Session::Impl {
  std::string path;
  SessionOptions options;
  std::unique_ptr<model::Model> model;
  std::optional<tok::Tokenizer> tok;
  mutable std::optional<chat::ChatTemplate> chat_template;  // parsed on first use
  mutable std::mutex chat_mutex;  // render_chat is called from a server's connection threads
  std::string device;             // resolved: "cpu" or "cuda"
  int64_t context_reserved = 0;
  std::optional<LayerStreamingPlan> streaming;  // set when --gpu-memory streams whole layers
  // Exactly one engine once started.
  std::unique_ptr<model::CpuEngine> cpu;
  std::unique_ptr<model::CudaEngine> cuda;
  std::unique_ptr<offload::OffloadedOpt> off;

  // "generate --device cuda" in the CLI's messages, the options' names elsewhere.
  std::string asking(std::string_view flag, std::string_view option) const {
    return options.label.empty() ? std::string(option) : fmt::format("{} {}", options.label, flag);
  }
  bool started() const { return cpu || cuda || off; }
  // OpenMP's thread count is a per-thread setting, and a session may be driven from a thread
  // other than the one that opened it (Python's stream() runs it on a worker): set it per call.
  void apply_threads() const {
    if (options.threads > 0) omp_set_num_threads(options.threads);
  }
  const tok::Tokenizer& tokenizer() const {
    if (!tok) (void)model_tokenizer(*model);  // throws the error that says what to add
    return *tok;
  }
};

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;

std::unique_ptr<Session> Session::open(const std::string& path, const SessionOptions& options) {
  auto m = std::make_unique<Impl>();
  m->path = path;
  m->options = options;
  const std::string& dev = options.device;
  if (dev != "cpu" && dev != "cuda" && dev != "auto")
    fail(Status::InvalidArgument,
         "device '{}': expected cpu, cuda or auto (cuda when a GPU is usable)", dev);
  if (options.threads < 0)
    fail(Status::InvalidArgument, "threads must be >= 1 (or 0 for all cores), got {}.",
         options.threads);
  if (options.context_tokens < 0)
    fail(Status::InvalidArgument, "context_tokens must be >= 0 (0: as the requests need), got {}.",
         options.context_tokens);
  const auto& off = options.offload;
  if (off.enabled()) {
    if (dev == "cpu")
      fail(Status::InvalidArgument,
           "a GPU memory budget ({}) runs the offloaded CUDA engine (neuron-level offloading): "
           "ask for device cuda or auto, or leave the budget out to run on the CPU",
           off.gpu_memory->text);
    if (!(off.gpu_cache_ratio >= 0 && off.gpu_cache_ratio <= 1))
      fail(Status::InvalidArgument, "gpu_cache_ratio {}: expected a fraction in [0, 1]",
           off.gpu_cache_ratio);
  }
  // Offloading needs the GPU, so auto means cuda for it (and start() says why when there is none);
  // otherwise auto falls back to the CPU where no GPU is usable.
  m->device = dev == "auto" && !off.enabled() && !backend::cuda_unavailable_reason().empty() ? "cpu"
              : dev == "auto" ? "cuda"
                              : dev;
  m->model = model::Model::open(path, options.open);
  if (model_has_tokenizer(*m->model)) m->tok.emplace(model_tokenizer(*m->model));
  return std::unique_ptr<Session>(new Session(std::move(m)));
}

void Session::start(int64_t context_tokens) {
  auto& m = *impl_;
  if (m.started()) return;
  const auto& cfg = m.model->config();
  if (m.device == "cpu") {
    m.cpu = std::make_unique<model::CpuEngine>(*m.model);
    return;
  }
  if (!m.options.offload.enabled()) {
    m.cuda =
        backend::require_cuda(m.asking("--device cuda", "device cuda")).open_model(*m.model, {});
    return;
  }
  offload::OffloadTuning tuning;
  tuning.context_tokens = context_tokens             ? context_tokens
                          : m.options.context_tokens ? m.options.context_tokens
                                                     : cfg.max_position_embeddings;
  if (streams_whole_layers(cfg)) {
    // No neuron-level offloading for this MLP: whole layers stream from host memory.
    const LayerStreamingPlan plan =
        plan_layer_streaming(*m.model, *m.options.offload.gpu_memory, tuning.context_tokens);
    m.streaming = plan;
    model::CudaOptions co;
    co.host_layers = plan.host_layers;
    m.cuda = backend::require_cuda(m.asking("--gpu-memory", "a GPU memory budget"))
                 .open_model(*m.model, co);
    m.context_reserved = tuning.context_tokens;
    return;
  }
  m.off =
      backend::require_cuda(m.asking("--gpu-memory", "offloaded inference (a GPU memory budget)"))
          .open_offloaded(*m.model, m.options.offload, {}, tuning, std::nullopt);
  m.context_reserved = tuning.context_tokens;
}

bool Session::started() const {
  return impl_->started();
}

int64_t Session::room_for(size_t prompt_tokens, int64_t max_new_tokens) const {
  const int64_t max_pos = impl_->model->config().max_position_embeddings;
  if (max_new_tokens < 0)
    fail(Status::InvalidArgument, "max_new_tokens must be >= 0, got {}.", max_new_tokens);
  const int64_t room = max_pos - int64_t(prompt_tokens);
  if (room <= 0)
    fail(Status::InvalidArgument,
         "the prompt has {} tokens, the model's max_position_embeddings is {}: shorten it.",
         prompt_tokens, max_pos);
  return std::min(max_new_tokens, room);
}

Generation Session::generate(std::string_view prompt, const GenerateParams& params,
                             const TokenCallback& on_token) {
  const auto ids = tokenize(prompt, /*add_bos=*/true);
  return generate_ids(ids, params, on_token);
}

Generation Session::generate_ids(std::span<const int32_t> prompt, const GenerateParams& params,
                                 const TokenCallback& on_token) {
  auto& m = *impl_;
  if (prompt.empty())
    fail(Status::InvalidArgument, "the prompt is empty: generation needs at least one token.");
  model::Sampler sampler(params.sampling);  // checks temperature, top-k and top-p before any work
  Generation g;
  g.prompt_ids.assign(prompt.begin(), prompt.end());
  g.max_new_tokens = room_for(prompt.size(), params.max_new_tokens);
  m.apply_threads();
  if (!m.started()) start(m.options.context_tokens ? 0 : int64_t(prompt.size()) + g.max_new_tokens);

  // The hook every engine calls per token: text for the caller, and the timing kept here too so
  // that a run the callback stopped (whose engine result never comes back) still reports it.
  tok::Utf8Stream stream;
  const auto t_start = Clock::now();
  auto t_last = t_start;
  auto hook = [&](int32_t id) {
    const auto now = Clock::now();
    (g.ids.empty() ? g.prefill_ms : g.decode_ms) += ms_between(t_last, now);
    g.ids.push_back(id);
    const std::string piece = m.tok ? stream.push(m.tok->token_bytes(id)) : std::string();
    g.text += piece;
    const bool go_on = !on_token || on_token(id, piece);
    t_last = Clock::now();
    if (!go_on) throw StopRequested{};
  };
  try {
    model::GenerateResult r;
    if (m.cpu)
      r = model::generate(*m.cpu, prompt, g.max_new_tokens, sampler, hook);
    else if (m.off)
      r = m.off->generate(prompt, g.max_new_tokens, params.sampling, hook);
    else
      r = m.cuda->generate(prompt, g.max_new_tokens, params.sampling, hook);
    g.prefill_ms = r.prefill_ms;  // the engine's own timing leaves out the hook's work
    g.decode_ms = r.decode_ms;
    g.decode_steps = r.decode_steps;
    const bool eos = !g.ids.empty() && m.model->config().is_eos(g.ids.back());
    g.stopped_by = eos ? StopReason::Eos : StopReason::MaxTokens;
  } catch (const StopRequested&) {
    g.decode_steps = g.ids.empty() ? 0 : int64_t(g.ids.size()) - 1;
    g.stopped_by = StopReason::Callback;
  }
  g.text += stream.finish();
  return g;
}

struct Sequence::Impl {
  model::KvCache cache;
  int64_t limit = 0;
};

Sequence::Sequence(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Sequence::~Sequence() = default;
int64_t Sequence::length() const {
  return impl_->cache.length;
}
int64_t Sequence::limit() const {
  return impl_->limit;
}
size_t Sequence::bytes() const {
  return impl_->cache.bytes();
}
int64_t Sequence::bytes_per_token() const {
  const auto& c = impl_->cache;
  return 2 * c.layers * c.width * int64_t(sizeof(float));
}

bool Session::supports_steps() const {
  return impl_->device == "cpu";
}

std::unique_ptr<Sequence> Session::new_sequence(int64_t limit_tokens) {
  auto& m = *impl_;
  if (!supports_steps())
    fail(Status::UnsupportedShape,
         "step-wise decoding of several sequences runs on the CPU engine only for now (the {} "
         "engine decodes one sequence per call); use device cpu.",
         m.device);
  const int64_t max_pos = m.model->config().max_position_embeddings;
  if (limit_tokens <= 0 || limit_tokens > max_pos)
    fail(Status::InvalidArgument,
         "a sequence's limit must be in [1, {}] (max_position_embeddings), got {}.", max_pos,
         limit_tokens);
  if (!m.started()) start();
  auto q = std::make_unique<Sequence::Impl>();
  // A first allocation that a short request never outgrows; longer ones double it as they go.
  constexpr int64_t kFirstTokens = 128;
  q->cache = m.cpu->make_cache(std::min(limit_tokens, kFirstTokens));
  q->limit = limit_tokens;
  return std::unique_ptr<Sequence>(new Sequence(std::move(q)));
}

std::vector<float> Session::step(std::span<const StepInput> inputs) {
  auto& m = *impl_;
  if (!supports_steps() || !m.cpu)
    fail(Status::UnsupportedShape,
         "step() needs the CPU engine and a sequence from new_sequence(); this session runs on {}.",
         m.device);
  std::vector<model::BatchSegment> segs;
  segs.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const StepInput& in = inputs[i];
    if (!in.sequence) fail(Status::InvalidArgument, "step input {} has no sequence.", i);
    Sequence::Impl& q = *in.sequence->impl_;
    const int64_t need = q.cache.length + int64_t(in.tokens.size());
    if (need > q.limit)
      fail(Status::InvalidArgument,
           "step input {}: {} tokens would exceed the sequence's limit of {}.", i, need, q.limit);
    if (need > q.cache.capacity)
      q.cache.reserve(std::min(q.limit, std::max(need, 2 * q.cache.capacity)));
    segs.push_back({in.tokens, &q.cache});
  }
  m.apply_threads();
  return m.cpu->forward_batch(segs);
}

std::string Session::token_bytes(int32_t id) const {
  const int64_t V = impl_->model->config().vocab_size;
  if (id < 0 || id >= V)
    fail(Status::InvalidArgument, "token id {} is outside the vocabulary [0, {}).", id, V);
  return impl_->tokenizer().token_bytes(id);
}

model::PerplexityResult Session::perplexity(std::span<const int32_t> ids, int64_t context) {
  auto& m = *impl_;
  const int64_t window = context ? context : m.model->config().max_position_embeddings;
  m.apply_threads();
  if (!m.started()) start(m.options.context_tokens ? 0 : window);
  if (m.cpu) return model::perplexity(*m.cpu, ids, context);
  if (m.off) return m.off->engine().perplexity(ids, context);
  return m.cuda->perplexity(ids, context);  // the NLL on the GPU
}

std::vector<float> Session::logits(std::span<const int32_t> ids) {
  auto& m = *impl_;
  if (ids.empty())
    fail(Status::InvalidArgument, "logits: the sequence is empty; pass at least one token id.");
  m.apply_threads();
  if (!m.started()) start(m.options.context_tokens ? 0 : int64_t(ids.size()));
  if (m.off)
    fail(Status::UnsupportedShape,
         "logits of every position are not available from the offloaded engine; open the model "
         "without a GPU memory budget");
  if (m.cpu) {
    model::KvCache cache = m.cpu->make_cache(int64_t(ids.size()));
    return m.cpu->forward(ids, cache, /*all_logits=*/true);
  }
  m.cuda->reset(int64_t(ids.size()));
  return m.cuda->forward(ids, /*all_logits=*/true);
}

model::PerplexityResult Session::perplexity_text(std::string_view text, int64_t context) {
  return perplexity(tokenize(text, /*add_bos=*/true), context);
}

bool Session::has_tokenizer() const {
  return impl_->tok.has_value();
}

std::vector<int32_t> Session::tokenize(std::string_view text, bool add_bos) const {
  const auto& t = impl_->tokenizer();
  // A tokenizer.json's (or tokenizer.model's) post-processor and tokenizer_config decide, as in
  // HF's encode(add_special_tokens=True). A vocab.json + merges.txt tokenizer is HF's
  // GPT2Tokenizer: OPT's configuration of it starts every text with BOS ("</s>"), GPT-2's adds
  // nothing.
  const auto& m = *impl_->model;
  if (!m.tokenizer_json().empty() || !m.tokenizer_model().empty()) return t.encode(text, add_bos);
  const bool bos = add_bos && m.config().arch != "gpt2";
  return bos ? t.encode_with_bos(text, int32_t(m.config().bos_token_id)) : t.encode(text);
}

bool Session::has_chat_template() const {
  return !impl_->model->chat_template().empty();
}

std::string Session::render_chat(std::span<const chat::ChatMessage> messages,
                                 bool add_generation_prompt) const {
  const auto& m = *impl_->model;
  if (m.chat_template().empty())
    fail(
        Status::NotFound,
        "the model has no chat template (tokenizer_config.json's chat_template or the GGUF's "
        "tokenizer.chat_template): it is probably a base model. Use generate with a plain prompt.");
  const std::lock_guard lock(impl_->chat_mutex);
  if (!impl_->chat_template)
    impl_->chat_template.emplace(chat::ChatTemplate::parse(m.chat_template()));
  chat::ChatContext ctx;
  ctx.bos_token = m.bos_token();
  ctx.eos_token = m.eos_token();
  return impl_->chat_template->render(messages, add_generation_prompt, ctx);
}

std::vector<int32_t> Session::chat_ids(std::span<const chat::ChatMessage> messages,
                                       bool add_generation_prompt) const {
  return impl_->tokenizer().encode(render_chat(messages, add_generation_prompt),
                                   /*add_special_tokens=*/false);
}

std::string Session::detokenize(std::span<const int32_t> ids) const {
  const int64_t V = impl_->model->config().vocab_size;
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= V)
      fail(Status::InvalidArgument, "token id {} at index {} is outside the vocabulary [0, {}).",
           ids[i], i, V);
  return impl_->tokenizer().decode(ids);
}

const model::Model& Session::model() const {
  return *impl_->model;
}

std::string Session::device() const {
  return impl_->device;
}

bool Session::offloaded() const {
  return impl_->options.offload.enabled();
}

nlohmann::ordered_json Session::info() const {
  const auto& m = *impl_;
  const auto& c = m.model->config();
  nlohmann::ordered_json memory = {{"weight_bytes", weight_bytes(*m.model)}};
  nlohmann::ordered_json j = {
      {"path", m.path},
      {"architecture", c.arch},
      {"description", arch::summary(c)},
      {"source_format", m.model->source_format()},
      {"layers", c.num_hidden_layers},
      {"hidden", c.hidden_size},
      {"ffn", c.ffn_dim},
      {"heads", c.num_attention_heads},
      {"kv_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"vocab", c.vocab_size},
      {"max_positions", c.max_position_embeddings},
      {"bos_token_id", c.bos_token_id},
      {"eos_token_id", c.eos_token_id},
      {"dtype", std::string(dtype_name(m.model->dtype()))},
      {"weights", m.model->is_sparse() ? "2:4" : "dense"},
      {"neuron_major", m.model->is_neuron_major()},
      {"has_tokenizer", m.tok.has_value()},
      {"device", m.device},
      {"threads", m.options.threads > 0 ? m.options.threads : omp_get_max_threads()},
      {"started", m.started()},
      {"offloaded", offloaded()}};
  model::CudaEngine* gpu = m.cuda ? m.cuda.get() : m.off ? &m.off->engine() : nullptr;
  if (gpu) {
    j["device_name"] = gpu->device_name();
    const auto r = gpu->memory();
    memory["gpu"] = {{"weights", r.weights},
                     {"host_mapped_weights", r.host_weights},
                     {"kv_cache", r.kv_cache},
                     {"workspace", r.workspace},
                     {"device_total", r.device_total}};
  }
  if (offloaded()) {
    const auto& o = m.options.offload;
    nlohmann::ordered_json oj = {
        {"gpu_memory", o.gpu_memory->text},
        {"gpu_cache_ratio", o.gpu_cache_ratio},
        {"policy", std::string(offload::policy_name(o.policy))},
        {"predictor", std::string(offload::predictor_mode_name(o.predictor))},
        {"stats", o.stats}};
    if (m.streaming) {
      oj["context_tokens"] = m.context_reserved;
      oj["layer_streaming"] = {{"host_layers", m.streaming->host_layers},
                               {"layer_bytes", m.streaming->layer_bytes},
                               {"summary", m.streaming->summary()}};
    }
    if (m.off) {
      oj["context_tokens"] = m.context_reserved;
      oj["runtime_gpu_bytes"] = m.off->device_bytes();
      oj["plan"] = m.off->describe_json();
    }
    j["offload"] = std::move(oj);
  }
  j["memory"] = std::move(memory);
  return j;
}

const LayerStreamingPlan* Session::layer_streaming() const {
  return impl_->streaming ? &*impl_->streaming : nullptr;
}

const offload::Plan* Session::plan() const {
  return impl_->off ? &impl_->off->plan() : nullptr;
}

std::optional<offload::OffloadStats> Session::offload_stats() const {
  if (!impl_->off) return std::nullopt;
  return impl_->off->stats();
}

}  // namespace sf::session
