// measure_predictor_quality (predictor_quality.hpp): two CPU passes, the second with an FFN observer
// that evaluates the stored low-rank predictor on the layer's attention input and zeroes the
// pre-activations of the neurons it did not select.
#include "offload/predictor_quality.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "model/generate.hpp"
#include "model/cpu_engine.hpp"
#include "offload/neuron_store.hpp"

namespace sf::offload {
namespace {

struct Pass {
  model::PerplexityResult nll;
  std::vector<float> logits;  // [positions scored, vocab], windows concatenated
};

// model::perplexity, keeping each window's logits for the positions it scored (0..len-2).
Pass run_pass(model::CpuEngine& opt, std::span<const int32_t> ids, int64_t context) {
  Pass p;
  const int64_t V = opt.config().vocab_size;
  p.nll = model::perplexity(opt, ids, context, [&](std::span<const float> logits, size_t len) {
    p.logits.insert(p.logits.end(), logits.begin(), logits.begin() + int64_t(len - 1) * V);
  });
  return p;
}

// Layer l's predictor widened to fp32 once: U [d, R], V [R, ffn], threshold [ffn].
struct WidePredictor {
  int64_t d = 0, r = 0, f = 0;
  std::vector<float> u, v, thr;
};
WidePredictor widen(const PredictorLayer& p) {
  WidePredictor w{p.hidden, p.rank, p.ffn, {}, {}, {}};
  auto wide = [](const model::Tensor& t, size_t n) {
    std::vector<float> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = load_as_float(t.data, t.dtype, i);
    return out;
  };
  w.u = wide(*p.u, size_t(w.d * w.r));
  w.v = wide(*p.v, size_t(w.r * w.f));
  w.thr = wide(*p.threshold, size_t(w.f));
  return w;
}

}  // namespace

PredictorQuality measure_predictor_quality(const model::Model& model, const NeuronStore& store,
                                           std::span<const int32_t> ids, int64_t context) {
  if (!store.has_predictor())
    fail(Status::InvalidArgument, "the model has no activation predictors: run `sparseflow calibrate --model M "
         "--calibration TEXT` first.");
  const auto& cfg = model.config();
  model::CpuEngine opt(model);
  const Pass full = run_pass(opt, ids, context);  // checks the context and the token count

  std::vector<WidePredictor> preds;
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) preds.push_back(widen(store.predictor(l)));
  int64_t active = 0, predicted = 0, hits = 0, cells = 0;
  opt.set_ffn_observer([&](const model::FfnObservation& o) {
    const WidePredictor& P = preds[size_t(o.layer)];
    if (P.d != o.hidden || P.f != o.ffn)
      fail(Status::Format, "predictor of layer {} is [{}, {}], the layer is [{}, {}]; recalibrate the model.",
           o.layer, P.d, P.f, o.hidden, o.ffn);
    std::vector<float> t(size_t(P.r)), score(size_t(P.f));
    for (int64_t row = 0; row < o.rows; ++row) {
      const float* a = o.attn_in + row * o.hidden;
      std::fill(t.begin(), t.end(), 0.0f);
      for (int64_t i = 0; i < P.d; ++i) {
        const float ai = a[i];
        const float* ur = P.u.data() + i * P.r;
        for (int64_t k = 0; k < P.r; ++k) t[size_t(k)] += ai * ur[k];
      }
      std::fill(score.begin(), score.end(), 0.0f);
      for (int64_t k = 0; k < P.r; ++k) {
        const float tk = t[size_t(k)];
        const float* vr = P.v.data() + k * P.f;
        for (int64_t j = 0; j < P.f; ++j) score[size_t(j)] += tk * vr[j];
      }
      float* z = o.pre_act + row * o.ffn;
      for (int64_t j = 0; j < P.f; ++j) {
        const bool is_active = z[j] > 0.0f;  // ReLU: the neuron contributes iff its pre-activation is > 0
        const bool is_pred = score[size_t(j)] > P.thr[size_t(j)];
        active += is_active;
        predicted += is_pred;
        hits += is_active && is_pred;
        if (!is_pred) z[j] = 0.0f;  // act(0) = 0 for ReLU, GELU and SiLU: the neuron is not computed
      }
      cells += P.f;
    }
  });
  const Pass pred = run_pass(opt, ids, context);
  opt.set_ffn_observer({});

  PredictorQuality q;
  q.tokens = int64_t(ids.size());
  q.predicted_tokens = full.nll.predicted;
  q.windows = full.nll.windows;
  q.ppl_full = full.nll.perplexity();
  q.ppl_predicted = pred.nll.perplexity();
  const int64_t V = cfg.vocab_size;
  double num = 0, den = 0;
  int64_t agree = 0;
  for (int64_t i = 0; i < full.nll.predicted; ++i) {
    const float* a = full.logits.data() + i * V;
    const float* b = pred.logits.data() + i * V;
    for (int64_t j = 0; j < V; ++j) {
      const double d = double(b[j]) - double(a[j]);
      num += d * d;
      den += double(a[j]) * double(a[j]);
    }
    agree += std::max_element(a, a + V) - a == std::max_element(b, b + V) - b;
  }
  q.logit_rel_l2 = den > 0 ? std::sqrt(num / den) : 0;
  q.greedy_agreement = double(agree) / double(full.nll.predicted);
  q.recall = active ? double(hits) / double(active) : 1.0;
  q.precision = predicted ? double(hits) / double(predicted) : 1.0;
  q.predicted_fraction = cells ? double(predicted) / double(cells) : 0;
  q.active_fraction = cells ? double(active) / double(cells) : 0;
  return q;
}

nlohmann::ordered_json PredictorQuality::to_json() const {
  return {{"perplexity_full", ppl_full},        {"perplexity_predicted", ppl_predicted},
          {"perplexity_change", ppl_change()},  {"logit_rel_l2", logit_rel_l2},
          {"greedy_agreement", greedy_agreement}, {"recall", recall},
          {"precision", precision},             {"predicted_fraction", predicted_fraction},
          {"active_fraction", active_fraction}, {"tokens", tokens},
          {"predicted_tokens", predicted_tokens}, {"windows", windows}};
}

std::string PredictorQuality::table() const {
  return fmt::format(
      "FFN over all neurons:        perplexity {:.6g}\n"
      "FFN over predicted neurons:  perplexity {:.6g}  ({:+.3f}%)\n"
      "greedy agreement {:.4f}, logits relative L2 error {:.3g} ({} positions in {} window{})\n"
      "predictors on these tokens: recall {:.4f}, precision {:.3f}, {:.2f}% of neurons predicted, "
      "{:.2f}% active\n",
      ppl_full, ppl_predicted, 100 * ppl_change(), greedy_agreement, logit_rel_l2, predicted_tokens, windows,
      windows == 1 ? "" : "s", recall, precision, 100 * predicted_fraction, 100 * active_fraction);
}

}  // namespace sf::offload
