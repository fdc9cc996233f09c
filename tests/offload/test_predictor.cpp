// Predictor fitting (`calibrate`): on a synthetic model with an activation profile, the low-rank
// predictor reaches the recall target on its fit tokens and close to it on held-out tokens, the
// margin raises recall, the tensors land in the .sf with the documented shapes and dtypes, and
// other layers' predictors survive a --layers run.
#include <algorithm>

#include "format/sf_file.hpp"
#include "model/weights.hpp"
#include "offload/neuron_store.hpp"
#include "model/generate.hpp"
#include "model/cpu_engine.hpp"
#include "offload/predictor_fit.hpp"
#include "offload/predictor_quality.hpp"
#include "offload/synth_profile.hpp"
#include "sf_test_util.hpp"

using namespace sf;
using namespace sf::offload;
using sftest::catch_error;

namespace {

class PredictorTest : public sftest::ScratchTest {};

std::vector<int32_t> ids(size_t n, uint64_t seed = 99) {
  std::vector<int32_t> v = {2};
  uint64_t s = seed;
  while (v.size() < n) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    v.push_back(int32_t((s >> 33) % 1500));
  }
  return v;
}

TEST_F(PredictorTest, RecallTargetIsMetAndStored) {
  ProfiledSynthOptions o;
  o.profile = parse_activation_profile("sparsity=0.95");
  write_profiled_opt(path("m.sf"), o);
  const auto tokens = ids(1536);
  PredictorFitOptions po;
  po.rank = 16;
  po.recall = 0.99;
  CalibrationReport r;
  {
    const auto m = model::Model::open(path("m.sf"));
    r = fit_predictors(*m, tokens, po);
  }
  ASSERT_EQ(r.layers.size(), 2u);
  for (const auto& p : r.layers) {
    EXPECT_GE(p.fit_recall, 0.99);
    EXPECT_GE(p.recall, 0.97) << "held-out recall of layer " << p.layer;
    EXPECT_GT(p.precision, 0.2);
    EXPECT_LT(p.predicted_fraction, 0.5);  // it must prune: far fewer than all neurons
    EXPECT_EQ(p.rank, 16);
    EXPECT_EQ(p.bytes(), uint64_t(64 * 16 * 2 + 16 * 256 * 2 + 256 * 4));
  }
  // More margin, more recall (and more neurons predicted).
  PredictorFitOptions wide = po;
  wide.margin = 1.0;
  {
    const auto m = model::Model::open(path("m.sf"));
    const auto r2 = fit_predictors(*m, tokens, wide);
    EXPECT_GE(r2.recall, r.recall);
    EXPECT_GT(r2.predicted_fraction, r.predicted_fraction);
  }
  write_predictors(path("m.sf"), r, po, "ids");
  EXPECT_TRUE(temporaries().empty());
  const auto m = model::Model::open(path("m.sf"));
  const auto store = NeuronStore::from_model(*m);
  ASSERT_TRUE(store.has_predictor());
  EXPECT_EQ(store.predictor(1).u->dtype, DType::F16);
  EXPECT_EQ(store.predictor(1).v->shape, (std::vector<int64_t>{16, 256}));
  EXPECT_EQ(store.predictor(1).threshold->dtype, DType::F32);
  EXPECT_EQ(store.predictor_info().rank, 16);
  EXPECT_NEAR(store.predictor_info().recall, r.recall, 1e-12);
  EXPECT_EQ(store.predictor_info().bytes, r.bytes);

  // Refitting one layer keeps the other's tensors.
  PredictorFitOptions one = po;
  one.layers = {1};
  one.rank = 8;
  {
    const auto m2 = model::Model::open(path("m.sf"));
    write_predictors(path("m.sf"), fit_predictors(*m2, tokens, one), one, "ids");
  }
  const auto m3 = model::Model::open(path("m.sf"));
  const auto s3 = NeuronStore::from_model(*m3);
  ASSERT_TRUE(s3.has_predictor());
  EXPECT_EQ(s3.predictor(0).rank, 16);
  EXPECT_EQ(s3.predictor(1).rank, 8);
}

// `perplexity --ffn-neurons predicted`: the full pass is the CPU perplexity exactly; predictors that
// select every neuron change nothing (bit for bit); fitted ones deviate a little, with the recall
// they have on these (held-out) tokens; a model without predictors is refused.
TEST_F(PredictorTest, QualityOfPredictedFfnIsMeasured) {
  ProfiledSynthOptions o;
  o.profile = parse_activation_profile("sparsity=0.95");
  write_profiled_opt(path("m.sf"), o);
  const auto eval = ids(400, 7);  // not the fitting tokens
  {
    const auto m = model::Model::open(path("m.sf"));
    const auto store = NeuronStore::from_model(*m);
    EXPECT_EQ(catch_error([&] { measure_predictor_quality(*m, store, eval, 128); }).status(), Status::InvalidArgument);
  }
  PredictorFitOptions po;
  po.rank = 16;
  po.recall = 0.99;
  CalibrationReport r;
  {
    const auto m = model::Model::open(path("m.sf"));
    r = fit_predictors(*m, ids(1536), po);
  }
  CalibrationReport all = r;  // every neuron predicted: threshold below any score
  for (auto& p : all.layers) std::fill(p.threshold.begin(), p.threshold.end(), -1e30f);

  write_predictors(path("m.sf"), all, po, "ids");
  PredictorQuality q_all;
  double cpu_ppl = 0;
  {
    const auto m = model::Model::open(path("m.sf"));
    q_all = measure_predictor_quality(*m, NeuronStore::from_model(*m), eval, 128);
    model::CpuEngine cpu(*m);
    cpu_ppl = model::perplexity(cpu, eval, 128).perplexity();
  }
  EXPECT_DOUBLE_EQ(q_all.ppl_full, cpu_ppl);
  EXPECT_EQ(q_all.ppl_predicted, q_all.ppl_full);
  EXPECT_EQ(q_all.logit_rel_l2, 0.0);
  EXPECT_EQ(q_all.greedy_agreement, 1.0);
  EXPECT_EQ(q_all.recall, 1.0);
  EXPECT_EQ(q_all.predicted_fraction, 1.0);
  EXPECT_EQ(q_all.windows, 4);
  EXPECT_EQ(q_all.predicted_tokens, 396);

  write_predictors(path("m.sf"), r, po, "ids");
  const auto m = model::Model::open(path("m.sf"));
  const auto q = measure_predictor_quality(*m, NeuronStore::from_model(*m), eval, 128);
  EXPECT_DOUBLE_EQ(q.ppl_full, cpu_ppl);
  EXPECT_GT(q.recall, 0.9);
  EXPECT_LT(q.recall, 1.0);
  EXPECT_LT(q.predicted_fraction, 0.5);
  EXPECT_GT(q.logit_rel_l2, 0.0);
  EXPECT_LT(q.logit_rel_l2, 0.2);
  EXPECT_GT(q.greedy_agreement, 0.8);
  EXPECT_NE(q.table().find("recall"), std::string::npos);
  EXPECT_EQ(q.to_json()["recall"].get<double>(), q.recall);
}

TEST_F(PredictorTest, BadOptionsAreRefused) {
  ProfiledSynthOptions o;
  write_profiled_opt(path("m.sf"), o);
  const auto m = model::Model::open(path("m.sf"));
  PredictorFitOptions po;
  po.recall = 1.5;
  EXPECT_EQ(catch_error([&] { fit_predictors(*m, ids(300), po); }).status(), Status::InvalidArgument);
  po.recall = 0.99;
  po.layers = {5};
  EXPECT_EQ(catch_error([&] { fit_predictors(*m, ids(300), po); }).status(), Status::InvalidArgument);
}

}  // namespace
