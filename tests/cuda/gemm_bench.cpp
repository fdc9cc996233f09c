// cuda_gemm_bench: runs sf::cuda::benchmark_gemm over several weight shapes (optionally after
// sf::cuda::tune_gemm), prints one table per shape and a summary, writes JSON and Markdown.
// Build: cmake --build build --target cuda_gemm_bench
// Run:   build/tests/cuda/cuda_gemm_bench --sizes 4096x4096,8192x8192 --batches 1,16,2048
//          [--tune] [--tune-batches M,...] [--json F] [--md F] [--iters N]
#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels/cuda/cuda_api.hpp"

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t p = s.find(sep, start);
    out.push_back(s.substr(start, p - start));
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return out;
}

std::string num(const nlohmann::json& v, const char* f) {
  if (!v.is_number()) return "-";
  return fmt::format(fmt::runtime(f), v.get<double>());
}

}  // namespace

int main(int argc, char** argv) {
  std::string sizes = "4096x4096,8192x8192,16384x4096,4096x16384", batches = "1,2,4,8,16,32,64,256,2048,8192";
  std::string json_path, md_path, command, tune_batches;
  bool tune = false;
  int iters = 100;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        fmt::print(stderr, "{} needs a value\n", a);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--sizes") sizes = next();
    else if (a == "--batches") batches = next();
    else if (a == "--json") json_path = next();
    else if (a == "--md") md_path = next();
    else if (a == "--iters") iters = std::atoi(next().c_str());
    else if (a == "--tune") tune = true;
    else if (a == "--tune-batches") {
      tune = true;
      tune_batches = next();
    }
    else {
      fmt::print(stderr, "unknown argument {}\n", a);
      return 2;
    }
  }
  try {
    std::vector<std::pair<int64_t, int64_t>> shapes;
    for (const auto& s : split(sizes, ',')) {
      const auto nk = split(s, 'x');
      shapes.emplace_back(std::stoll(nk.at(0)), std::stoll(nk.at(1)));
    }
    std::vector<int64_t> ms;
    for (const auto& b : split(batches, ',')) ms.push_back(std::stoll(b));

    nlohmann::json all;
    all["command"] = command;
    if (tune) {
      sf::cuda::TuneOptions t;
      t.sizes = shapes;
      t.batches = {};
      if (!tune_batches.empty())
        for (const auto& b : split(tune_batches, ',')) t.batches.push_back(std::stoll(b));
      else  // the benchmark's M values that the table's buckets need, to keep --tune short
        for (int64_t m : ms)
          if (m <= 64 || m == 256 || m == 2048) t.batches.push_back(m);
      t.iters = 40;
      const auto r = sf::cuda::tune_gemm(t);
      fmt::print("tuning cache written to {}\n", r["path"].get<std::string>());
      all["tune"] = r;
    }
    std::string md;
    nlohmann::json results = nlohmann::json::array();
    for (const auto& [n, k] : shapes) {
      sf::cuda::GemmBenchOptions o;
      o.n = n;
      o.k = k;
      o.batches = ms;
      o.iters = iters;
      const auto r = sf::cuda::benchmark_gemm(o);
      results.push_back(r);
      if (md.empty())
        md += fmt::format("GPU: {} ({} SMs, L2 {} MB), {}; HBM read {:.2f} TB/s (the roofline's), cudaMemcpy d2d {:.2f} TB/s "
                          "(read + write), cuBLAS fp16 peak {:.0f} TFLOP/s; "
                          "command: `{}`\n\n",
                          r["gpu"].get<std::string>(), r["sm_count"].get<int>(), r["l2_bytes"].get<int64_t>() >> 20,
                          r["date"].get<std::string>(), r["read_tbps"].get<double>(), r["copy_tbps"].get<double>(),
                          r["dense_peak_tflops"].get<double>(), command);
      md += fmt::format("\n### {} x {} (N x K), fp16\n\n", n, k);
      md += "| M | dense ms | cuSPARSELt ms | 2:4 ms | vs dense | vs cuSPARSELt | cuSPARSELt vs dense | 2:4 TB/s | "
            "2:4 TFLOP/s | roofline | rel err | kernel |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
      for (const auto& row : r["rows"])
        md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", row["m"].get<int64_t>(),
                          num(row["dense_ms"], "{:.4f}"), num(row["cusparselt_ms"], "{:.4f}"),
                          num(row["sparse_ms"], "{:.4f}"), num(row["speedup_vs_dense"], "{:.2f}x"),
                          num(row["speedup_vs_cusparselt"], "{:.2f}x"), num(row["cusparselt_speedup"], "{:.2f}x"),
                          num(row["sparse_tbps"], "{:.2f}"), num(row["sparse_tflops"], "{:.1f}"),
                          num(row["roofline_fraction"], "{:.2f}"), num(row["rel_err"], "{:.1e}"),
                          row["kernel"].get<std::string>());
      fmt::print("{}", md.substr(md.rfind("\n### ")));
      std::fflush(stdout);
    }
    all["results"] = results;
    if (!json_path.empty()) std::ofstream(json_path) << all.dump(1) << "\n";
    if (!md_path.empty()) std::ofstream(md_path) << md;
    // Summary last: speedup vs dense / vs cuSPARSELt per shape and M.
    fmt::print("\nSUMMARY (2:4 speedup vs cuBLAS dense / vs cuSPARSELt; cuSPARSELt vs dense)\n");
    fmt::print("{:>12}", "M");
    for (const auto& [n, k] : shapes) fmt::print(" | {:>26}", fmt::format("{}x{}", n, k));
    fmt::print("\n");
    for (size_t i = 0; i < ms.size(); ++i) {
      fmt::print("{:>12}", ms[i]);
      for (const auto& r : results) {
        const auto& row = r["rows"][i];
        fmt::print(" | {:>26}", fmt::format("{} / {} ; {}", num(row["speedup_vs_dense"], "{:.2f}"),
                                            num(row["speedup_vs_cusparselt"], "{:.2f}"),
                                            num(row["cusparselt_speedup"], "{:.2f}")));
      }
      fmt::print("\n");
    }
  } catch (const sf::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 2;
  }
  return 0;
}
