// sparseflow benchmark: dense vs 2:4 GEMM, y[M, N] = x[M, K] W^T, on the CPU or a GPU, in one
// process so that the ratios compare like with like. Prints a table; --json writes the results.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <memory>
#include <optional>

#include "backend/backends.hpp"
#include "cli/commands.hpp"
#include "cli/offload_flags.hpp"
#include "cli/table.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/output_path.hpp"
#include "model/weights.hpp"
#include "report/svg_plot.hpp"
#include "sparse24/cpu_bench.hpp"

namespace sf::cli {

namespace {

struct BenchmarkOptions {
  std::string size, batches, device = "auto", dtype = "fp16", json;
  int iters = 0;  // 0: the device's default
  // --model: whole-model generation speed instead (cmd_benchmark_model.cpp).
  std::string model, sparsity = "none";
  int64_t prompt_tokens = 128, new_tokens = 256;
  std::string plot;      // --plot FILE.svg (report/svg_plot.hpp)
  bool profile = false;  // --model: per-stage time and GB/s of a decode step
  bool force = false;    // replace an existing --json / --plot file
};

constexpr const char* kCpuBatches = "1,16,256";
constexpr const char* kCudaBatches = "1,2,4,8,16,32,64,256,2048,8192";

// A positive decimal integer filling all of s, or nullopt.
std::optional<int64_t> parse_positive(std::string_view s) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v <= 0) return std::nullopt;
  return v;
}

std::pair<int64_t, int64_t> parse_size(const std::string& s) {
  const size_t x = s.find_first_of("xX");
  if (x == std::string::npos)
    fail(Status::InvalidArgument,
         "--size '{}': expected NxK, e.g. 4096x4096 (W is [N, K]: N "
         "outputs, K inputs)",
         s);
  const auto n = parse_positive(std::string_view(s).substr(0, x));
  const auto k = parse_positive(std::string_view(s).substr(x + 1));
  if (!n || !k)
    fail(Status::InvalidArgument, "--size '{}': N and K must be positive integers, e.g. 4096x4096",
         s);
  if (*k % 4 != 0)
    fail(Status::InvalidArgument,
         "--size '{}': K = {} is not a multiple of 4; 2:4 sparsity works "
         "on groups of 4 along K. Try K = {}",
         s, *k, *k / 4 * 4 + 4);
  return {*n, *k};
}

std::vector<int64_t> parse_batches(const std::string& s) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (true) {
    const size_t comma = s.find(',', start);
    const std::string_view item = std::string_view(s).substr(start, comma - start);
    const auto m = parse_positive(item);
    if (!m)
      fail(Status::InvalidArgument,
           "--batch '{}': '{}' is not a positive integer; expected a "
           "comma-separated list of M values such as 1,16,256",
           s, item);
    out.push_back(*m);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// Column order for keys the benchmarks are known to report; any other scalar key of the rows
// follows, so a backend can add a measurement without touching this file.
struct Column {
  const char* key;
  const char* label;
};
constexpr Column kKnownColumns[] = {
    {"m", "M"},
    {"dense_ms", "dense ms"},
    {"cusparselt_ms", "cuSPARSELt ms"},
    {"sparse_ms", "2:4 ms"},
    {"speedup", "speedup"},
    {"speedup_vs_dense", "vs dense"},
    {"speedup_vs_cusparselt", "vs cuSPARSELt"},
    {"cusparselt_speedup", "cuSPARSELt speedup"},
    {"dense_gbps", "dense GB/s"},
    {"sparse_gbps", "2:4 GB/s"},
    {"dense_tbps", "dense TB/s"},
    {"cusparselt_tbps", "cuSPARSELt TB/s"},
    {"sparse_tbps", "2:4 TB/s"},
    {"dense_gflops", "dense GFLOP/s"},
    {"sparse_gflops", "2:4 GFLOP/s"},
    {"dense_tflops", "dense TFLOP/s"},
    {"cusparselt_tflops", "cuSPARSELt TFLOP/s"},
    {"sparse_tflops", "2:4 TFLOP/s"},
    {"roofline_fraction", "roofline"},
    {"rel_err", "rel. error"},
};

std::string format_cell(const std::string& key, const nlohmann::json& v) {
  if (v.is_null()) return "-";
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return fmt::format("{}", v.get<int64_t>());
  if (!v.is_number()) return v.dump();
  const double d = v.get<double>();
  if (key.find("speedup") != std::string::npos) return fmt::format("{:.2f}x", d);
  if (key.find("err") != std::string::npos) return fmt::format("{:.1e}", d);
  return format_number(d);
}

std::string results_table(const nlohmann::json& rows) {
  std::vector<std::string> keys, labels;
  auto present = [&](const std::string& key) {
    for (const auto& r : rows)
      if (r.is_object() && r.contains(key) && r[key].is_primitive()) return true;
    return false;
  };
  for (const auto& c : kKnownColumns)
    if (present(c.key)) {
      keys.emplace_back(c.key);
      labels.emplace_back(c.label);
    }
  for (const auto& r : rows)
    if (r.is_object())
      for (const auto& [key, value] : r.items())
        if (value.is_primitive() && std::find(keys.begin(), keys.end(), key) == keys.end()) {
          keys.push_back(key);
          labels.push_back(key);
        }
  Table t(labels);
  t.align_left(0, false);  // every column is a number, M included
  for (const auto& r : rows) {
    std::vector<std::string> cells;
    for (const auto& key : keys)
      cells.push_back(r.is_object() && r.contains(key) ? format_cell(key, r[key]) : "-");
    t.add_row(std::move(cells));
  }
  return t.str();
}

void run_benchmark(const BenchmarkOptions& o) {
  if (o.size.empty())
    fail(Status::InvalidArgument,
         "give --size NxK (a GEMM benchmark) or --model M (a model benchmark)");
  const auto [n, k] = parse_size(o.size);
  const bool cuda = o.device == "cuda";
  const std::vector<int64_t> batches =
      parse_batches(o.batches.empty() ? (cuda ? kCudaBatches : kCpuBatches) : o.batches);
  const DType dtype = *dtype_from_cli(o.dtype);  // IsMember has checked the spelling
  const int iters = o.iters > 0 ? o.iters : cuda ? 100 : 10;
  if (!o.json.empty() && o.json != "-") {  // find out before a long run, not after it
    const auto dir = std::filesystem::path(o.json).parent_path();
    if (!dir.empty() && !std::filesystem::is_directory(dir))
      fail(Status::Io, "--json '{}': directory '{}' does not exist; create it or pick another path",
           o.json, dir.string());
  }

  nlohmann::json result;
  if (cuda) {
    const std::string why = backend::cuda_unavailable_reason();
    const std::string why_kernels =
        why.empty() ? backend::cuda()->sparse_kernels_unavailable_reason() : why;
    if (!why_kernels.empty())
      fail(Status::NoDevice, "--device cuda: {}. Use --device cpu to benchmark on the CPU.",
           why_kernels);
    sf::cuda::GemmBenchOptions opts;
    opts.n = n;
    opts.k = k;
    opts.batches = batches;
    opts.dtype = dtype;
    opts.iters = iters;
    result = backend::cuda()->benchmark_gemm(opts);
  } else {
    result = sf::s24::benchmark_gemm_cpu(n, k, batches, dtype, iters);
  }
  if (!result.contains("device")) result["device"] = o.device;
  // How it was measured, for whoever reads the JSON later (`sparseflow audit` prints it).
  result["command"] = fmt::format(
      "sparseflow benchmark --device {} --size {} --batch {} --iterations {} --dtype {}", o.device,
      o.size, o.batches.empty() ? (cuda ? kCudaBatches : kCpuBatches) : o.batches, iters, o.dtype);

  // With --json - the JSON owns stdout; the table goes to stderr.
  std::FILE* human = o.json == "-" ? stderr : stdout;
  fmt::print(human, "2:4 GEMM benchmark: y[M, {}] = x[M, {}] W^T, {}, {} timed iterations\n", n, k,
             o.dtype, iters);
  for (const auto& [key, value] : result.items())
    if (value.is_primitive() && key != "n" && key != "k" && key != "dtype")
      fmt::print(human, "  {}: {}\n", key, format_cell(key, value));
  if (result.contains("rows") && result["rows"].is_array())
    fmt::print(human, "{}", results_table(result["rows"]));
  fmt::print(human, "speedup = dense time / 2:4 time, measured in this run on these inputs.\n");

  if (o.json == "-") {
    fmt::print("{}\n", result.dump(2));
  } else if (!o.json.empty()) {
    const std::string text = result.dump(2) + "\n";
    AtomicFile f(o.json);
    f.write(text.data(), text.size());
    f.commit();
    fmt::print(human, "wrote {}\n", o.json);
  }
  // --plot: speedup over dense against M, one line per backend (report/svg_plot.hpp).
  if (!o.plot.empty()) {
    report::write_speedup_plot(result, o.plot);
    fmt::print(human, "wrote {}\n", o.plot);
  }
}

}  // namespace

// cmd_benchmark_model.cpp
void run_model_benchmark(const std::string& model_path, const std::string& device,
                         const std::string& batches, int64_t prompt_tokens, int64_t new_tokens,
                         const std::string& sparsity, const std::string& json_path, bool profile);

void add_benchmark_command(CLI::App& app) {
  auto o = std::make_shared<BenchmarkOptions>();
  auto off = std::make_shared<OffloadFlags>();  // --model with --gpu-memory
  CLI::App* cmd = app.add_subcommand(
      "benchmark", "Time dense vs 2:4 GEMM (or a whole model with --model) on the CPU or a GPU");
  cmd->footer(
      "Times a dense GEMM (the vendor library: OpenBLAS on the CPU, cuBLAS on a GPU) against "
      "SparseFlow's 2:4 GEMM on the same pruned weights, y[M, N] = x[M, K] W^T, for each batch "
      "size M, after checking that the results agree. Prints times, speedup, achieved GB/s and "
      "GFLOP/s; --json also writes them.");
  auto* size =
      cmd->add_option("--size", o->size, "weight shape NxK, e.g. 4096x4096 (K a multiple of 4)");
  cmd->add_option("--batch", o->batches,
                  fmt::format("comma-separated M values (default: {} on cpu, {} on cuda)",
                              kCpuBatches, kCudaBatches));
  cmd->add_option("--device", o->device,
                  "where to run: cpu, cuda, or auto (cuda when a GPU can run the 2:4 kernels)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "element type of weights and activations")
      ->check(CLI::IsMember({"fp16", "bf16", "fp32"}))
      ->capture_default_str();
  // --iterations is the seed README's spelling (`sparseflow-benchmark --iterations 100`).
  cmd->add_option("--iters,--iterations", o->iters,
                  "timed iterations per case (default: 10 on cpu, 100 on cuda)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--json", o->json, "also write the results as JSON to FILE ('-' for stdout)");
  cmd->add_flag("--force", o->force, "replace an existing --json or --plot file");
  // --model: generation speed of a whole model on the GPU (prefill, decode, % of the HBM limit).
  cmd->add_option("--model", o->model,
                  "benchmark this model (.sf or HF dir) instead of one GEMM; needs --device cuda")
      ->excludes(size);
  cmd->add_option("--prompt-tokens", o->prompt_tokens, "--model: prompt length")
      ->capture_default_str();
  cmd->add_option("--new-tokens", o->new_tokens, "--model: tokens generated per sequence")
      ->capture_default_str();
  cmd->add_option("--sparsity", o->sparsity,
                  "--model on an HF dir: none, or 2:4 (magnitude-pruned in memory)")
      ->capture_default_str();
  cmd->add_option(
      "--plot", o->plot,
      "also draw an SVG chart: speedup over dense against M (GEMM), or decode tokens/s against "
      "batch (--model, which needs --json FILE)");
  cmd->add_flag("--profile", o->profile,
                "--model: also time each stage of a decode step (eager, an event per stage) and "
                "print its GB/s "
                "against the measured HBM read bandwidth");
  add_offload_flags(cmd, off);
  cmd->callback([o, off] {
    // `sparseflow-benchmark --size 4096x4096` measures the hardware it runs on: the GPU when there
    // is one the kernels can use.
    if (o->device == "auto") {
      const auto* gpu = backend::cuda();
      const bool usable = backend::cuda_unavailable_reason().empty() &&
                          gpu->sparse_kernels_unavailable_reason().empty();
      o->device = usable ? "cuda" : "cpu";
    }
    // Result files follow the rule of every output: never an input, never replaced without --force.
    if (!o->json.empty() && o->json != "-")
      check_output({o->json, "--json"}, {{o->model, "--model"}}, o->force);
    if (!o->plot.empty())
      check_output({o->plot, "--plot"}, {{o->model, "--model"}, {o->json, "--json"}}, o->force);
    const auto off_opt = offload_options(*off);
    if (off_opt.enabled()) {
      if (o->model.empty())
        fail(Status::InvalidArgument, "--gpu-memory benchmarks a model: add --model M.sf");
      const auto m = model::Model::open(o->model);
      if (handle_plan_or_require_cuda(off_opt, *off, o->device, *m,
                                      o->prompt_tokens + o->new_tokens))
        return;
      run_offloaded_benchmark(o->model, off_opt, o->prompt_tokens, o->new_tokens, o->json,
                              o->profile);
      return;
    }
    if (!o->model.empty()) {
      // --plot for --model draws from the JSON file the run wrote.
      if (!o->plot.empty() && (o->json.empty() || o->json == "-"))
        fail(Status::InvalidArgument,
             "--plot with --model draws from the results file: add --json FILE");
      run_model_benchmark(o->model, o->device, o->batches, o->prompt_tokens, o->new_tokens,
                          o->sparsity, o->json, o->profile);
      if (!o->plot.empty()) {
        report::write_tokens_plot(
            nlohmann::json::parse(read_text_file(o->json, "--json results file")), o->plot);
        fmt::print("wrote {}\n", o->plot);
      }
      return;
    }
    run_benchmark(*o);
  });
}

}  // namespace sf::cli
