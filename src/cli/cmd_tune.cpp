// sparseflow tune: measure SparseFlow's 2:4 GEMM configurations (and the dense fallback, with
// cuBLAS dense for reference) on this GPU for the given weight shapes and batch sizes, and write
// the winners to the tuning cache the runtime reads (docs/KERNELS.md, "Tuning cache").
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <charconv>
#include <memory>
#include <string>
#include <vector>

#include "backend/backends.hpp"
#include "cli/commands.hpp"
#include "core/error.hpp"

namespace sf::cli {

namespace {

struct TuneCliOptions {
  std::vector<std::string> sizes = {"4096x4096"};
  std::string batches = "1,2,4,8,16,32,64,256,2048", dtype = "fp16", output;
  int iters = 50;
};

int64_t parse_int(std::string_view s, const std::string& what) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v <= 0)
    fail(Status::InvalidArgument, "{}: '{}' is not a positive integer", what, s);
  return v;
}

void run_tune(const TuneCliOptions& o) {
  const backend::CudaBackend& gpu = backend::require_cuda("tune");
  if (const std::string why = gpu.sparse_kernels_unavailable_reason(); !why.empty())
    fail(Status::NoDevice, "tune: {}", why);
  sf::cuda::TuneOptions t;
  t.sizes.clear();
  for (const auto& s : o.sizes) {
    const size_t x = s.find_first_of("xX");
    if (x == std::string::npos)
      fail(Status::InvalidArgument, "--size '{}': expected NxK, e.g. 4096x4096 (W is [N, K])", s);
    const int64_t n = parse_int(std::string_view(s).substr(0, x), "--size N");
    const int64_t k = parse_int(std::string_view(s).substr(x + 1), "--size K");
    if (k % 4)
      fail(Status::InvalidArgument, "--size '{}': K must be a multiple of 4 for 2:4 sparsity", s);
    t.sizes.emplace_back(n, k);
  }
  t.batches.clear();
  size_t start = 0;
  while (true) {
    const size_t comma = o.batches.find(',', start);
    t.batches.push_back(
        parse_int(std::string_view(o.batches).substr(start, comma - start), "--batch"));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  t.dtype = o.dtype == "bf16" ? DType::BF16 : DType::F16;
  t.output = o.output;
  t.iters = o.iters;
  const auto r = gpu.tune_gemm(t);
  fmt::print("{:>7} {:>7} {:>6}  {:<26} {:>10} {:>10}\n", "N", "K", "M", "chosen kernel", "ms",
             "dense ms");
  for (const auto& e : r["entries"])
    fmt::print("{:>7} {:>7} {:>6}  {:<26} {:>10.4f} {:>10.4f}\n", e["n"].get<int64_t>(),
               e["k"].get<int64_t>(), e["m"].get<int64_t>(), e["kernel"].get<std::string>(),
               e["ms"].get<double>(), e["dense_ms"].get<double>());
  fmt::print("tuning cache written to {}\n", r["path"].get<std::string>());
}

}  // namespace

void add_tune_command(CLI::App& app) {
  auto o = std::make_shared<TuneCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "tune", "Measure the 2:4 GEMM kernels on this GPU and write the tuning cache");
  cmd->add_option("--size", o->sizes, "Weight shapes NxK (W is [N, K]); repeat for several")
      ->capture_default_str();
  cmd->add_option("--batch", o->batches, "Comma-separated M values to tune")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "fp16 or bf16")
      ->check(CLI::IsMember({"fp16", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--output", o->output,
                  "Cache file (default $SPARSEFLOW_TUNE_CACHE, else "
                  "$XDG_CACHE_HOME/sparseflow/tune-<gpu>.json)");
  cmd->add_option("--iters", o->iters, "Timed launches per measurement")->capture_default_str();
  cmd->callback([o] { run_tune(*o); });
}

}  // namespace sf::cli
