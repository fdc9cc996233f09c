#include "cli/offload_flags.hpp"

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "backend/backends.hpp"
#include "cli/decode_profile.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "model/generate.hpp"
#include "model/weights.hpp"
#include "offload/decode_limit.hpp"
#include "offload/neuron_store.hpp"
#include "offload/offloaded_opt.hpp"
#include "offload/planner.hpp"
#include "session/layer_streaming.hpp"
#include "session/session.hpp"

namespace sf::cli {

void add_offload_flags(CLI::App* cmd, const std::shared_ptr<OffloadFlags>& f) {
  auto mark = [f](const std::string&) { f->any_set = true; };
  cmd->add_option(
      "--gpu-memory", f->gpu_memory,
      "run offloaded under this GPU budget (6GiB, 6GB, 6000MiB, or 0.5 = half the model's bytes); "
      "needs --device cuda. ReLU models (OPT) offload cold FFN neurons; gated models (Llama, "
      "Mistral, Qwen2: SwiGLU) stream whole layers from host memory, since activation "
      "sparsity for SwiGLU is not modelled yet");
  cmd->add_option(
         "--gpu-cache-ratio", f->gpu_cache_ratio,
         "fraction of the FFN budget used as an LRU neuron cache (the rest pins hot neurons)")
      ->capture_default_str()
      ->each(mark);
  cmd->add_option("--host-memory", f->host_memory,
                  "host memory for non-resident neurons; below their size they are read from the "
                  ".sf mapping")
      ->each(mark);
  cmd->add_option("--offload-policy", f->policy, "fetch, cpu, auto or stream (the naive baseline)")
      ->capture_default_str()
      ->each(mark);
  cmd->add_option("--predictor", f->predictor,
                  "model (calibrated predictors in the .sf) or exact (oracle, tests)")
      ->capture_default_str()
      ->each(mark);
  cmd->add_flag("--stats", f->stats,
                "offloaded run: per-token PCIe bytes, cache hit rate, recall, time split")
      ->each(mark);
  cmd->add_flag("--plan", f->plan,
                "with --gpu-memory: print the placement plan and exit (any build)")
      ->each(mark);
}

offload::OffloadOptions offload_options(const OffloadFlags& f) {
  offload::OffloadOptions o;
  if (f.gpu_memory.empty()) {
    if (f.any_set)
      fail(Status::InvalidArgument,
           "--gpu-cache-ratio, --host-memory, --offload-policy, --predictor, --stats and "
           "--plan configure offloaded inference; add --gpu-memory SIZE (e.g. 6GiB or 0.5 of the "
           "model)");
    return o;
  }
  o.gpu_memory = offload::parse_size_spec(f.gpu_memory, "--gpu-memory");
  if (!f.host_memory.empty())
    o.host_memory = offload::parse_size_spec(f.host_memory, "--host-memory");
  if (!(f.gpu_cache_ratio >= 0 && f.gpu_cache_ratio <= 1))
    fail(Status::InvalidArgument, "--gpu-cache-ratio {}: expected a fraction in [0, 1]",
         f.gpu_cache_ratio);
  o.gpu_cache_ratio = f.gpu_cache_ratio;
  const auto pol = offload::policy_from_name(f.policy);
  if (!pol)
    fail(Status::InvalidArgument, "--offload-policy {}: expected fetch, cpu, auto or stream",
         f.policy);
  o.policy = *pol;
  const auto pred = offload::predictor_mode_from_name(f.predictor);
  if (!pred) fail(Status::InvalidArgument, "--predictor {}: expected model or exact", f.predictor);
  o.predictor = *pred;
  o.stats = f.stats;
  return o;
}

bool handle_plan_or_require_cuda(const offload::OffloadOptions& o, const OffloadFlags& f,
                                 const std::string& device, const model::Model& model,
                                 int64_t context_tokens) {
  if (!o.enabled()) return false;
  if (session::streams_whole_layers(model.config())) {  // session/layer_streaming.hpp
    const auto plan = session::plan_layer_streaming(model, *o.gpu_memory, context_tokens);
    if (f.plan) {
      fmt::print("{}\n", plan.summary());
      return true;
    }
    if (device != "cuda")
      fail(Status::InvalidArgument,
           "--gpu-memory streams this model's layers through the CUDA engine: add --device cuda. "
           "On a machine without a GPU, --plan prints the plan; without --gpu-memory the model "
           "runs on the CPU");
    return false;
  }
  if (f.plan) {
    const auto store = offload::NeuronStore::from_model(model);
    const auto plan =
        offload::plan_placement(offload::planner_input(model, store, context_tokens, o));
    fmt::print("{}", plan.table());
    return true;
  }
  if (device != "cuda")
    fail(Status::InvalidArgument,
         "--gpu-memory runs the offloaded CUDA engine (neuron-level offloading): add --device "
         "cuda. On a machine without a GPU, --plan prints the placement plan; without --gpu-memory "
         "the model runs on "
         "the CPU");
  if (o.predictor == offload::PredictorMode::Model && o.policy != offload::OffloadPolicy::Stream) {
    const auto store = offload::NeuronStore::from_model(model);
    if (!store.has_predictor())
      fail(Status::InvalidArgument,
           "--predictor model needs predictors in the .sf file: run `sparseflow calibrate "
           "--model M.sf --calibration TEXT` first, or use --predictor exact (the oracle, for "
           "testing)");
  }
  return false;
}

namespace {

// The benchmark's JSON to `path` ("-": stdout; empty: nowhere), written whole or not at all.
void write_json(const std::string& path, const nlohmann::ordered_json& j) {
  if (path.empty()) return;
  if (path == "-") {
    fmt::print("{}\n", j.dump(2));
    return;
  }
  const std::string text = j.dump(2) + "\n";
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

// A gated (or non-ReLU) model under --gpu-memory: whole layers streamed from host memory, through
// the session as generate runs it; no neuron statistics to report.
void run_layer_streaming_benchmark(const std::string& model_path, const offload::OffloadOptions& o,
                                   std::span<const int32_t> prompt, int64_t new_tokens,
                                   const std::string& json_path) {
  session::SessionOptions so;
  so.device = "cuda";
  so.offload = o;
  so.context_tokens = int64_t(prompt.size()) + new_tokens;
  so.label = "benchmark";
  const auto s = session::Session::open(model_path, so);
  s->start();
  const session::LayerStreamingPlan* plan = s->layer_streaming();
  if (plan) fmt::print(stderr, "{}\n", plan->summary());
  session::GenerateParams gp;  // greedy
  gp.max_new_tokens = std::min<int64_t>(new_tokens, 8);
  if (gp.max_new_tokens > 0) (void)s->generate_ids(prompt, gp);  // warm-up: graphs, first touch
  gp.max_new_tokens = new_tokens;
  const auto res = s->generate_ids(prompt, gp);
  nlohmann::ordered_json j = {
      {"model", model_path},
      {"gpu_memory", o.gpu_memory->text},
      {"mode", "layer_streaming"},
      {"host_layers", plan ? plan->host_layers : int64_t(0)},
      {"streamed_bytes_per_token",
       plan ? plan->layer_bytes * uint64_t(plan->host_layers) : uint64_t(0)},
      {"prompt_tokens", prompt.size()},
      {"new_tokens", res.decode_steps},
      {"prefill_ms", res.prefill_ms},
      {"decode_tokens_per_s", res.decode_tokens_per_s()}};
  fmt::print(
      "layer-streamed decode: {:.2f} tokens/s (budget {}, {} layers from host memory, {:.1f} "
      "MB over PCIe per token)\n",
      res.decode_tokens_per_s(), o.gpu_memory->text, plan ? plan->host_layers : 0,
      plan ? double(plan->layer_bytes) * double(plan->host_layers) / 1e6 : 0.0);
  write_json(json_path, j);
}

}  // namespace

void run_offloaded_benchmark(const std::string& model_path, const offload::OffloadOptions& o,
                             int64_t prompt_tokens, int64_t new_tokens,
                             const std::string& json_path, bool profile) {
  const auto model = model::Model::open(model_path);
  const int64_t V = model->config().vocab_size;
  std::vector<int32_t> prompt(size_t(std::max<int64_t>(prompt_tokens, 1)));
  for (size_t i = 0; i < prompt.size(); ++i)
    prompt[i] = int32_t((i * 7919 + 11) % size_t(std::min<int64_t>(V, 1000)));
  if (session::streams_whole_layers(model->config())) {
    run_layer_streaming_benchmark(model_path, o, prompt, new_tokens, json_path);
    return;
  }
  offload::OffloadTuning tuning;
  tuning.context_tokens = int64_t(prompt.size()) + new_tokens;
  const auto engine =
      backend::require_cuda("benchmark --gpu-memory").open_offloaded(*model, o, {}, tuning, {});
  offload::OffloadedOpt& off = *engine;
  fmt::print(stderr, "{}", off.plan().table());
  model::SamplingParams sp;  // greedy
  // An untimed warm-up first (CUDA graph capture, first-touch of the host bundles, the cache filled
  // to its steady state); generate() resets the stats, so the figures are the timed run's alone.
  const int64_t warm = std::min<int64_t>(new_tokens, 8);
  if (warm > 0) (void)off.generate(prompt, warm, sp);
  const auto res = off.generate(prompt, new_tokens, sp);
  const auto st = off.stats();
  nlohmann::ordered_json j = {{"model", model_path},
                              {"gpu_memory", o.gpu_memory->text},
                              {"policy", std::string(offload::policy_name(o.policy))},
                              {"predictor", std::string(offload::predictor_mode_name(o.predictor))},
                              {"prompt_tokens", prompt.size()},
                              {"new_tokens", res.decode_steps},
                              {"warmup_tokens", warm},
                              {"prefill_ms", res.prefill_ms},
                              {"offload_device_bytes", off.device_bytes()},
                              {"attention_host_layers", off.plan().attention_host_layers},
                              {"attention_host_bytes", off.plan().attention_host_bytes},
                              {"decode_tokens_per_s", res.decode_tokens_per_s()},
                              {"stats", st.to_json()}};
  fmt::print(
      "offloaded decode: {:.2f} tokens/s ({} policy, {} predictor, budget {}); {:.1f} MB over PCIe "
      "per token, "
      "hit rate {:.3f}, {}\n",
      res.decode_tokens_per_s(), offload::policy_name(o.policy),
      offload::predictor_mode_name(o.predictor), o.gpu_memory->text, st.bytes_per_token() / 1e6,
      st.hit_rate(),
      st.exact_rows > 0
          ? fmt::format("recall {:.4f}, precision {:.4f}", st.recall(), st.precision())
          : std::string("recall not checked (--stats checks it)"));
  // The token's limit: GPU-memory bytes at the HBM read bandwidth, PCIe bytes at the DMA bandwidth.
  const auto& cfg = model->config();
  offload::DecodeLimitInput li;
  li.act_bytes = double(off.store().layout().fc2_offset) / double(cfg.hidden_size);
  li.head_bytes =
      off.plan().input.lm_head_bytes
          ? off.plan().input.lm_head_bytes
          : uint64_t(double(cfg.vocab_size) * double(cfg.word_embed_proj_dim) * li.act_bytes);
  const double context = double(prompt.size()) + double(new_tokens);
  li.kv_share = (double(prompt.size()) + 0.5 * double(new_tokens)) / context;
  li.pcie_GBps = off.probe().pcie_dma_GBps;
  std::string no_limit = "it needs --stats, which measures the share of listed neurons that fire";
  if (st.exact_rows > 0) {
    try {  // a 1 GiB streaming read: a GPU filled to its budget may have no room for it
      li.hbm_GBps = off.engine().measure_read_bandwidth() / 1e9;
    } catch (const Error& e) {
      no_limit = fmt::format("the HBM bandwidth could not be measured: {}", e.what());
    }
  }
  if (const auto lim = offload::decode_limit(off.plan(), st, li)) {
    fmt::print(
        "limit: {:.3f} ms per token ({:.2f} GB from GPU memory at {:.0f} GB/s: {:.3f} ms; {:.1f} "
        "MB over PCIe "
        "at {:.1f} GB/s: {:.3f} ms); this run reached {:.1f}% of it\n",
        lim->ms(), lim->gpu_bytes / 1e9, li.hbm_GBps, lim->hbm_ms, lim->pcie_bytes / 1e6,
        li.pcie_GBps, lim->pcie_ms, 100.0 * lim->fraction(res.decode_tokens_per_s()));
    j["limit"] = {{"ms_per_token", lim->ms()},
                  {"gpu_bytes_per_token", lim->gpu_bytes},
                  {"hbm_GBps", li.hbm_GBps},
                  {"hbm_ms", lim->hbm_ms},
                  {"pcie_bytes_per_token", lim->pcie_bytes},
                  {"pcie_GBps", li.pcie_GBps},
                  {"pcie_ms", lim->pcie_ms},
                  {"fraction", lim->fraction(res.decode_tokens_per_s())}};
  } else {
    fmt::print("limit: not computed ({})\n", no_limit);
  }
  if (profile) {  // eager steps with an event per stage; the FFN split by the runtime (wait, fc1,
                  // fc2)
    std::FILE* human = json_path == "-" ? stderr : stdout;
    auto [eager, graph] = print_decode_profile(off.engine(), int64_t(prompt.size()), new_tokens,
                                               off.engine().measure_read_bandwidth(), human);
    j["profile"] = std::move(eager);
    j["profile_graph"] = std::move(graph);
    fmt::print(
        human,
        "(ffn_predict: the predictor's first product on the main stream, then the fork; the "
        "rest of the prediction, the cache lookup and the fetch run on a side stream during "
        "q/k/v and attention, and ffn_wait is what the main stream still waits for them.)\n");
  }
  write_json(json_path, j);
}

}  // namespace sf::cli
