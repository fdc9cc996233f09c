// sparseflow benchmark --model M --device cuda: whole-model generation speed on the GPU backend.
// Prefill tokens/s, decode tokens/s and ms per step, GPU memory, and the fraction of the HBM limit
// reached: (weight bytes + KV bytes read per decode step) / (device-to-device copy bandwidth
// measured in this process) over the measured step time. Each batch size runs once untimed (it
// captures the decode graph and warms the clocks) and once timed, with the same shapes.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/backends.hpp"
#include "cli/decode_profile.hpp"
#include "cli/table.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "model/cuda_engine.hpp"

namespace sf::cli {

namespace {
std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const std::string item =
        s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    try {
      size_t used = 0;
      const long long v = std::stoll(item, &used);
      if (used != item.size() || v <= 0) throw std::invalid_argument(item);
      out.push_back(v);
    } catch (const std::exception&) {
      fail(Status::InvalidArgument,
           "--batch '{}': expected positive integers separated by commas, e.g. 1,8,64", s);
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

nlohmann::ordered_json print_stages(const std::vector<model::StageProfile>& stages, double bw,
                                    std::FILE* human, const std::string& title) {
  double total = 0;
  for (const auto& st : stages) total += st.ms;
  Table pt({"stage", "launches", "ms/step", "% of step", "GB/step", "GB/s", "% of HBM read"});
  nlohmann::ordered_json js = nlohmann::json::array();
  for (const auto& st : stages) {
    const double gbps = st.bytes / (st.ms * 1e-3) / 1e9;
    pt.add_row({st.stage, std::to_string(st.launches), format_number(st.ms),
                format_number(100.0 * st.ms / total), format_number(st.bytes / 1e9),
                st.bytes > 0 ? format_number(gbps) : "-",
                st.bytes > 0 ? format_number(100.0 * gbps * 1e9 / bw) : "-"});
    js.push_back(
        {{"stage", st.stage}, {"launches", st.launches}, {"ms", st.ms}, {"bytes", st.bytes}});
  }
  fmt::print(human, "\n{} ({:.3f} ms/step in all):\n{}", title, total, pt.str());
  return js;
}
}  // namespace

std::pair<nlohmann::ordered_json, nlohmann::ordered_json> print_decode_profile(
    model::CudaEngine& gpu, int64_t prompt_tokens, int64_t new_tokens, double bw,
    std::FILE* human) {
  const int64_t steps = std::clamp<int64_t>(new_tokens - 1, 1, 32);
  auto eager = print_stages(
      gpu.profile_decode(prompt_tokens, steps, 1), bw, human,
      fmt::format("decode step by stage (batch 1, {} eager steps after a {}-token prompt, an "
                  "event after each stage; launch gaps included)",
                  steps, prompt_tokens));
  auto graph = print_stages(
      gpu.profile_decode_graph(prompt_tokens, steps, 1), bw, human,
      fmt::format("the same on the CUDA graph ({} replays with the events inside it: the "
                  "timed steps' launches and overlaps, plus the events' own cost)",
                  steps));
  return {std::move(eager), std::move(graph)};
}

void run_model_benchmark(const std::string& model_path, const std::string& device,
                         const std::string& batches, int64_t prompt_tokens, int64_t new_tokens,
                         const std::string& sparsity, const std::string& json_path, bool profile) {
  if (device != "cuda")
    fail(Status::InvalidArgument,
         "benchmark --model runs on the GPU backend; add --device cuda (for the CPU, "
         "time `sparseflow generate --device cpu`).");
  if (prompt_tokens < 1 || new_tokens < 2)
    fail(Status::InvalidArgument,
         "--prompt-tokens must be >= 1 and --new-tokens >= 2 (got {} and {}).", prompt_tokens,
         new_tokens);
  const auto bs = parse_list(batches.empty() ? "1" : batches);
  std::FILE* human = json_path == "-" ? stderr : stdout;

  auto t0 = std::chrono::steady_clock::now();
  model::OpenOptions oo;
  oo.sparsity = sparsity;
  oo.verify_checksums = false;  // 13 GB of xxh64 is not what this command measures
  auto model = model::Model::open(model_path, oo);
  const double open_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  t0 = std::chrono::steady_clock::now();
  const auto engine = backend::require_cuda("benchmark --model").open_model(*model, {});
  model::CudaEngine& gpu = *engine;
  const double upload_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto& c = gpu.config();
  if (prompt_tokens + new_tokens > c.max_position_embeddings)
    fail(Status::InvalidArgument,
         "--prompt-tokens {} + --new-tokens {} exceeds max_position_embeddings {}.", prompt_tokens,
         new_tokens, c.max_position_embeddings);
  const double copy_bw = gpu.measure_copy_bandwidth();
  // The decode ceiling: a step reads every weight once and writes next to nothing, so the limit is
  // the read bandwidth a streaming kernel reaches (above cudaMemcpy's read + write rate).
  const double bw = std::max(gpu.measure_read_bandwidth(), copy_bw);
  const size_t wbytes = gpu.weight_bytes_per_step();
  fmt::print(human,
             "model {}: {} layers, hidden {}, ffn {}, {} weights; opened in {:.1f} s, uploaded to "
             "{} in {:.1f} s\n",
             model_path, c.num_hidden_layers, c.hidden_size, c.ffn_dim,
             gpu.sparse() ? "2:4" : "dense", open_s, gpu.device_name(), upload_s);
  fmt::print(human,
             "HBM read: {:.0f} GB/s (a streaming kernel; device-to-device copy {:.0f} GB/s read + "
             "written); "
             "weight bytes per decode step: {:.3f} GB\n",
             bw / 1e9, copy_bw / 1e9, double(wbytes) / 1e9);

  // Where, when and how (read by `sparseflow audit` as the measurement's provenance).
  char date[16] = "";
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  const std::string command = fmt::format(
      "sparseflow benchmark --model {} --device cuda --prompt-tokens {} --new-tokens {} --batch "
      "{}{}",
      model_path, prompt_tokens, new_tokens, batches.empty() ? "1" : batches,
      sparsity.empty() ? "" : " --sparsity " + sparsity);
  nlohmann::ordered_json result = {{"gpu", gpu.device_name()},
                                   {"date", date},
                                   {"command", command},
                                   {"model", model_path},
                                   {"weights", gpu.sparse() ? "2:4" : "dense"},
                                   {"dtype", std::string(dtype_name(model->dtype()))},
                                   {"architecture", c.arch},
                                   {"layers", c.num_hidden_layers},
                                   {"hidden", c.hidden_size},
                                   {"ffn", c.ffn_dim},
                                   {"kv_heads", c.num_key_value_heads},
                                   {"vocab", c.vocab_size},
                                   {"copy_bandwidth_GBps", copy_bw / 1e9},
                                   {"read_bandwidth_GBps", bw / 1e9},
                                   {"weight_bytes_per_step", wbytes},
                                   {"upload_s", upload_s},
                                   {"rows", nlohmann::json::array()}};
  // Prefill against cuBLAS alone: the dense GEMMs of the same prefill, timed in this process.
  const double gemm_ms = gpu.dense_gemm_prefill_ms(prompt_tokens);
  Table t({"batch", "prompt", "new", "prefill tok/s", "% of cuBLAS GEMMs", "decode tok/s",
           "ms/step", "HBM limit ms", "% of HBM limit"});
  std::mt19937_64 rng(1234);
  for (int64_t B : bs) {
    std::vector<std::vector<int32_t>> prompts(size_t(B),
                                              std::vector<int32_t>(size_t(prompt_tokens), 0));
    for (auto& p : prompts) {
      p[0] = int32_t(c.bos_token_id);
      for (size_t i = 1; i < p.size(); ++i) p[i] = int32_t(4 + rng() % uint64_t(c.vocab_size - 4));
    }
    model::SamplingParams greedy;
    gpu.generate_batch(prompts, new_tokens, greedy);  // untimed: captures the graph, warms up
    const auto r = gpu.generate_batch(prompts, new_tokens, greedy);
    const double ms_step = r.decode_ms / double(r.decode_steps);
    const double kv = double(gpu.kv_bytes_per_step(prompt_tokens + new_tokens / 2, B));
    const double limit_ms = (double(wbytes) + kv) / bw * 1e3;
    const double frac = limit_ms / ms_step;
    const double prefill_tps = double(B * prompt_tokens) / (r.prefill_ms * 1e-3);
    const double prefill_vs_gemm =
        double(B) * gemm_ms / r.prefill_ms;  // prompts are prefilled one by one
    const double decode_tps = double(B * r.decode_steps) / (r.decode_ms * 1e-3);
    t.add_row({std::to_string(B), std::to_string(prompt_tokens), std::to_string(new_tokens),
               format_number(prefill_tps), format_number(100.0 * prefill_vs_gemm),
               format_number(decode_tps), format_number(ms_step), format_number(limit_ms),
               format_number(100.0 * frac)});
    const std::vector<int32_t> first(
        r.ids[0].begin(), r.ids[0].begin() + std::min<ptrdiff_t>(8, ptrdiff_t(r.ids[0].size())));
    const nlohmann::ordered_json row = {{"batch", B},
                                        {"prompt_tokens", prompt_tokens},
                                        {"new_tokens", new_tokens},
                                        {"prefill_ms", r.prefill_ms},
                                        {"prefill_tokens_per_s", prefill_tps},
                                        {"cublas_gemm_prefill_ms", double(B) * gemm_ms},
                                        {"prefill_fraction_of_cublas_gemms", prefill_vs_gemm},
                                        {"decode_steps", r.decode_steps},
                                        {"decode_ms", r.decode_ms},
                                        {"ms_per_step", ms_step},
                                        {"decode_tokens_per_s", decode_tps},
                                        {"kv_bytes_per_step", kv},
                                        {"hbm_limit_ms_per_step", limit_ms},
                                        {"hbm_fraction", frac},
                                        {"first_ids", first}};
    result["rows"].push_back(row);
  }
  const auto mem = gpu.memory();
  result["memory"] = {{"weights", mem.weights},
                      {"kv_cache", mem.kv_cache},
                      {"workspace", mem.workspace},
                      {"device_total", mem.device_total},
                      {"device_peak_used", mem.device_peak_used}};
  fmt::print(human, "{}", t.str());
  fmt::print(human,
             "GPU memory: weights {:.2f} GB, KV cache {:.2f} GB, workspace {:.2f} GB; peak used on "
             "the device "
             "{:.2f} of {:.2f} GB\n",
             mem.weights / 1e9, mem.kv_cache / 1e9, mem.workspace / 1e9, mem.device_peak_used / 1e9,
             mem.device_total / 1e9);
  fmt::print(human,
             "HBM limit = (weight bytes + KV bytes at the mean length) / measured HBM read "
             "bandwidth; ms/step "
             "is one decode step of the whole batch (CUDA graph replay, greedy sampling on the "
             "GPU). % of cuBLAS "
             "GEMMs = the time cuBLAS alone needs for the prefill's dense GEMMs (same shapes, this "
             "process) over "
             "the whole prefill's time.\n");
  if (profile) {
    auto [eager, graph] = print_decode_profile(gpu, prompt_tokens, new_tokens, bw, human);
    result["profile"] = std::move(eager);
    result["profile_graph"] = std::move(graph);
    // The prefill of the same prompt by stage: where the time goes against cuBLAS's GEMMs alone.
    const auto pstages = gpu.profile_prefill(prompt_tokens);
    double ptotal = 0;
    for (const auto& st : pstages) ptotal += st.ms;
    Table ft({"stage", "launches", "ms", "% of prefill", "TFLOP", "TFLOP/s"});
    nlohmann::ordered_json pjs = nlohmann::json::array();
    for (const auto& st : pstages) {
      ft.add_row({st.stage, std::to_string(st.launches), format_number(st.ms),
                  format_number(100.0 * st.ms / ptotal),
                  st.bytes > 0 ? format_number(st.bytes / 1e12) : "-",
                  st.bytes > 0 ? format_number(st.bytes / (st.ms * 1e-3) / 1e12) : "-"});
      pjs.push_back(
          {{"stage", st.stage}, {"launches", st.launches}, {"ms", st.ms}, {"flops", st.bytes}});
    }
    fmt::print(human,
               "\nprefill of {} tokens by stage (batch 1, eager, one event per stage; {:.2f} ms in "
               "all, cuBLAS "
               "alone on the dense GEMMs {:.2f} ms):\n{}",
               prompt_tokens, ptotal, gemm_ms, ft.str());
    result["prefill_profile"] = pjs;
    if (const std::string plans = gpu.prefill_plans(); !plans.empty())
      fmt::print(human,
                 "\ncuBLASLt plans of the dense products (candidate:ms when timed; "
                 "SPARSEFLOW_LT_TUNE=0 takes "
                 "the heuristic's first):\n{}",
                 plans);
  }
  if (json_path == "-") {
    fmt::print("{}\n", result.dump(2));
  } else if (!json_path.empty()) {
    const std::string text = result.dump(2) + "\n";
    AtomicFile f(json_path);
    f.write(text.data(), text.size());
    f.commit();
    fmt::print(human, "wrote {}\n", json_path);
  }
}

}  // namespace sf::cli
