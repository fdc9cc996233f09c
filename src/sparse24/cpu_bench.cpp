// CPU benchmark: OpenBLAS dense vs SparseFlow 2:4 gemm_cpu on the same magnitude-pruned weights.
#include "sparse24/cpu_bench.hpp"

#include <cblas.h>
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "core/error.hpp"
#include "sparse24/sparse24.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace sf::s24 {

namespace {

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string s = line.substr(colon + 1);
        s.erase(0, s.find_first_not_of(" \t"));
        return s;
      }
    }
  return "unknown";
}

// Debian's OpenBLAS declares cblas_sbgemm in cblas.h but only exports it when built with
// BUILD_BFLOAT16, so look it up at run time instead of linking against it.
using SbgemmFn = void (*)(CBLAS_ORDER, CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, blasint, blasint, blasint,
                          float, const uint16_t*, blasint, const uint16_t*, blasint, float, float*,
                          blasint);
SbgemmFn find_sbgemm() { return reinterpret_cast<SbgemmFn>(dlsym(RTLD_DEFAULT, "cblas_sbgemm")); }

// OpenBLAS and OpenMP worker threads both spin for a while after a call; on a machine with few
// cores the spinning of one starves the other. Pause between phases so each starts on idle cores.
void let_threads_sleep() { std::this_thread::sleep_for(std::chrono::milliseconds(300)); }

template <typename F>
double median_ms(F&& f, int iters) {
  let_threads_sleep();
  for (int i = 0; i < std::min(iters, 3); ++i) f();  // warmup: caches, thread pools, page faults
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    const auto b = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  return t.size() % 2 ? t[t.size() / 2] : 0.5 * (t[t.size() / 2 - 1] + t[t.size() / 2]);
}

std::vector<uint8_t> random_matrix(int64_t rows, int64_t cols, DType dt, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<uint8_t> buf(size_t(rows) * size_t(cols) * dtype_size(dt));
  for (size_t i = 0; i < size_t(rows) * size_t(cols); ++i) store_from_float(buf.data(), dt, i, u(rng));
  return buf;
}

}  // namespace

nlohmann::json benchmark_gemm_cpu(int64_t n, int64_t k, const std::vector<int64_t>& batches,
                                  DType dtype, int iters) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    fail(Status::InvalidArgument, "benchmark_gemm_cpu: dtype must be fp32, fp16 or bf16, found {}",
         dtype_name(dtype));
  if (n <= 0 || k <= 0 || k % 4 != 0)
    fail(Status::InvalidArgument,
         "benchmark_gemm_cpu: expected n > 0 and k > 0 with k % 4 == 0, found n = {}, k = {}", n, k);
  if (iters < 1) fail(Status::InvalidArgument, "benchmark_gemm_cpu: iters must be >= 1, found {}", iters);
  for (int64_t m : batches)
    if (m <= 0) fail(Status::InvalidArgument, "benchmark_gemm_cpu: batch sizes must be > 0, found {}", m);

#ifdef _OPENMP
  const int threads = omp_get_max_threads();
#else
  const int threads = 1;
#endif
  openblas_set_num_threads(threads);  // same thread count for both sides

  // Weights: random, pruned to 2:4 by magnitude, in `dtype`; the library gets an fp32 copy.
  std::vector<uint8_t> wbuf = random_matrix(n, k, dtype, 1234);
  const MatrixView wv{wbuf.data(), dtype, n, k};
  apply_mask(wbuf.data(), dtype, n, k, magnitude_mask(wv));
  const Compressed c = compress(wv);
  std::vector<float> w32(size_t(n) * size_t(k));
  for (size_t i = 0; i < w32.size(); ++i) w32[i] = load_as_float(wbuf.data(), dtype, i);

  const SbgemmFn sbgemm = dtype == DType::BF16 ? find_sbgemm() : nullptr;
  const size_t dense_elem = sbgemm ? 2 : 4;
  const double dense_bytes = double(n) * double(k) * double(dense_elem);
  const double sparse_bytes = double(c.compressed_bytes());

  nlohmann::json out;
  out["device"] = "cpu";
  out["cpu"] = cpu_model_name();
  out["threads"] = threads;
  out["isa"] = cpu_isa_name(cpu_isa());
  out["dense_lib"] = sbgemm ? "OpenBLAS cblas_sbgemm (bf16)" : "OpenBLAS cblas_sgemm (fp32 copy of W)";
  out["n"] = n;
  out["k"] = k;
  out["dtype"] = std::string(dtype_name(dtype));
  out["dense_bytes"] = dense_bytes;
  out["sparse_bytes"] = sparse_bytes;
  out["rows"] = nlohmann::json::array();

  for (int64_t m : batches) {
    std::vector<uint8_t> x = random_matrix(m, k, dtype, 99 + uint64_t(m));
    std::vector<float> x32(size_t(m) * size_t(k));  // converted outside the timed region
    for (size_t i = 0; i < x32.size(); ++i) x32[i] = load_as_float(x.data(), dtype, i);
    std::vector<float> yd(size_t(m) * size_t(n));
    std::vector<uint8_t> ys(size_t(m) * size_t(n) * dtype_size(dtype));

    auto run_dense = [&] {
      if (sbgemm)
        sbgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(m), blasint(n), blasint(k), 1.0f,
               reinterpret_cast<const uint16_t*>(x.data()), blasint(k),
               reinterpret_cast<const uint16_t*>(wbuf.data()), blasint(k), 0.0f, yd.data(), blasint(n));
      else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(m), blasint(n), blasint(k), 1.0f,
                    x32.data(), blasint(k), w32.data(), blasint(k), 0.0f, yd.data(), blasint(n));
    };
    auto run_sparse = [&] { gemm_cpu(c, x.data(), dtype, m, ys.data(), dtype); };

    // Validate before timing.
    run_dense();
    run_sparse();
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < yd.size(); ++i) {
      const double d = double(load_as_float(ys.data(), dtype, i)) - double(yd[i]);
      num += d * d;
      den += double(yd[i]) * double(yd[i]);
    }
    const double rel_err = den > 0 ? std::sqrt(num / den) : std::sqrt(num);

    const double dense_ms = median_ms(run_dense, iters);
    const double sparse_ms = median_ms(run_sparse, iters);
    const double flops = 2.0 * double(m) * double(n) * double(k);
    out["rows"].push_back({{"m", m},
                           {"dense_ms", dense_ms},
                           {"sparse_ms", sparse_ms},
                           {"speedup", dense_ms / sparse_ms},
                           {"dense_gbps", dense_bytes / (dense_ms * 1e6)},
                           {"sparse_gbps", sparse_bytes / (sparse_ms * 1e6)},
                           {"dense_gflops", flops / (dense_ms * 1e6)},
                           {"sparse_gflops", flops / (sparse_ms * 1e6)},
                           {"rel_err", rel_err}});
  }
  return out;
}

}  // namespace sf::s24
