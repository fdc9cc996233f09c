// CPU decode speed of an OPT-125m-shaped model (hidden 768, 12 layers, 12 heads, ffn 3072, vocab
// 50272) with random fp16 weights (stated: random, not trained), dense vs every decoder linear 2:4,
// measured in the same process, alternating dense and 2:4 runs so both see the same machine state.
// Not a test. Build: cmake --build build --target opt_cpu_decode_bench
// Run:   build/tests/model/opt_cpu_decode_bench [--threads N] [--prompt 32] [--tokens 64] [--reps
// 3]
//        [--out bench/results/opt125m_cpu_decode.json]
// Bytes per decode step = every weight read once (linears, lm_head, the token's embedding rows),
// reported as GB/s next to tokens/s.
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "model/generate.hpp"
#include "model/cpu_engine.hpp"
#include "sparse24/sparse24.hpp"
#include "test_models.hpp"

using namespace sf;

namespace {

double weight_bytes_per_token(const model::Model& m) {
  double b = 0;
  for (const auto& [name, t] : m.dense_tensors())
    if (t.shape.size() == 2 && name.find("embed") == std::string::npos)
      b += double(t.numel()) * double(dtype_size(t.dtype));
  for (const auto& [name, c] : m.sparse_tensors()) b += double(c.compressed_bytes());
  b += double(m.lm_head().numel()) *
       double(dtype_size(m.lm_head().dtype));  // tied: embed_tokens as lm_head
  return b;
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, prompt = 32, tokens = 64, reps = 3;
  std::string out_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--threads")
      threads = std::stoi(argv[i + 1]);
    else if (a == "--prompt")
      prompt = std::stoi(argv[i + 1]);
    else if (a == "--tokens")
      tokens = std::stoi(argv[i + 1]);
    else if (a == "--reps")
      reps = std::stoi(argv[i + 1]);
    else if (a == "--out")
      out_path = argv[i + 1];
    else {
      fmt::print(stderr, "unknown option {}\n", a);
      return 2;
    }
  }
  if (threads > 0) omp_set_num_threads(threads);

  test::RandomSpec spec;
  spec.config = test::opt125m_config();
  spec.dtype = DType::F16;
  spec.seed = 125;
  const auto t0 = std::chrono::steady_clock::now();
  auto dense = test::random_opt(spec);
  spec.sparse24 = true;  // same seed: the same weights, then magnitude-pruned and compressed
  auto sparse = test::random_opt(spec);
  fmt::print(stderr, "built both models in {:.1f} s\n",
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

  model::CpuEngine d(*dense), s(*sparse);
  std::vector<int32_t> ids(static_cast<size_t>(prompt));
  for (int i = 0; i < prompt; ++i)
    ids[size_t(i)] = i == 0 ? 2 : int32_t((i * 7919) % spec.config.vocab_size);

  struct Result {
    double best_tps = 0, prefill_ms = 1e300;
    std::vector<double> tps;
  };
  Result rd, rs;
  model::Sampler greedy(model::SamplingParams{});
  // Ignore EOS so every run decodes the same number of tokens.
  auto run = [&](model::CpuEngine& opt, Result& r) {
    model::KvCache cache = opt.make_cache(prompt + tokens);
    auto t = std::chrono::steady_clock::now();
    auto logits = opt.forward(ids, cache);
    r.prefill_ms = std::min(
        r.prefill_ms,
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count());
    t = std::chrono::steady_clock::now();
    for (int i = 0; i < tokens; ++i) {
      const int32_t next = greedy.sample(logits);
      logits = opt.forward(std::span<const int32_t>(&next, 1), cache);
    }
    const double tps =
        tokens / std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    r.tps.push_back(tps);
    r.best_tps = std::max(r.best_tps, tps);
  };
  run(d, rd);  // warm-up (page faults, caches), not counted
  run(s, rs);
  rd = {};
  rs = {};
  for (int rep = 0; rep < reps; ++rep) {
    run(d, rd);
    run(s, rs);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double bd = weight_bytes_per_token(*dense), bs = weight_bytes_per_token(*sparse);
  const double md = median(rd.tps), ms = median(rs.tps);
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));

  fmt::print("OPT-125m shape, random fp16 weights, CPU: {}, {} threads, ISA {}, {}\n", cpu_name(),
             omp_get_max_threads(), s24::cpu_isa_name(s24::cpu_isa()), date);
  fmt::print("prompt {} tokens, then {} decode steps, median of {} runs; load average {}\n", prompt,
             tokens, reps, load_average());
  fmt::print("{:<6} {:>12} {:>12} {:>14} {:>10}\n", "model", "decode tok/s", "prefill ms",
             "MB/token", "GB/s");
  fmt::print("{:<6} {:>12.2f} {:>12.1f} {:>14.1f} {:>10.2f}\n", "dense", md, rd.prefill_ms,
             bd / 1e6, md * bd / 1e9);
  fmt::print("{:<6} {:>12.2f} {:>12.1f} {:>14.1f} {:>10.2f}\n", "2:4", ms, rs.prefill_ms, bs / 1e6,
             ms * bs / 1e9);
  fmt::print("2:4 / dense decode speed: {:.3f}x (bytes ratio {:.3f})\n", ms / md, bs / bd);

  if (!out_path.empty()) {
    nlohmann::ordered_json j = {
        {"benchmark", "opt_cpu_decode_bench"},
        {"model",
         "OPT-125m shape (hidden 768, 12 layers, 12 heads, ffn 3072, vocab 50272), random fp16 "
         "weights"},
        {"cpu", cpu_name()},
        {"threads", omp_get_max_threads()},
        {"isa", s24::cpu_isa_name(s24::cpu_isa())},
        {"date", date},
        {"load_average_at_end", load_average()},
        {"prompt_tokens", prompt},
        {"decode_tokens", tokens},
        {"reps", reps},
        {"dense",
         {{"decode_tokens_per_s_median", md},
          {"runs", rd.tps},
          {"prefill_ms_best", rd.prefill_ms},
          {"weight_bytes_per_token", bd}}},
        {"sparse24",
         {{"decode_tokens_per_s_median", ms},
          {"runs", rs.tps},
          {"prefill_ms_best", rs.prefill_ms},
          {"weight_bytes_per_token", bs}}},
        {"speedup_2to4_over_dense", ms / md},
    };
    std::ofstream(out_path) << j.dump(2) << "\n";
  }
  return 0;
}
