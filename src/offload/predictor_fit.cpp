#include "offload/predictor_fit.hpp"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/progress.hpp"
#include "model/cpu_engine.hpp"
#include "offload/neuron_store.hpp"
#include "offload/profile.hpp"

// LAPACK from OpenBLAS (column-major, Fortran calling convention).
extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
void dsyevr_(const char* jobz, const char* range, const char* uplo, const int* n, double* a,
             const int* lda, const double* vl, const double* vu, const int* il, const int* iu,
             const double* abstol, int* m, double* w, double* z, const int* ldz, int* isuppz,
             double* work, const int* lwork, int* iwork, const int* liwork, int* info);
}

namespace sf::offload {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Top-r eigenvectors (largest eigenvalues) of the symmetric n x n matrix k (column-major, lower
// triangle used; destroyed), returned column-major n x r, largest first.
std::vector<double> top_eigenvectors(std::vector<double>& k, int n, int r) {
  const int il = n - r + 1, iu = n;
  const double zero = 0, abstol = 0;
  int m = 0, info = 0, lwork = -1, liwork = -1, iwq = 0;
  double wq = 0;
  std::vector<double> w(static_cast<size_t>(n)), z(size_t(n) * size_t(r));
  std::vector<int> isuppz(static_cast<size_t>(2 * r));
  dsyevr_("V", "I", "L", &n, k.data(), &n, &zero, &zero, &il, &iu, &abstol, &m, w.data(), z.data(),
          &n, isuppz.data(), &wq, &lwork, &iwq, &liwork, &info);
  lwork = int(wq) + 1;
  liwork = iwq + 1;
  std::vector<double> work(static_cast<size_t>(lwork));
  std::vector<int> iwork(static_cast<size_t>(liwork));
  dsyevr_("V", "I", "L", &n, k.data(), &n, &zero, &zero, &il, &iu, &abstol, &m, w.data(), z.data(),
          &n, isuppz.data(), work.data(), &lwork, iwork.data(), &liwork, &info);
  if (info != 0 || m != r)
    fail(Status::Internal, "predictor fit: the eigensolver failed (info {}, {} of {} vectors)",
         info, m, r);
  // Ascending -> largest first.
  std::vector<double> out(z.size());
  for (int c = 0; c < r; ++c)
    std::memcpy(out.data() + size_t(c) * n, z.data() + size_t(r - 1 - c) * n, size_t(n) * 8);
  return out;
}

struct Eval {
  int64_t positives = 0, predicted = 0, hits = 0, cells = 0;
  double recall() const { return positives ? double(hits) / double(positives) : 1.0; }
  double precision() const { return predicted ? double(hits) / double(predicted) : 1.0; }
};

}  // namespace

FittedPredictor fit_layer(const float* a, const float* z, int64_t T, int64_t heldout, int64_t d,
                          int64_t F, const PredictorFitOptions& opt) {
  const int64_t T1 = T - heldout;
  if (T1 < 2)
    fail(Status::InvalidArgument, "predictor fit: {} fit tokens; give more calibration text", T1);
  const int R = int(std::clamp<int64_t>(opt.rank, 1, std::min(d, F)));
  FittedPredictor P;
  P.rank = R;
  P.hidden = d;
  P.ffn = F;
  P.fit_tokens = T1;
  P.heldout_tokens = heldout;

  // Means and centred, column-major fp64 copies of the fit rows.
  std::vector<double> abar(static_cast<size_t>(d), 0.0), zbar(size_t(F), 0.0);
  for (int64_t t = 0; t < T1; ++t) {
    for (int64_t i = 0; i < d; ++i) abar[size_t(i)] += a[t * d + i];
    for (int64_t j = 0; j < F; ++j) zbar[size_t(j)] += z[t * F + j];
  }
  for (auto& x : abar) x /= double(T1);
  for (auto& x : zbar) x /= double(T1);
  std::vector<double> ac(static_cast<size_t>(T1 * d)),
      zc(size_t(T1 * F));  // [T1, d], [T1, F] column-major
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < d; ++i)
    for (int64_t t = 0; t < T1; ++t) ac[size_t(i * T1 + t)] = a[t * d + i] - abar[size_t(i)];
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < F; ++j)
    for (int64_t t = 0; t < T1; ++t) zc[size_t(j * T1 + t)] = z[t * F + j] - zbar[size_t(j)];

  // G = Ac' Ac + ridge, G = L L'.
  auto factor = [&](std::vector<double>& g) {
    double tr = 0;
    for (int64_t i = 0; i < d; ++i) tr += g[size_t(i * d + i)];
    const double lambda = opt.ridge * std::max(tr / double(d), 1e-12);
    for (int64_t i = 0; i < d; ++i) g[size_t(i * d + i)] += lambda;
    int info = 0, n = int(d);
    dpotrf_("L", &n, g.data(), &n, &info);
    if (info != 0)
      fail(Status::Internal, "predictor fit: the Gram matrix is not positive definite (info {})",
           info);
  };
  std::vector<double> g, q, vcm;  // L (lower), Q [d, R], V = Q' C [R, F], all column-major
  bool solved = false;
  if (opt.gpu_solver) {
    // The O(d^2 ffn) products on the GPU in fp64 (offload/cuda/predictor_fit_cuda.cpp); the
    // Cholesky factor and the eigenvectors stay here. Any failure falls back to the CPU below.
    try {
      const auto gr = opt.gpu_solver(ac.data(), zc.data(), T1, d, F);
      g = gr->gram();
      factor(g);
      std::vector<double> k = gr->whitened_covariance(g);
      q = top_eigenvectors(k, int(d), R);
      vcm = gr->project(q, R);
      solved = true;
      P.fitted_on_gpu = true;
      std::vector<double>().swap(
          zc);  // on the device; kept on the host until here for the CPU fallback
    } catch (const std::exception& e) {
      fmt::print(stderr, "predictor fit: the GPU path failed ({}); fitting on the CPU\n", e.what());
    }
  }
  if (!solved) {
    g.assign(size_t(d * d), 0.0);
    cblas_dsyrk(CblasColMajor, CblasLower, CblasTrans, int(d), int(T1), 1.0, ac.data(), int(T1),
                0.0, g.data(), int(d));
    factor(g);
    // C = L^-1 Ac' Zc  [d, F]; the best rank-R fit of C in the whitened space is the answer.
    std::vector<double> c(static_cast<size_t>(d * F));
    cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, int(d), int(F), int(T1), 1.0, ac.data(),
                int(T1), zc.data(), int(T1), 0.0, c.data(), int(d));
    std::vector<double>().swap(zc);  // C holds what it was needed for
    cblas_dtrsm(CblasColMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, int(d), int(F),
                1.0, g.data(), int(d), c.data(), int(d));
    std::vector<double> k(static_cast<size_t>(d * d), 0.0);
    cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, int(d), int(F), 1.0, c.data(), int(d), 0.0,
                k.data(), int(d));
    q = top_eigenvectors(k, int(d), R);  // [d, R]
    vcm.resize(size_t(R) * size_t(F));
    cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, R, int(F), int(d), 1.0, q.data(), int(d),
                c.data(), int(d), 0.0, vcm.data(), R);
  }
  std::vector<double> ucm = q;  // U = L^-T Q  [d, R]
  cblas_dtrsm(CblasColMajor, CblasLeft, CblasLower, CblasTrans, CblasNonUnit, int(d), R, 1.0,
              g.data(), int(d), ucm.data(), int(d));

  // Balance each rank-1 term's scale between U and V (fp16 has a narrow range), then round.
  P.u.resize(size_t(d) * R);
  P.v.resize(size_t(R) * size_t(F));
  std::vector<float> uf(P.u.size()), vf(P.v.size());  // the rounded values, row-major
  for (int r = 0; r < R; ++r) {
    double nu = 0, nv = 0;
    for (int64_t i = 0; i < d; ++i) nu = std::max(nu, std::abs(ucm[size_t(r) * d + i]));
    for (int64_t j = 0; j < F; ++j) nv = std::max(nv, std::abs(vcm[size_t(j) * R + r]));
    const double s = nu > 0 && nv > 0 ? std::sqrt(nv / nu) : 1.0;
    for (int64_t i = 0; i < d; ++i) {
      const uint16_t h = float_to_half(float(ucm[size_t(r) * d + i] * s));
      P.u[size_t(i) * R + r] = h;
      uf[size_t(i) * R + r] = half_to_float(h);
    }
    for (int64_t j = 0; j < F; ++j) {
      const uint16_t h = float_to_half(float(vcm[size_t(j) * R + r] / s));
      P.v[size_t(r) * F + j] = h;
      vf[size_t(r) * F + j] = half_to_float(h);
    }
  }

  // Scores a U V of every token (fp32, with the rounded factors), the offset c and residual stds.
  std::vector<float> proj(size_t(T) * R), score(size_t(T) * size_t(F));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), R, int(d), 1.0f, a, int(d),
              uf.data(), R, 0.0f, proj.data(), R);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), int(F), R, 1.0f, proj.data(), R,
              vf.data(), int(F), 0.0f, score.data(), int(F));
  // Leverage of each fit token under the fitted (rank-R, whitened) linear smoother:
  // h_t = 1/T1 + ||Q' L^-1 (a_t - abar)||^2. Residuals divided by (1 - h_t) are the leave-one-out
  // residuals (exact for least squares with Q held fixed), so the residual spreads and the
  // threshold below are what unseen tokens will see, not the optimistic in-sample ones (with
  // T1 ~ d the in-sample recall overstated held-out recall by 2-4 points on opt-6.7b shapes).
  std::vector<double> lev(static_cast<size_t>(T1), 1.0 / double(T1));
  {
    std::vector<double> w(static_cast<size_t>(T1 * d));  // [d, T1] column-major: L^-1 (a_t - abar)
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T1; ++t)
      for (int64_t i = 0; i < d; ++i) w[size_t(t * d + i)] = a[t * d + i] - abar[size_t(i)];
    cblas_dtrsm(CblasColMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, int(d), int(T1),
                1.0, g.data(), int(d), w.data(), int(d));
    std::vector<double> m(size_t(R) * size_t(T1));  // Q' W  [R, T1]
    cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, R, int(T1), int(d), 1.0, q.data(), int(d),
                w.data(), int(d), 0.0, m.data(), R);
    for (int64_t t = 0; t < T1; ++t)
      for (int r = 0; r < R; ++r) lev[size_t(t)] += m[size_t(t) * R + r] * m[size_t(t) * R + r];
    for (auto& h : lev) h = std::min(h, 0.95);  // a token that alone determines a direction
  }
  std::vector<double> coff(static_cast<size_t>(F), 0.0), sd(static_cast<size_t>(F), 0.0);
  for (int64_t t = 0; t < T1; ++t)
    for (int64_t j = 0; j < F; ++j) coff[size_t(j)] += z[t * F + j] - score[size_t(t * F + j)];
  for (auto& x : coff) x /= double(T1);
  auto loo_residual = [&](int64_t t, int64_t j) {
    return (z[t * F + j] - score[size_t(t * F + j)] - coff[size_t(j)]) / (1.0 - lev[size_t(t)]);
  };
  for (int64_t t = 0; t < T1; ++t)
    for (int64_t j = 0; j < F; ++j) {
      const double e = loo_residual(t, j);
      sd[size_t(j)] += e * e;
    }
  double sd_max = 0;
  for (auto& x : sd) sd_max = std::max(sd_max, x = std::sqrt(x / double(T1)));
  for (auto& x : sd) x = std::max(x, 1e-6 * sd_max + 1e-12);

  // kappa: the (1 - recall) quantile of the standardised leave-one-out predictions of the fit
  // tokens' true positives.
  std::vector<float> margins;
  for (int64_t t = 0; t < T1; ++t)
    for (int64_t j = 0; j < F; ++j)
      if (z[t * F + j] > 0.0f)
        margins.push_back(float((z[t * F + j] - loo_residual(t, j)) / sd[size_t(j)]));
  double kappa = 0;
  if (!margins.empty()) {
    const size_t idx = size_t(std::floor((1.0 - opt.recall) * double(margins.size())));
    std::nth_element(margins.begin(), margins.begin() + std::min(idx, margins.size() - 1),
                     margins.end());
    kappa = -double(margins[std::min(idx, margins.size() - 1)]) + 1e-6;
  }
  P.kappa = kappa + opt.margin;
  P.threshold.resize(size_t(F));
  for (int64_t j = 0; j < F; ++j)
    P.threshold[size_t(j)] = float(-coff[size_t(j)] - P.kappa * sd[size_t(j)]);

  auto evaluate = [&](int64_t t0, int64_t t1) {
    Eval e;
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t j = 0; j < F; ++j) {
        const bool truth = z[t * F + j] > 0.0f,
                   pred = score[size_t(t * F + j)] > P.threshold[size_t(j)];
        e.positives += truth;
        e.predicted += pred;
        e.hits += truth && pred;
        ++e.cells;
      }
    return e;
  };
  P.fit_recall = evaluate(0, T1).recall();
  const Eval h = heldout > 0 ? evaluate(T1, T) : evaluate(0, T1);
  P.recall = h.recall();
  P.precision = h.precision();
  P.predicted_fraction = h.cells ? double(h.predicted) / double(h.cells) : 0;
  P.true_fraction = h.cells ? double(h.positives) / double(h.cells) : 0;
  return P;
}

namespace {

void check_fit_options(const PredictorFitOptions& opt) {
  if (!(opt.recall > 0 && opt.recall <= 1))
    fail(Status::InvalidArgument, "--recall {} must be in (0, 1]", opt.recall);
  if (!(opt.heldout >= 0 && opt.heldout < 0.9))
    fail(Status::InvalidArgument, "the held-out fraction {} must be in [0, 0.9)", opt.heldout);
  if (opt.rank < 1) fail(Status::InvalidArgument, "--rank {} must be positive", opt.rank);
}

}  // namespace

std::vector<int64_t> calibration_layers(const std::vector<int64_t>& asked, int64_t num_layers) {
  std::vector<int64_t> layers = asked;
  if (layers.empty())
    for (int64_t l = 0; l < num_layers; ++l) layers.push_back(l);
  for (int64_t l : layers)
    if (l < 0 || l >= num_layers)
      fail(Status::InvalidArgument, "--layers: layer {} does not exist (the model has {})", l,
           num_layers);
  return layers;
}

CollectedActivations collect_activations_cpu(const model::Model& model,
                                             std::span<const int32_t> tokens,
                                             const PredictorFitOptions& opt) {
  check_fit_options(opt);
  model::CpuEngine cpu(model);
  const auto& c = cpu.config();
  CollectedActivations col;
  col.hidden = c.hidden_size;
  col.ffn = c.ffn_dim;
  col.tokens = int64_t(tokens.size());
  col.layers = calibration_layers(opt.layers, c.num_hidden_layers);
  const int64_t d = col.hidden, F = col.ffn, T = col.tokens;
  col.a.resize(size_t(c.num_hidden_layers));
  col.z.resize(size_t(c.num_hidden_layers));
  for (int64_t l : col.layers) {
    col.a[size_t(l)].resize(size_t(T * d));
    col.z[size_t(l)].resize(size_t(T * F));
  }
  int64_t base = 0;  // token index of the current window's row 0
  const int64_t window =
      opt.window > 0 ? std::min(opt.window, c.max_position_embeddings) : c.max_position_embeddings;
  col.window = window;
  cpu.set_ffn_observer([&](const model::FfnObservation& o) {
    if (col.a[size_t(o.layer)].empty()) return;
    const int64_t t0 = base + o.position;
    std::memcpy(col.a[size_t(o.layer)].data() + t0 * d, o.attn_in, size_t(o.rows * d) * 4);
    std::memcpy(col.z[size_t(o.layer)].data() + t0 * F, o.pre_act, size_t(o.rows * F) * 4);
  });
  const auto t0 = Clock::now();
  model::KvCache cache = cpu.make_cache(window);
  Progress bar("forward passes", double(T), "tokens");
  for (int64_t start = 0; start < T; start += window) {
    cache.clear();
    base = start;
    const int64_t len = std::min(T - start, window);
    cpu.forward(tokens.subspan(size_t(start), size_t(len)), cache);
    bar.update(double(start + len));
  }
  bar.finish();
  col.seconds = seconds_since(t0);
  return col;
}

CalibrationReport fit_collected(CollectedActivations& col, const PredictorFitOptions& opt) {
  check_fit_options(opt);
  CalibrationReport rep;
  rep.collected_bytes = col.bytes();
  rep.forward_seconds = col.seconds;
  const int64_t T = col.tokens, d = col.hidden, F = col.ffn;
  const auto t1 = Clock::now();
  const int64_t heldout = int64_t(std::floor(opt.heldout * double(T)));
  Progress bar("predictor fits", double(col.layers.size()), "layers");
  for (int64_t l : col.layers) {
    bar.update(double(rep.layers.size()), fmt::format("layer {}", l));
    FittedPredictor p =
        fit_layer(col.a[size_t(l)].data(), col.z[size_t(l)].data(), T, heldout, d, F, opt);
    p.layer = l;
    std::vector<float>().swap(col.a[size_t(l)]);
    std::vector<float>().swap(col.z[size_t(l)]);
    rep.recall += p.recall / double(col.layers.size());
    rep.precision += p.precision / double(col.layers.size());
    rep.predicted_fraction += p.predicted_fraction / double(col.layers.size());
    rep.true_fraction += p.true_fraction / double(col.layers.size());
    rep.bytes += p.bytes();
    rep.layers.push_back(std::move(p));
  }
  bar.update(double(col.layers.size()));
  bar.finish();
  rep.fit_seconds = seconds_since(t1);
  return rep;
}

CalibrationReport fit_predictors(const model::Model& model, std::span<const int32_t> tokens,
                                 const PredictorFitOptions& opt) {
  CollectedActivations col = collect_activations_cpu(model, tokens, opt);
  return fit_collected(col, opt);
}

void predictor_entries(const CalibrationReport& r, const PredictorFitOptions& opt,
                       const std::string& calibration_name, std::vector<NewTensor>& add,
                       nlohmann::json& metadata) {
  nlohmann::json per_layer = nlohmann::json::object();
  for (const auto& p : r.layers) {
    NewTensor u{predictor_name(p.layer, "u"), DType::F16, {p.hidden, p.rank}, {}};
    u.bytes.resize(p.u.size() * 2);
    std::memcpy(u.bytes.data(), p.u.data(), u.bytes.size());
    NewTensor v{predictor_name(p.layer, "v"), DType::F16, {p.rank, p.ffn}, {}};
    v.bytes.resize(p.v.size() * 2);
    std::memcpy(v.bytes.data(), p.v.data(), v.bytes.size());
    NewTensor th{predictor_name(p.layer, "threshold"), DType::F32, {p.ffn}, {}};
    th.bytes.resize(p.threshold.size() * 4);
    std::memcpy(th.bytes.data(), p.threshold.data(), th.bytes.size());
    add.push_back(std::move(u));
    add.push_back(std::move(v));
    add.push_back(std::move(th));
    per_layer[std::to_string(p.layer)] = {{"recall", p.recall},
                                          {"precision", p.precision},
                                          {"predicted_fraction", p.predicted_fraction},
                                          {"kappa", p.kappa}};
  }
  // Earlier predictors of other layers stay; the file's summary covers this run's layers.
  const nlohmann::json meta = {
      {"predictor.kind", "lowrank"},
      {"predictor.input", "attention input (q_proj input)"},
      {"predictor.rule", "active iff (a u) v > threshold"},
      {"predictor.rank", r.layers.empty() ? 0 : r.layers[0].rank},
      {"predictor.dtype", "u, v F16; threshold F32"},
      {"predictor.recall", r.recall},
      {"predictor.precision", r.precision},
      {"predictor.predicted_fraction", r.predicted_fraction},
      {"predictor.recall_target", opt.recall},
      {"predictor.margin", opt.margin},
      {"predictor.bytes", r.bytes},
      {"predictor.calibration", calibration_name},
      {"predictor.tokens", r.layers.empty() ? 0 : r.layers[0].fit_tokens},
      {"predictor.heldout_tokens", r.layers.empty() ? 0 : r.layers[0].heldout_tokens},
      {"predictor.layers", per_layer}};
  for (const auto& [k, v] : meta.items()) metadata[k] = v;
}

void write_predictors(const std::string& path, const CalibrationReport& r,
                      const PredictorFitOptions& opt, const std::string& calibration_name) {
  std::vector<NewTensor> add;
  nlohmann::json meta = nlohmann::json::object();
  predictor_entries(r, opt, calibration_name, add, meta);
  rewrite_sf(path, add, meta);
}

std::string calibration_table(const CalibrationReport& r) {
  std::string s =
      fmt::format("{:>5}  {:>5}  {:>8}  {:>9}  {:>10}  {:>10}  {:>7}  {:>10}\n", "layer", "rank",
                  "recall", "precision", "predicted", "true", "kappa", "bytes");
  for (const auto& p : r.layers)
    s += fmt::format("{:>5}  {:>5}  {:>8.4f}  {:>9.4f}  {:>10.4f}  {:>10.4f}  {:>7.3f}  {:>10}\n",
                     p.layer, p.rank, p.recall, p.precision, p.predicted_fraction, p.true_fraction,
                     p.kappa, p.bytes());
  s += fmt::format("{:>5}  {:>5}  {:>8.4f}  {:>9.4f}  {:>10.4f}  {:>10.4f}  {:>7}  {:>10}\n", "all",
                   "", r.recall, r.precision, r.predicted_fraction, r.true_fraction, "", r.bytes);
  s += "(recall, precision: held-out tokens, micro-averaged; predicted / true: fraction of neurons "
       "predicted / "
       "actually active per token; bytes: u + v fp16 + threshold fp32)\n";
  return s;
}

}  // namespace sf::offload
