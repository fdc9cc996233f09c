// The cost audit: how many GPUs serve Q requests/s dense vs 2:4, what they cost per year and what
// CO2 they emit. Only arithmetic and choices live here, no file or terminal I/O, so every number
// can be checked against a hand computation (tests/audit). Throughput always comes from
// measurements (measurements.hpp); nothing here has a built-in speed.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sf::audit {

constexpr double kHoursPerYear = 8760.0;  // 365 days x 24 h; a leap year would add 24 h (0.27%)

// ---- pure arithmetic
// ------------------------------------------------------------------------------

// One GPU's busy time per request: prefill of tokens_in at prefill_tps, then tokens_out decoded at
// decode_tps (tokens/s summed over the sequences of a batch). Both rates must be > 0.
double gpu_seconds_per_request(double tokens_in, double tokens_out, double prefill_tps,
                               double decode_tps);
// 1 / gpu_seconds_per_request.
double requests_per_second_per_gpu(double tokens_in, double tokens_out, double prefill_tps,
                                   double decode_tps);
// The most GPUs an audit counts: every integer up to 2^53 is exact in a double.
constexpr int64_t kMaxGpus = int64_t(1) << 53;
// ceil(qps / rps_per_gpu); a ratio within 1e-9 of an integer counts as that integer, so that
// 1000 / (1000 / 8) does not become 9 through rounding. Throws Error(InvalidArgument) for inputs
// that are not finite and > 0, and for a count above kMaxGpus (never a wrapped number).
int64_t gpus_needed(double qps, double rps_per_gpu);
// Each throws Error(InvalidArgument) for a negative or non-finite input and for a result that
// overflows a double.
double yearly_cost(int64_t gpus, double price_per_gpu_hour);  // gpus x price x 8760
double yearly_kwh(int64_t gpus, double watts);                // gpus x W x 8760 / 1000
double tonnes_co2(double kwh, double grams_per_kwh);          // kWh x g/kWh / 1e6

// ---- model shapes (published configs)
// -------------------------------------------------------------

struct LinearShape {
  std::string name;  // "q_proj"
  int64_t n, k;      // W is [n, k]: y = x W^T, n outputs, k inputs (the benchmark's --size NxK)
  int per_layer;     // how many of this shape one decoder layer holds
};

struct ModelShape {
  std::string name;    // "llama-7b"
  std::string family;  // "llama" or "opt": decides the linear layers of a decoder layer
  int64_t hidden = 0, layers = 0, ffn = 0, vocab = 0;
  std::string source;               // where the figures come from
  int64_t kv_heads = 0, heads = 0;  // grouped-query attention (Llama 3, Mistral, Qwen2); 0: none
};

// Throws Error(InvalidArgument) unless every size of m is in 1 .. a bound far above any real model
// (a config.json from the user can say anything).
void check_model_shape(const ModelShape& m);
// The linear layers of one decoder layer (the ones 2:4 conversion prunes); lm_head is left out.
std::vector<LinearShape> decoder_linears(const ModelShape& m);
// Bytes of fp16 weights: dense, and with every decoder linear layer 2:4 (0.5625 of its bytes:
// half the values plus 2 bits of index per kept value).
double weight_bytes_fp16(const ModelShape& m, bool sparse24);
// fp16 K and V for one sequence of `tokens` tokens: 2 x layers x hidden x 2 bytes per token.
double kv_bytes_per_sequence(const ModelShape& m, double tokens);

// The table of published shapes; nullptr when `name` is not in it. Names are matched after
// normalize_model_name().
const ModelShape* find_model(std::string_view name);
const std::vector<ModelShape>& known_models();
// "facebook/OPT-6.7B" -> "opt-6.7b": lower case, the part after the last '/', without a ".sf"
// extension or trailing '/'.
std::string normalize_model_name(std::string_view name);

// ---- GPUs (published datasheets)
// ------------------------------------------------------------------

struct GpuSpec {
  std::string name;  // "NVIDIA H100 SXM5 80GB"
  std::vector<std::string>
      ids;  // lower-case substrings of cudaGetDeviceProperties' name, all needed
  std::vector<std::string> not_ids;  // substrings that must be absent (PCIe vs SXM)
  double tdp_watts;
  double memory_gb;  // 1e9 bytes
  std::string source;
};
// The spec whose ids all occur in `device_name` (case-insensitive); nullptr when none does.
const GpuSpec* find_gpu(std::string_view device_name);
// Case-insensitive substring test used to match --gpu against measured device names.
bool name_matches(std::string_view haystack, std::string_view needle);

// ---- measurements
// ---------------------------------------------------------------------------------

// Provenance that every figure carries into the report.
struct Provenance {
  std::string gpu, date, command, origin;  // origin: the file it was read from
};

// One `sparseflow benchmark --model` run (docs/DEPLOYMENT.md, "Model benchmark JSON").
struct ModelRun {
  int64_t batch = 1;
  double prompt_tokens = 0, new_tokens = 0;
  double prefill_tps = 0;  // prompt tokens/s, all sequences of the batch together
  double decode_tps = 0;   // generated tokens/s, all sequences of the batch together
};
struct ModelMeasurement {
  Provenance prov;
  std::string model;   // normalize_model_name of "model" (a name, or the path of the .sf / HF dir)
  std::string family;  // "architecture" when given ("opt"); empty otherwise
  int64_t layers = 0, hidden = 0, ffn = 0;  // 0 when not given
  bool sparse24 = false;                    // the model's linear layers were 2:4
  std::vector<ModelRun> runs;
};
// Whether `m` measured a model of shape `shape`: same name, or the same layers and hidden size
// (and FFN size and architecture where the benchmark gives them; the engine runs OPT only, so a
// benchmark without "architecture" is taken as OPT).
bool measures(const ModelMeasurement& m, const ModelShape& shape);

// One GEMM benchmark shape: per M the dense and the SparseFlow 2:4 time of y = x W^T, W [n, k].
struct GemmRow {
  int64_t m = 0;
  double dense_ms = 0;
  std::optional<double> sparse_ms;
};
struct GemmMeasurement {
  Provenance prov;
  int64_t n = 0, k = 0;
  std::vector<GemmRow> rows;
};

struct Measurements {
  std::vector<ModelMeasurement> models;
  std::vector<GemmMeasurement> gemms;
};

// ---- the audit
// --------------------------------------------------------------------------------------

struct Request {
  double qps = 0;
  std::optional<double> tokens_in, tokens_out;
  std::optional<std::string> gpu;  // substring of the measured device name
  std::optional<int64_t> batch;    // the serving batch; default: see run_audit
  std::optional<double> price_per_gpu_hour, power_watts, grid_g_per_kwh;
};

struct Assumption {
  std::string what, value, source;
};

struct Side {
  std::string label;  // "dense fp16", "2:4 fp16"
  int64_t batch = 0;  // decode batch the throughput was taken at
  double prefill_tps = 0, decode_tps = 0;
  double rps_per_gpu = 0;
  int64_t gpus = 0;
  std::optional<double> cost_per_year, kwh_per_year, tonnes_co2_per_year;
  std::vector<std::string> measured_by;  // "file: command (date)" for each measurement used
};

struct Report {
  std::string model, gpu;
  double qps = 0, tokens_in = 0, tokens_out = 0;
  // true when the throughput is an upper bound from GEMM timings of the linear layers alone, so
  // that the GPU counts are lower bounds.
  bool linear_layer_bound = false;
  Side dense, sparse;
  std::vector<Assumption> assumptions;
  std::vector<std::string> not_computed;  // e.g. "yearly cost: pass --price-per-gpu-hour"
};

// Computes the audit from `meas`. Model benchmarks of `model` (dense and 2:4) on one GPU are used
// when both exist; otherwise GEMM timings covering every decoder linear shape of `model` give a
// linear-layers-only bound. When neither exists it throws sf::Error(NotFound) whose message names
// the measurements that are missing and the commands that produce them (missing_measurements()).
Report run_audit(const Request& req, const ModelShape& model, const Measurements& meas);

// The explanation run_audit throws: what was found, what is needed, and the commands.
std::string missing_measurements(const Request& req, const ModelShape& model,
                                 const Measurements& meas);

}  // namespace sf::audit
