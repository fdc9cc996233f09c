#include "audit/audit.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <set>

#include "audit/costs.hpp"
#include "core/error.hpp"

namespace sf::audit {

// ---- arithmetic
// ------------------------------------------------------------------------------------

double gpu_seconds_per_request(double tokens_in, double tokens_out, double prefill_tps,
                               double decode_tps) {
  if (!std::isfinite(prefill_tps) || !std::isfinite(decode_tps) || !(prefill_tps > 0) ||
      !(decode_tps > 0))
    fail(Status::InvalidArgument,
         "throughput must be positive, found prefill {} tokens/s and decode {} tokens/s; "
         "check the benchmark file",
         prefill_tps, decode_tps);
  if (!std::isfinite(tokens_in) || !std::isfinite(tokens_out) || tokens_in < 0 || tokens_out < 0 ||
      tokens_in + tokens_out <= 0)
    fail(Status::InvalidArgument,
         "a request needs tokens: found {} prompt and {} generated tokens; pass --tokens-in and "
         "--tokens-out with values >= 0, not both 0",
         tokens_in, tokens_out);
  const double s = tokens_in / prefill_tps + tokens_out / decode_tps;
  if (!std::isfinite(s))
    fail(Status::InvalidArgument,
         "{} prompt and {} generated tokens at {} and {} tokens/s take longer than a double can "
         "hold; pass realistic --tokens-in and --tokens-out",
         tokens_in, tokens_out, prefill_tps, decode_tps);
  return s;
}

double requests_per_second_per_gpu(double tokens_in, double tokens_out, double prefill_tps,
                                   double decode_tps) {
  return 1.0 / gpu_seconds_per_request(tokens_in, tokens_out, prefill_tps, decode_tps);
}

int64_t gpus_needed(double qps, double rps_per_gpu) {
  if (!std::isfinite(qps) || !(qps > 0))
    fail(Status::InvalidArgument, "--qps must be a finite number > 0, found {}", qps);
  if (!std::isfinite(rps_per_gpu) || !(rps_per_gpu > 0))
    fail(Status::InvalidArgument, "requests/s per GPU must be a finite number > 0, found {}",
         rps_per_gpu);
  const double ratio = qps / rps_per_gpu;
  // Past this a double no longer holds every integer, and converting to int64 would wrap.
  if (!(ratio <= double(kMaxGpus)))
    fail(Status::InvalidArgument,
         "serving {} requests/s at {} requests/s per GPU needs {:.3g} GPUs, more than the {} "
         "(2^53) this audit can count exactly; check --qps",
         qps, rps_per_gpu, ratio, kMaxGpus);
  const double nearest = std::round(ratio);
  if (std::fabs(ratio - nearest) <= 1e-9 * std::max(1.0, nearest))
    return std::max<int64_t>(1, int64_t(nearest));
  return int64_t(std::ceil(ratio));
}

namespace {

// A product of finite inputs can still overflow to infinity: an error naming it, never "inf".
double finite_result(double v, const char* what) {
  if (!std::isfinite(v))
    fail(Status::InvalidArgument,
         "the {} is larger than a double can hold (about 1.8e308); check the numbers passed for "
         "it",
         what);
  return v;
}

void check_input(double v, const char* flag, bool zero_ok) {
  if (!std::isfinite(v) || v < 0 || (!zero_ok && v == 0))
    fail(Status::InvalidArgument, "{} must be a finite number {}, found {}", flag,
         zero_ok ? ">= 0" : "> 0", v);
}

}  // namespace

double yearly_cost(int64_t gpus, double price_per_gpu_hour) {
  check_input(price_per_gpu_hour, "--price-per-gpu-hour", true);
  return finite_result(double(gpus) * price_per_gpu_hour * kHoursPerYear, "yearly cost");
}
double yearly_kwh(int64_t gpus, double watts) {
  check_input(watts, "--power-watts", false);
  return finite_result(double(gpus) * watts * kHoursPerYear / 1000.0, "yearly energy");
}
double tonnes_co2(double kwh, double grams_per_kwh) {
  check_input(grams_per_kwh, "--grid-gco2-per-kwh", true);
  return finite_result(kwh * grams_per_kwh / 1e6, "yearly CO2");
}

// ---- models
// ------------------------------------------------------------------------------------------

void check_model_shape(const ModelShape& m) {
  // Far above any published model (LLaMA-65B: hidden 8192, 80 layers), and low enough that the
  // byte counts below stay exact in a double.
  constexpr int64_t kMaxDim = int64_t(1) << 24, kMaxLayers = 1 << 16;
  auto check = [&](const char* what, int64_t v, int64_t hi) {
    if (v < 1 || v > hi)
      fail(Status::InvalidArgument, "model \"{}\": {} is {}, expected 1 to {} ({})", m.name, what,
           v, hi, m.source);
  };
  check("hidden size", m.hidden, kMaxDim);
  check("the number of layers", m.layers, kMaxLayers);
  check("the FFN size", m.ffn, kMaxDim);
  check("the vocabulary size", m.vocab, kMaxDim);
}

std::string normalize_model_name(std::string_view name) {
  while (!name.empty() && name.back() == '/') name.remove_suffix(1);
  if (name.size() > 3 && name.substr(name.size() - 3) == ".sf") name.remove_suffix(3);
  auto slash = name.find_last_of('/');
  if (slash != std::string_view::npos) name = name.substr(slash + 1);
  std::string out(name);
  for (char& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

const std::vector<ModelShape>& known_models() {
  static const std::string kLlama =
      "published config: Touvron et al. 2023, \"LLaMA\", Table 2, and config.json of "
      "huggingface.co/huggyllama/llama-7b (hidden 4096, 32 layers, intermediate 11008, vocab "
      "32000)";
  static const std::string kLlama2 =
      "published config: config.json of huggingface.co/meta-llama/Llama-2-7b-hf";
  static const std::string kLlama13 =
      "published config: config.json of huggingface.co/huggyllama/llama-13b";
  static const std::string kOpt =
      "published config: Zhang et al. 2022, \"OPT\", Table 1, and config.json of "
      "huggingface.co/facebook/";
  static const std::vector<ModelShape> models = {
      {"llama-7b", "llama", 4096, 32, 11008, 32000, kLlama},
      {"llama-2-7b", "llama", 4096, 32, 11008, 32000, kLlama2},
      {"llama-13b", "llama", 5120, 40, 13824, 32000, kLlama13},
      {"llama-2-13b", "llama", 5120, 40, 13824, 32000,
       "published config: config.json of huggingface.co/meta-llama/Llama-2-13b-hf"},
      {"llama-3-8b", "llama", 4096, 32, 14336, 128256,
       "published config: config.json of huggingface.co/meta-llama/Meta-Llama-3-8B", 8, 32},
      {"mistral-7b", "llama", 4096, 32, 14336, 32000,
       "published config: config.json of huggingface.co/mistralai/Mistral-7B-v0.1", 8, 32},
      {"qwen2-7b", "llama", 3584, 28, 18944, 152064,
       "published config: config.json of huggingface.co/Qwen/Qwen2-7B", 4, 28},
      {"opt-125m", "opt", 768, 12, 3072, 50272, kOpt + "opt-125m"},
      {"opt-350m", "opt", 1024, 24, 4096, 50272, kOpt + "opt-350m"},
      {"opt-1.3b", "opt", 2048, 24, 8192, 50272, kOpt + "opt-1.3b"},
      {"opt-2.7b", "opt", 2560, 32, 10240, 50272, kOpt + "opt-2.7b"},
      {"opt-6.7b", "opt", 4096, 32, 16384, 50272, kOpt + "opt-6.7b"},
      {"opt-13b", "opt", 5120, 40, 20480, 50272, kOpt + "opt-13b"},
      {"opt-30b", "opt", 7168, 48, 28672, 50272, kOpt + "opt-30b"},
      {"opt-66b", "opt", 9216, 64, 36864, 50272, kOpt + "opt-66b"},
  };
  return models;
}

const ModelShape* find_model(std::string_view name) {
  const std::string key = normalize_model_name(name);
  for (const auto& m : known_models())
    if (m.name == key) return &m;
  return nullptr;
}

std::vector<LinearShape> decoder_linears(const ModelShape& m) {
  const int64_t h = m.hidden, f = m.ffn;
  if (m.family == "llama" && m.kv_heads && m.kv_heads != m.heads) {  // grouped-query attention
    const int64_t kv = h / m.heads * m.kv_heads;
    return {{"q/o_proj", h, h, 2},
            {"k/v_proj", kv, h, 2},
            {"gate/up_proj", f, h, 2},
            {"down_proj", h, f, 1}};
  }
  if (m.family == "llama")  // SwiGLU: gate and up project to f, down back to h
    return {{"q/k/v/o_proj", h, h, 4}, {"gate/up_proj", f, h, 2}, {"down_proj", h, f, 1}};
  return {{"q/k/v/out_proj", h, h, 4}, {"fc1", f, h, 1}, {"fc2", h, f, 1}};
}

double weight_bytes_fp16(const ModelShape& m, bool sparse24) {
  double linear = 0;
  for (const auto& l : decoder_linears(m)) linear += double(l.n) * double(l.k) * l.per_layer;
  linear *= double(m.layers);
  // Embeddings; LLaMA's lm_head is a separate matrix, OPT ties it to the embedding. Norms and
  // biases are under 0.1% and left out.
  double other = double(m.vocab) * double(m.hidden) * (m.family == "llama" ? 2.0 : 1.0);
  return 2.0 * (linear * (sparse24 ? 0.5625 : 1.0) + other);
}

double kv_bytes_per_sequence(const ModelShape& m, double tokens) {
  // Keys and values of every layer in fp16; grouped-query models keep kv_heads heads of them.
  const double width = m.kv_heads && m.heads
                           ? double(m.hidden) / double(m.heads) * double(m.kv_heads)
                           : double(m.hidden);
  return 2.0 * double(m.layers) * width * 2.0 * tokens;
}

bool measures(const ModelMeasurement& m, const ModelShape& shape) {
  if (m.model == shape.name) return true;
  if (m.layers != shape.layers || m.hidden != shape.hidden) return false;
  if (m.ffn != 0 && m.ffn != shape.ffn) return false;
  // A benchmark names the engine's architecture; Mistral and Qwen2 decoders are Llama-shaped
  // (SwiGLU), which is what the audit's families tell apart.
  std::string family = m.family.empty() ? std::string("opt") : m.family;
  if (family == "mistral" || family == "qwen2") family = "llama";
  return family == shape.family;
}

// ---- GPUs
// --------------------------------------------------------------------------------------------

static std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool name_matches(std::string_view haystack, std::string_view needle) {
  return lower(haystack).find(lower(needle)) != std::string::npos;
}

static const std::vector<GpuSpec>& gpu_specs() {
  static const std::string kH100 =
      "NVIDIA H100 Tensor Core GPU datasheet (max thermal design power)";
  static const std::string kH200 =
      "NVIDIA H200 Tensor Core GPU datasheet (max thermal design power)";
  static const std::string kA100 =
      "NVIDIA A100 Tensor Core GPU datasheet (max thermal design power)";
  static const std::vector<GpuSpec> specs = {
      {"NVIDIA H100 NVL", {"h100", "nvl"}, {}, 400, 94, kH100},
      {"NVIDIA H100 PCIe", {"h100", "pcie"}, {}, 350, 80, kH100},
      {"NVIDIA H100 SXM5 80GB", {"h100"}, {"pcie", "nvl"}, 700, 80, kH100},
      {"NVIDIA H200 NVL", {"h200", "nvl"}, {}, 600, 141, kH200},
      {"NVIDIA H200 SXM 141GB", {"h200"}, {"nvl"}, 700, 141, kH200},
      {"NVIDIA A100 SXM4 80GB", {"a100", "sxm", "80gb"}, {}, 400, 80, kA100},
      {"NVIDIA A100 SXM4 40GB", {"a100", "sxm", "40gb"}, {}, 400, 40, kA100},
      {"NVIDIA A100 PCIe 80GB", {"a100", "pcie", "80gb"}, {}, 300, 80, kA100},
      {"NVIDIA A100 PCIe 40GB", {"a100", "pcie", "40gb"}, {}, 250, 40, kA100},
      {"NVIDIA L40S", {"l40s"}, {}, 350, 48, "NVIDIA L40S GPU datasheet (max power consumption)"},
      {"NVIDIA GeForce RTX 4090",
       {"4090"},
       {},
       450,
       24,
       "NVIDIA GeForce RTX 4090 specifications, nvidia.com (total graphics power)"},
  };
  return specs;
}

const GpuSpec* find_gpu(std::string_view device_name) {
  const std::string name = lower(device_name);
  for (const auto& s : gpu_specs()) {
    bool ok = true;
    for (const auto& id : s.ids) ok = ok && name.find(id) != std::string::npos;
    for (const auto& id : s.not_ids) ok = ok && name.find(id) == std::string::npos;
    if (ok) return &s;
  }
  return nullptr;
}

// ---- the audit
// ---------------------------------------------------------------------------------------

namespace {

constexpr double kDefaultTokensIn = 128, kDefaultTokensOut = 256;
constexpr const char* kDefaultTokensSource =
    "default of sparseflow audit: the project's standard model-benchmark shape (prompt 128, 256 "
    "new tokens); pass --tokens-in/--tokens-out for your traffic";

std::string fmt_si(double v) {
  if (v >= 1e12) return fmt::format("{:.3g}T", v / 1e12);
  if (v >= 1e9) return fmt::format("{:.3g}G", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.3g}M", v / 1e6);
  if (v >= 1000) return fmt::format("{:.0f}", v);
  return fmt::format("{:.4g}", v);
}

std::string provenance_line(const Provenance& p) {
  return fmt::format("{}: `{}` on {} ({})", p.origin,
                     p.command.empty() ? "command not recorded" : p.command, p.gpu,
                     p.date.empty() ? "date not recorded" : p.date);
}

// The GPUs that a --gpu filter leaves among `names`.
std::vector<std::string> filter_gpus(const std::set<std::string>& names, const Request& req) {
  std::vector<std::string> out;
  for (const auto& n : names)
    if (!req.gpu || name_matches(n, *req.gpu)) out.push_back(n);
  return out;
}

struct Chosen {
  const ModelMeasurement* meas;
  ModelRun run;
};

// The run of `m` to serve with: --batch when given, else the measured batch with the highest
// decode throughput whose KV cache fits next to the weights (when the GPU's memory is known).
std::optional<ModelRun> choose_run(const ModelMeasurement& m, const Request& req,
                                   double max_batch) {
  std::optional<ModelRun> best;
  for (const auto& r : m.runs) {
    if (req.batch ? r.batch != *req.batch : double(r.batch) > max_batch) continue;
    if (!best || r.decode_tps > best->decode_tps) best = r;
  }
  return best;
}

// Largest batch whose KV cache for tokens_in + tokens_out tokens fits beside the dense weights.
double max_batch_by_memory(const ModelShape& model, const GpuSpec* spec, double tokens) {
  if (!spec) return INFINITY;
  const double free_bytes = spec->memory_gb * 1e9 - weight_bytes_fp16(model, false);
  return std::floor(free_bytes / kv_bytes_per_sequence(model, tokens));
}

void add_power_cost_co2(Report& r, const Request& req, const GpuSpec* spec) {
  const CostInputs in{req.price_per_gpu_hour, req.power_watts, req.grid_g_per_kwh};
  CostModel m = cost_model(in, r.gpu, spec);
  r.assumptions.insert(r.assumptions.end(), m.assumptions.begin(), m.assumptions.end());
  r.not_computed.insert(r.not_computed.end(), m.not_computed.begin(), m.not_computed.end());
  for (Side* s : {&r.dense, &r.sparse}) {
    const YearlyFigures y = yearly_figures(s->gpus, in, m);
    s->cost_per_year = y.cost;
    s->kwh_per_year = y.kwh;
    s->tonnes_co2_per_year = y.tonnes_co2;
  }
}

void finish_side(Side& s, const Report& r) {
  s.rps_per_gpu =
      requests_per_second_per_gpu(r.tokens_in, r.tokens_out, s.prefill_tps, s.decode_tps);
  s.gpus = gpus_needed(r.qps, s.rps_per_gpu);
}

// Model benchmarks, dense and 2:4, on one GPU.
std::optional<Report> from_model_runs(const Request& req, const ModelShape& model,
                                      const Measurements& meas, Report base) {
  std::set<std::string> gpus;
  for (const auto& m : meas.models)
    if (measures(m, model)) gpus.insert(m.prov.gpu);
  for (const auto& gpu : filter_gpus(gpus, req)) {
    const GpuSpec* spec = find_gpu(gpu);
    const double max_batch = max_batch_by_memory(model, spec, base.tokens_in + base.tokens_out);
    std::optional<Chosen> dense, sparse;
    for (const auto& m : meas.models) {
      if (!measures(m, model) || m.prov.gpu != gpu) continue;
      auto run = choose_run(m, req, max_batch);
      if (!run) continue;
      auto& slot = m.sparse24 ? sparse : dense;
      if (!slot || run->decode_tps > slot->run.decode_tps) slot = Chosen{&m, *run};
    }
    if (!dense || !sparse) continue;
    Report r = std::move(base);
    r.gpu = gpu;
    for (auto [side, c, label] : {std::tuple{&r.dense, &*dense, "dense fp16"},
                                  std::tuple{&r.sparse, &*sparse, "2:4 fp16"}}) {
      side->label = label;
      side->batch = c->run.batch;
      side->prefill_tps = c->run.prefill_tps;
      side->decode_tps = c->run.decode_tps;
      side->measured_by.push_back(provenance_line(c->meas->prov));
      finish_side(*side, r);
      r.assumptions.push_back(
          {fmt::format("{} serving batch", label), fmt::format("{}", c->run.batch),
           req.batch ? "user flag --batch"
                     : "the measured batch with the highest decode throughput" +
                           std::string(spec ? " whose KV cache fits in the GPU's memory" : "")});
      r.assumptions.push_back(
          {fmt::format("{} throughput", label),
           fmt::format("prefill {} tokens/s, decode {} tokens/s", fmt_si(c->run.prefill_tps),
                       fmt_si(c->run.decode_tps)),
           fmt::format("measured: {} (batch {}, prompt {}, {} new tokens); taken as independent of "
                       "the request's length",
                       provenance_line(c->meas->prov), c->run.batch, c->run.prompt_tokens,
                       c->run.new_tokens)});
    }
    add_power_cost_co2(r, req, spec);
    return r;
  }
  return std::nullopt;
}

// GEMM timings of every decoder linear shape on one GPU: a linear-layers-only bound.
std::optional<Report> from_gemm_bound(const Request& req, const ModelShape& model,
                                      const Measurements& meas, Report base) {
  const auto linears = decoder_linears(model);
  std::set<std::string> gpus;
  for (const auto& g : meas.gemms) gpus.insert(g.prov.gpu);
  for (const auto& gpu : filter_gpus(gpus, req)) {
    // For each shape and M: the row (first one found wins) and where it came from.
    std::vector<std::map<int64_t, std::pair<GemmRow, const GemmMeasurement*>>> per_shape(
        linears.size());
    for (size_t i = 0; i < linears.size(); ++i)
      for (const auto& g : meas.gemms)
        if (g.prov.gpu == gpu && g.n == linears[i].n && g.k == linears[i].k)
          for (const auto& row : g.rows)
            if (row.sparse_ms && row.dense_ms > 0 && *row.sparse_ms > 0)
              per_shape[i].try_emplace(row.m, row, &g);
    std::vector<int64_t> common;
    for (const auto& [m, unused] : per_shape[0]) {
      bool all = true;
      for (const auto& s : per_shape) all = all && s.count(m);
      if (all) common.push_back(m);
    }
    if (common.empty()) continue;

    const GpuSpec* spec = find_gpu(gpu);
    const double max_batch = max_batch_by_memory(model, spec, base.tokens_in + base.tokens_out);
    std::optional<int64_t> decode_m;
    if (req.batch) {
      if (std::find(common.begin(), common.end(), *req.batch) != common.end())
        decode_m = *req.batch;
    } else {
      for (int64_t m : common)
        if (double(m) <= max_batch) decode_m = m;  // common is ascending: keeps the largest
    }
    if (!decode_m) continue;
    const int64_t prefill_m = common.back();

    auto step_ms = [&](int64_t m, bool sparse) {
      double ms = 0;
      for (size_t i = 0; i < linears.size(); ++i) {
        const GemmRow& row = per_shape[i].at(m).first;
        ms += linears[i].per_layer * (sparse ? *row.sparse_ms : row.dense_ms);
      }
      return ms * double(model.layers);
    };

    Report r = std::move(base);
    r.gpu = gpu;
    r.linear_layer_bound = true;
    std::set<const GemmMeasurement*> used;
    for (size_t i = 0; i < linears.size(); ++i) {
      used.insert(per_shape[i].at(*decode_m).second);
      used.insert(per_shape[i].at(prefill_m).second);
    }
    for (auto [side, sparse, label] :
         {std::tuple{&r.dense, false, "dense fp16"}, std::tuple{&r.sparse, true, "2:4 fp16"}}) {
      side->label = label;
      side->batch = *decode_m;
      side->decode_tps = double(*decode_m) / (step_ms(*decode_m, sparse) / 1000.0);
      side->prefill_tps = double(prefill_m) / (step_ms(prefill_m, sparse) / 1000.0);
      for (const auto* g : used) side->measured_by.push_back(provenance_line(g->prov));
      finish_side(*side, r);
    }
    std::string shapes;
    for (const auto& l : linears)
      shapes += fmt::format("{}{}x {} [{}x{}]", shapes.empty() ? "" : ", ", l.per_layer, l.name,
                            l.n, l.k);
    r.assumptions.push_back(
        {"throughput model",
         fmt::format("time per step = {} layers x ({}) GEMM times; decode tokens/s = batch / step, "
                     "prefill tokens/s = M / step at the largest measured M ({})",
                     model.layers, shapes, prefill_m),
         "upper bound from measured GEMMs only: attention, KV-cache reads, norms, lm_head and "
         "sampling are left out, so the real GPU counts are higher. Model benchmarks "
         "(`sparseflow benchmark --model`) replace this bound with measured tokens/s"});
    r.assumptions.push_back(
        {"serving batch (decode M)", fmt::format("{}", *decode_m),
         req.batch ? std::string("user flag --batch")
         : spec
             ? fmt::format("largest measured M whose fp16 KV cache ({} tokens per sequence) fits "
                           "beside the dense weights in {} GB ({})",
                           base.tokens_in + base.tokens_out, spec->memory_gb, spec->source)
             : std::string("largest measured M (the GPU's memory is not in this tool's table; pass "
                           "--batch)")});
    add_power_cost_co2(r, req, spec);
    return r;
  }
  return std::nullopt;
}

}  // namespace

Report run_audit(const Request& req, const ModelShape& model, const Measurements& meas) {
  // Every number a user gives, checked before any arithmetic uses it.
  check_input(req.qps, "--qps (requests per second)", false);
  if (req.tokens_in) check_input(*req.tokens_in, "--tokens-in", true);
  if (req.tokens_out) check_input(*req.tokens_out, "--tokens-out", true);
  if (req.price_per_gpu_hour) check_input(*req.price_per_gpu_hour, "--price-per-gpu-hour", true);
  if (req.power_watts) check_input(*req.power_watts, "--power-watts", false);
  if (req.grid_g_per_kwh) check_input(*req.grid_g_per_kwh, "--grid-gco2-per-kwh", true);
  if (req.batch && *req.batch <= 0)
    fail(Status::InvalidArgument, "--batch must be > 0, found {}", *req.batch);
  check_model_shape(model);
  Report base;
  base.model = model.name;
  base.qps = req.qps;
  base.tokens_in = req.tokens_in.value_or(kDefaultTokensIn);
  base.tokens_out = req.tokens_out.value_or(kDefaultTokensOut);
  base.assumptions.push_back(
      {"load", fmt::format("{} requests/s, sustained all year", req.qps), "user flag --qps"});
  base.assumptions.push_back(
      {"tokens per request", fmt::format("{} in, {} out", base.tokens_in, base.tokens_out),
       req.tokens_in || req.tokens_out ? "user flags --tokens-in/--tokens-out"
                                       : kDefaultTokensSource});
  base.assumptions.push_back({"model shape",
                              fmt::format("{}: hidden {}, {} layers, FFN {}, vocab {}", model.name,
                                          model.hidden, model.layers, model.ffn, model.vocab),
                              model.source});
  base.assumptions.push_back({"GPU time per request",
                              "tokens_in / prefill tokens/s + tokens_out / decode tokens/s",
                              "one replica per GPU; prefill and decode share the GPU (continuous "
                              "batching); no headroom for peaks"});
  base.assumptions.push_back({"2:4 layers",
                              "every decoder linear layer 2:4, lm_head and embeddings dense",
                              "what `sparseflow convert --sparsity 2:4` produces"});

  if (auto r = from_model_runs(req, model, meas, base)) return *r;
  if (auto r = from_gemm_bound(req, model, meas, base)) return *r;
  throw Error(Status::NotFound, missing_measurements(req, model, meas));
}

std::string missing_measurements(const Request& req, const ModelShape& model,
                                 const Measurements& meas) {
  std::string found;
  for (const auto& m : meas.models)
    found += fmt::format("    model benchmark: {} {} on {} ({} runs) from {}\n", m.model,
                         m.sparse24 ? "2:4" : "dense", m.prov.gpu, m.runs.size(), m.prov.origin);
  for (const auto& g : meas.gemms)
    found += fmt::format("    GEMM benchmark: {}x{} on {} ({} rows{}) from {}\n", g.n, g.k,
                         g.prov.gpu, g.rows.size(),
                         std::any_of(g.rows.begin(), g.rows.end(),
                                     [](const GemmRow& r) { return r.sparse_ms.has_value(); })
                             ? ""
                             : ", no SparseFlow 2:4 times",
                         g.prov.origin);
  if (found.empty()) found = "    nothing\n";

  const std::string gpu_note =
      req.gpu ? fmt::format(" on a GPU matching \"{}\"", *req.gpu) : std::string();
  const std::string qps = fmt::format("{}", req.qps);
  std::string s = fmt::format(
      "no measured throughput for {}{}: sparseflow audit computes GPU counts only from "
      "measurements, "
      "never from assumed speeds.\n  Measurements found:\n{}"
      "  It needs, measured on the GPU you will serve with:\n",
      model.name, gpu_note, found);
  s += fmt::format(
      "  (a) model benchmarks of {} dense and 2:4 (measured tokens/s: the real answer), from its "
      "checkpoint (an HF directory or a GGUF file), or from random weights of its shape where "
      "`sparseflow synth --arch` has it:\n"
      "        sparseflow convert --input CHECKPOINT --output {}.sf\n"
      "        sparseflow convert --input CHECKPOINT --sparsity 2:4 --output {}-24.sf\n"
      "        sparseflow benchmark --device cuda --model {}.sf --batch 1,16,64,256 --json "
      "dense.json\n"
      "        sparseflow benchmark --device cuda --model {}-24.sf --batch 1,16,64,256 --json "
      "sparse.json\n"
      "        sparseflow audit --model {} --qps {} --from-benchmark dense.json --from-benchmark "
      "sparse.json\n"
      "  or (b)",
      model.name, model.name, model.name, model.name, model.name, model.name, qps);
  s += " GEMM benchmarks of every decoder linear shape (a bound: linear layers only):\n";
  std::string files;
  int i = 0;
  for (const auto& l : decoder_linears(model)) {
    s += fmt::format(
        "        sparseflow benchmark --device cuda --size {}x{} --batch 1,8,32,256,2048 --json "
        "gemm{}.json\n",
        l.n, l.k, i);
    files += fmt::format(" --from-benchmark gemm{}.json", i++);
  }
  s += fmt::format("        sparseflow audit --model {} --qps {}{}\n", model.name, qps, files);
  s += "  Results measured on named GPUs can also be shipped in data/measured/ "
       "(docs/DEPLOYMENT.md).";
  return s;
}

}  // namespace sf::audit
