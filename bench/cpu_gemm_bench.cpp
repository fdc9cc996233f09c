// CPU kernel lab: OpenBLAS dense vs SparseFlow 2:4 gemm_cpu, printed as a table plus JSON.
// Build: cmake -S . -B build -DSPARSEFLOW_CUDA=OFF && cmake --build build --target cpu_gemm_bench
// Run:   build/src/sparse24/cpu_gemm_bench [N K dtype iters M...]   (defaults: 4096 4096 fp16 20 1 16 256)
#include <fmt/format.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "sparse24/cpu_bench.hpp"

int main(int argc, char** argv) {
  try {
    const int64_t n = argc > 1 ? std::atoll(argv[1]) : 4096;
    const int64_t k = argc > 2 ? std::atoll(argv[2]) : 4096;
    const auto dt = sf::dtype_from_cli(argc > 3 ? argv[3] : "fp16");
    const int iters = argc > 4 ? std::atoi(argv[4]) : 20;
    std::vector<int64_t> ms;
    for (int i = 5; i < argc; ++i) ms.push_back(std::atoll(argv[i]));
    if (ms.empty()) ms = {1, 16, 256};
    if (!dt) {
      fmt::print(stderr, "unknown dtype '{}': use fp32, fp16 or bf16\n", argv[3]);
      return 2;
    }
    const auto j = sf::s24::benchmark_gemm_cpu(n, k, ms, *dt, iters);
    fmt::print("{} | {} threads | isa {} | {}\nN={} K={} {}\n", j["cpu"].get<std::string>(),
               j["threads"].get<int>(), j["isa"].get<std::string>(), j["dense_lib"].get<std::string>(),
               n, k, j["dtype"].get<std::string>());
    fmt::print("{:>5} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}\n", "M", "dense ms", "2:4 ms",
               "speedup", "dense GB/s", "2:4 GB/s", "dense GF/s", "2:4 GF/s", "rel_err");
    for (const auto& r : j["rows"])
      fmt::print("{:>5} {:>10.3f} {:>10.3f} {:>8.2f} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.2e}\n",
                 r["m"].get<int64_t>(), r["dense_ms"].get<double>(), r["sparse_ms"].get<double>(),
                 r["speedup"].get<double>(), r["dense_gbps"].get<double>(), r["sparse_gbps"].get<double>(),
                 r["dense_gflops"].get<double>(), r["sparse_gflops"].get<double>(),
                 r["rel_err"].get<double>());
    fmt::print("{}\n", j.dump());
  } catch (const sf::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
