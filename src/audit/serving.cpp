#include "audit/serving.hpp"

#include <fmt/format.h>

#include <cmath>

#include "audit/costs.hpp"
#include "core/error.hpp"

namespace sf::audit {

namespace {

std::string where(const ServeMeasurement& m) {
  return m.prov.origin;
}

std::string provenance(const ServeMeasurement& m) {
  return fmt::format("{}: `{}` on {} ({})", m.prov.origin,
                     m.prov.command.empty() ? "command not recorded" : m.prov.command,
                     m.prov.gpu.empty() ? "no GPU recorded" : m.prov.gpu,
                     m.prov.date.empty() ? "date not recorded" : m.prov.date);
}

// The shape or limit `asked` (an audit flag) against what each measurement has, or, when not
// asked, the two measurements against each other. bench_flag: the bench-serve flag that sets it.
void check_same(const char* what, const char* flag, const char* bench_flag,
                std::optional<double> asked, double dense, double sparse, const ServeMeasurement& d,
                const ServeMeasurement& s) {
  if (asked) {
    for (auto [m, v] : {std::pair{&d, dense}, std::pair{&s, sparse}})
      if (v != *asked)
        fail(Status::InvalidArgument,
             "{} was measured with {} {}, not the {} asked by {}: goodput depends on it, so this "
             "measurement cannot answer the audit. Pass {} {} to audit the load that was "
             "measured, or measure again with `sparseflow bench-serve ... {} {}`",
             where(*m), what, v, *asked, flag, flag, v, bench_flag, *asked);
    return;
  }
  if (dense != sparse)
    fail(Status::InvalidArgument,
         "the dense measurement {} has {} {} and the 2:4 one {} has {}: compare the servers on "
         "the same load, e.g. measure the 2:4 server again with `sparseflow bench-serve ... {} "
         "{}`",
         where(d), what, dense, where(s), sparse, bench_flag, dense);
}

}  // namespace

const ServePoint& best_point(const ServeMeasurement& m) {
  if (!m.latency_limit_ms)
    fail(Status::InvalidArgument,
         "{} was measured without --latency-limit-ms, so it has no goodput; measure again with "
         "`sparseflow bench-serve ... --latency-limit-ms L`",
         where(m));
  if (m.points.empty()) fail(Status::InvalidArgument, "{} holds no measured rate", where(m));
  const ServePoint* best = &m.points.front();
  for (const auto& p : m.points)
    if (p.goodput > best->goodput) best = &p;
  if (!(best->goodput > 0))
    fail(Status::InvalidArgument,
         "{}: no request met the latency limit of {} ms at any measured rate ({} points), so one "
         "GPU serves no load within it. Measure lower rates (--sweep), or audit a larger "
         "--latency-limit-ms measured as such",
         where(m), *m.latency_limit_ms, m.points.size());
  return *best;
}

ServingReport run_serving_audit(const ServingRequest& req, const std::string& model,
                                const ServeMeasurement& dense, const ServeMeasurement& sparse) {
  if (!std::isfinite(req.qps) || !(req.qps > 0))
    fail(Status::InvalidArgument, "--qps must be a finite number > 0, found {}", req.qps);
  if (req.latency_limit_ms && !(*req.latency_limit_ms > 0 && std::isfinite(*req.latency_limit_ms)))
    fail(Status::InvalidArgument, "--latency-limit-ms must be a finite number > 0, found {}",
         *req.latency_limit_ms);
  for (const auto* m : {&dense, &sparse}) {
    if (!m->latency_limit_ms) best_point(*m);  // throws, saying so
    if (m->prov.gpu.empty())
      fail(Status::InvalidArgument,
           "{} does not say which GPU the server ran on: the audit counts GPUs, one server per "
           "GPU. Measure again with `sparseflow bench-serve ... --gpu \"NVIDIA H100 80GB HBM3\"` "
           "(the name nvidia-smi gives)",
           where(*m));
  }
  check_same("prompt tokens", "--tokens-in", "--prompt-tokens", req.tokens_in,
             double(dense.prompt_tokens), double(sparse.prompt_tokens), dense, sparse);
  check_same("max tokens", "--tokens-out", "--max-tokens", req.tokens_out, double(dense.max_tokens),
             double(sparse.max_tokens), dense, sparse);
  check_same("latency limit (ms)", "--latency-limit-ms", "--latency-limit-ms", req.latency_limit_ms,
             *dense.latency_limit_ms, *sparse.latency_limit_ms, dense, sparse);
  if (dense.chat != sparse.chat)
    fail(Status::InvalidArgument,
         "{} measured {} and {} measured {}: the chat template changes the prompt, so compare "
         "the same endpoint (bench-serve --chat on both or neither)",
         where(dense), dense.chat ? "/v1/chat/completions" : "/v1/completions", where(sparse),
         sparse.chat ? "/v1/chat/completions" : "/v1/completions");
  if (!name_matches(dense.prov.gpu, sparse.prov.gpu) ||
      !name_matches(sparse.prov.gpu, dense.prov.gpu))
    fail(Status::InvalidArgument,
         "the dense server ran on \"{}\" ({}) and the 2:4 one on \"{}\" ({}): compare them on one "
         "kind of GPU",
         dense.prov.gpu, where(dense), sparse.prov.gpu, where(sparse));
  if (req.gpu && !name_matches(dense.prov.gpu, *req.gpu))
    fail(Status::InvalidArgument,
         "--gpu {}: the measurements were made on \"{}\"; pass a --gpu that occurs in that name, "
         "or measurements made on your GPU",
         *req.gpu, dense.prov.gpu);

  ServingReport r;
  r.model = model;
  r.gpu = dense.prov.gpu;
  r.qps = req.qps;
  r.prompt_tokens = dense.prompt_tokens;
  r.max_tokens = dense.max_tokens;
  r.latency_limit_ms = *dense.latency_limit_ms;
  const auto limit = fmt::format("{} ms", r.latency_limit_ms);
  r.assumptions.push_back(
      {"load", fmt::format("{} requests/s, sustained all year", req.qps), "user flag --qps"});
  r.assumptions.push_back(
      {"request shape",
       fmt::format("about {} prompt tokens, up to {} generated ({})", r.prompt_tokens, r.max_tokens,
                   dense.chat ? "chat completions" : "completions"),
       fmt::format("the bench-serve measurements (--prompt-tokens, --max-tokens){}",
                   req.tokens_in || req.tokens_out ? ", as --tokens-in/--tokens-out ask" : "")});
  r.assumptions.push_back(
      {"latency limit",
       fmt::format("a request counts when its time to first token is <= {0} and the p99 of its "
                   "own inter-token gaps is <= {0}",
                   limit),
       req.latency_limit_ms ? "user flag --latency-limit-ms, as measured"
                            : "the measurements' --latency-limit-ms"});
  r.assumptions.push_back(
      {"GPUs needed", "ceil(qps / goodput per GPU), goodput: requests/s that met the limit",
       fmt::format("one server = one GPU: each measured server ran on one {} (bench-serve --gpu); "
                   "replicas scale linearly behind a load balancer that spreads requests evenly; "
                   "no headroom for peaks",
                   r.gpu)});
  r.assumptions.push_back(
      {"model", model,
       fmt::format("--model names the load; the audit uses the measured goodput, not the model's "
                   "shape. Served models: dense \"{}\", 2:4 \"{}\" (their /v1/models ids)",
                   dense.served_model, sparse.served_model)});

  for (auto [side, m, label] :
       {std::tuple{&r.dense, &dense, "dense"}, std::tuple{&r.sparse, &sparse, "2:4"}}) {
    side->label = label;
    side->point = best_point(*m);
    side->goodput_per_gpu = side->point.goodput;
    side->gpus = gpus_needed(req.qps, side->goodput_per_gpu);
    side->measured_by = provenance(*m);
    const ServePoint& p = side->point;
    r.assumptions.push_back(
        {fmt::format("{} goodput per GPU", label),
         fmt::format("{:.4g} requests/s within the limit at offered rate {} req/s ({} of {} "
                     "requests met it; TTFT p99 {:.1f} ms, ITL p99 {:.1f} ms; {:.4g} output "
                     "tokens/s)",
                     p.goodput, p.rate, p.good, p.requests, p.ttft_p99_ms, p.itl_p99_ms,
                     p.output_tokens_per_s),
         fmt::format("measured: {}; the highest goodput of its {} offered rate{}, concurrency {}",
                     side->measured_by, m->points.size(), m->points.size() == 1 ? "" : "s",
                     m->concurrency > 0 ? std::to_string(m->concurrency) : "unlimited")});
  }

  const CostInputs in{req.price_per_gpu_hour, req.power_watts, req.grid_g_per_kwh};
  const CostModel cm = cost_model(in, r.gpu, find_gpu(r.gpu));
  r.assumptions.insert(r.assumptions.end(), cm.assumptions.begin(), cm.assumptions.end());
  r.not_computed = cm.not_computed;
  for (ServingSide* s : {&r.dense, &r.sparse}) {
    const YearlyFigures y = yearly_figures(s->gpus, in, cm);
    s->cost_per_year = y.cost;
    s->kwh_per_year = y.kwh;
    s->tonnes_co2_per_year = y.tonnes_co2;
  }
  return r;
}

}  // namespace sf::audit
