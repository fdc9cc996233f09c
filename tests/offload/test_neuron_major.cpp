// Neuron-major FFN storage (convert --neuron-major): bundles hold exactly fc1 row j, fc2 column j and
// b1[j]; Model::open reads the file; the CPU forward pass over bundles is bit-identical to the
// row-major model (identity order) on synthetic models and on the HF fixtures; converting back gives
// the original bytes; 2:4 + neuron-major is refused with a message.
#include <cstring>

#include "format/sf_file.hpp"
#include "model/convert.hpp"
#include "model/cpu_engine.hpp"
#include "model/synth.hpp"
#include "model/weights.hpp"
#include "offload/neuron_store.hpp"
#include "sf_test_util.hpp"

using namespace sf;
using namespace sf::model;
using sftest::catch_error;

namespace {

class NeuronMajorTest : public sftest::ScratchTest {
 protected:
  // A tiny synthetic checkpoint (seed) converted to a row-major .sf at path("rm.sf").
  void write_row_major_sf(uint64_t seed) {
    SynthOptions o;
    o.seed = seed;
    write_tiny_opt(path("ck"), o);
    convert_to_sf(*Model::open(path("ck")), path("rm.sf"), {});
  }
};

std::vector<float> run(const Model& m, const std::vector<int32_t>& prompt, int steps) {
  CpuEngine opt(m);
  KvCache cache = opt.make_cache(int64_t(prompt.size()) + steps);
  std::vector<float> all = opt.forward(prompt, cache, /*all_logits=*/true);
  int32_t next = 7;
  for (int s = 0; s < steps; ++s) {
    const auto l = opt.forward(std::span<const int32_t>(&next, 1), cache);
    all.insert(all.end(), l.begin(), l.end());
    next = int32_t((next * 31 + s) % m.config().vocab_size);
  }
  return all;
}

void expect_bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  size_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff += std::memcmp(&a[i], &b[i], 4) != 0;
  EXPECT_EQ(diff, 0u) << "of " << a.size() << " logits";
}

TEST_F(NeuronMajorTest, BundlesHoldTheSlicesAndTheFileLoads) {
  SynthOptions o;
  o.seed = 11;
  write_tiny_opt(path("ck"), o);
  const auto src = Model::open(path("ck"));
  ConvertOptions co;
  co.neuron_major = true;
  convert_to_sf(*src, path("nm.sf"), co);

  const auto f = sff::File::open(path("nm.sf"));
  EXPECT_EQ(f.find("model.decoder.layers.0.fc1.weight"), nullptr);
  EXPECT_EQ(f.find("model.decoder.layers.0.fc2.weight"), nullptr);
  ASSERT_NE(f.find("model.decoder.layers.1.fc2.bias"), nullptr);
  ASSERT_NE(f.find("model.decoder.layers.1.ffn_neurons"), nullptr);
  EXPECT_EQ(f.get("model.decoder.layers.1.ffn_neurons").kind, "ffn_neurons");

  const auto m = Model::open(path("nm.sf"));
  EXPECT_TRUE(m->is_neuron_major());
  const auto store = offload::NeuronStore::from_model(*m);
  EXPECT_TRUE(store.mapped_from_file());
  EXPECT_EQ(store.layout().stride % offload::kBundleAlign, 0u);
  EXPECT_EQ(store.layout().stride, 384u);  // (2*64+1)*2 = 258 bytes -> 384
  const int64_t H = 64, F = 256;
  for (int64_t l = 0; l < 2; ++l) {
    const auto& L = store.layer(l);
    const std::string p = "model.decoder.layers." + std::to_string(l) + ".";
    const auto& w1 = src->tensor(p + "fc1.weight");
    const auto& b1 = src->tensor(p + "fc1.bias");
    const auto& w2 = src->tensor(p + "fc2.weight");
    for (int64_t b = 0; b < F; ++b) {
      ASSERT_EQ(L.neuron_order[b], b);
      EXPECT_EQ(std::memcmp(L.fc1_row(b), static_cast<const uint16_t*>(w1.data) + b * H, H * 2), 0);
      const auto* col = static_cast<const uint16_t*>(L.fc2_col(b));
      for (int64_t i = 0; i < H; ++i) ASSERT_EQ(col[i], static_cast<const uint16_t*>(w2.data)[i * F + b]);
      EXPECT_EQ(*reinterpret_cast<const uint16_t*>(L.bundle(b) + L.layout.bias_offset),
                static_cast<const uint16_t*>(b1.data)[b]);
      for (uint64_t k = L.layout.bias_offset + 2; k < L.layout.stride; ++k) ASSERT_EQ(L.bundle(b)[k], 0);
    }
  }
  // Packing a row-major model in memory gives the same bytes as the file.
  const auto packed = offload::NeuronStore::from_model(*src);
  EXPECT_FALSE(packed.mapped_from_file());
  EXPECT_EQ(std::memcmp(packed.layer(1).bundles, store.layer(1).bundles, store.layer(1).bytes()), 0);
  // A neuron-major model cannot be used through fc1/fc2 and says why.
  const auto e = catch_error([&] { m->tensor("model.decoder.layers.0.fc1.weight"); });
  EXPECT_NE(std::string(e.what()).find("neuron-major"), std::string::npos) << e.what();
}

TEST_F(NeuronMajorTest, CpuForwardIsBitIdenticalOnSynthAndFixtures) {
  std::vector<std::string> models;
  SynthOptions o;
  o.seed = 3;
  write_tiny_opt(path("ck"), o);
  models.push_back(path("ck"));
  for (const char* fx : {"pre_ln", "post_ln", "proj", "untied"})
    models.push_back(std::string(SF_TEST_DATA_DIR) + "/opt/" + fx);
  const std::vector<int32_t> prompt = {2, 15, 27, 99, 4, 300, 8, 9, 10, 11};
  for (const auto& dir : models) {
    SCOPED_TRACE(dir);
    const auto src = Model::open(dir);
    ConvertOptions co;
    co.neuron_major = true;
    convert_to_sf(*src, path("nm.sf"), co);
    convert_to_sf(*src, path("rm.sf"), {});
    const auto nm = Model::open(path("nm.sf"));
    const auto rm = Model::open(path("rm.sf"));
    expect_bit_identical(run(*rm, prompt, 4), run(*nm, prompt, 4));
  }
}

TEST_F(NeuronMajorTest, ConvertBackToRowMajorRestoresTheBytes) {
  SynthOptions o;
  o.seed = 4;
  o.dtype = DType::BF16;
  write_tiny_opt(path("ck"), o);
  const auto src = Model::open(path("ck"));
  ConvertOptions co;
  co.neuron_major = true;
  convert_to_sf(*src, path("nm.sf"), co);
  convert_to_sf(*src, path("rm.sf"), {});
  const auto nm = Model::open(path("nm.sf"));
  convert_to_sf(*nm, path("back.sf"), {});
  const auto back = Model::open(path("back.sf"));
  const auto rm = Model::open(path("rm.sf"));
  EXPECT_FALSE(back->is_neuron_major());
  for (const auto& [name, t] : rm->dense_tensors()) {
    const Tensor* u = back->find(name);
    ASSERT_NE(u, nullptr) << name;
    ASSERT_EQ(u->shape, t.shape) << name;
    EXPECT_EQ(std::memcmp(u->data, t.data, size_t(t.numel()) * dtype_size(t.dtype)), 0) << name;
  }
}

TEST_F(NeuronMajorTest, TwoFourWithNeuronMajorIsRefused) {
  write_tiny_opt(path("ck"), {});
  const auto src = Model::open(path("ck"));
  ConvertOptions co;
  co.neuron_major = true;
  co.sparsity = "2:4";
  const auto e = catch_error([&] { convert_to_sf(*src, path("x.sf"), co); });
  EXPECT_EQ(e.status(), Status::InvalidArgument);
  EXPECT_NE(std::string(e.what()).find("ffn_neurons_s24"), std::string::npos);
}

}  // namespace

// A hotness-ordered file (convert --neuron-major from a profiled .sf) permutes the bundles, the
// profile and the predictors together: logits agree with the row-major model to fp32 rounding of
// a reordered sum, and the stored rates / thresholds follow their neurons.
#include "offload/predictor_fit.hpp"
#include "offload/profile.hpp"
#include "tokenizer/bpe.hpp"

namespace {

TEST_F(NeuronMajorTest, HotnessOrderPermutesBundlesProfileAndPredictorsTogether) {
  write_row_major_sf(8);
  std::vector<int32_t> ids;
  for (int i = 0; i < 300; ++i) ids.push_back(int32_t((i * 37 + 5) % 1500));
  {
    const auto rm = Model::open(path("rm.sf"));
    offload::write_profile(path("rm.sf"), offload::profile_activations(*rm, ids), "synthetic ids");
  }
  {
    const auto rm = Model::open(path("rm.sf"));
    offload::PredictorFitOptions po;
    po.rank = 16;
    offload::write_predictors(path("rm.sf"), offload::fit_predictors(*rm, ids, po), po, "synthetic ids");
  }
  const auto rm = Model::open(path("rm.sf"));
  ConvertOptions co;
  co.neuron_major = true;
  convert_to_sf(*rm, path("hot.sf"), co);
  const auto hot = Model::open(path("hot.sf"));
  const auto store = offload::NeuronStore::from_model(*hot);
  const auto rstore = offload::NeuronStore::from_model(*rm);
  ASSERT_TRUE(store.has_profile());
  ASSERT_TRUE(store.hotness_ordered());
  ASSERT_TRUE(store.has_predictor());
  bool permuted = false;
  for (int64_t l = 0; l < 2; ++l) {
    const auto& L = store.layer(l);
    const auto& R = rstore.layer(l);
    const auto& pt = store.predictor(l);
    const auto& rt = rstore.predictor(l);
    for (int64_t b = 0; b < L.ffn; ++b) {
      const int32_t j = L.neuron_order[b];
      permuted = permuted || j != b;
      ASSERT_EQ(L.firing_rate[b], R.firing_rate[j]);
      ASSERT_EQ(std::memcmp(L.bundle(b), R.bundle(j), L.layout.stride), 0);
      ASSERT_EQ(static_cast<const float*>(pt.threshold->data)[b], static_cast<const float*>(rt.threshold->data)[j]);
      ASSERT_EQ(static_cast<const uint16_t*>(pt.v->data)[b], static_cast<const uint16_t*>(rt.v->data)[j]);  // row 0
    }
  }
  EXPECT_TRUE(permuted);
  // Same function, sums in another order: fp32 rounding only.
  const std::vector<int32_t> prompt = {2, 15, 27, 99, 4, 300, 8};
  const auto a = run(*rm, prompt, 3), b = run(*hot, prompt, 3);
  ASSERT_EQ(a.size(), b.size());
  double max_abs = 0, max_diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_abs = std::max(max_abs, double(std::abs(a[i])));
    max_diff = std::max(max_diff, double(std::abs(a[i] - b[i])));
  }
  EXPECT_LE(max_diff, 1e-5 * std::max(1.0, max_abs)) << "max |logit| " << max_abs;
}

// The profile measured from collected pre-activations (profile --device cuda, calibrate --with-profile)
// is the observer profile of the CPU forward: the same windows, the same counts, bit for bit; a
// profile written with the predictors in one rewrite reads back like write_profile's.
TEST_F(NeuronMajorTest, ProfileFromCollectedActivationsEqualsTheObserverProfile) {
  write_row_major_sf(9);
  std::vector<int32_t> ids;
  for (int i = 0; i < 41; ++i) ids.push_back(int32_t((i * 53 + 3) % 1500));
  const auto rm = Model::open(path("rm.sf"));
  offload::ProfileOptions popt;
  popt.window = 16;  // windows of 16, 16 and 9: the overlap is not measured across a window start
  const auto want = offload::profile_activations(*rm, ids, popt);
  offload::PredictorFitOptions fo;
  fo.window = 16;
  const auto col = offload::collect_activations_cpu(*rm, ids, fo);
  EXPECT_EQ(col.window, 16);
  const auto got = offload::profile_collected(col);
  ASSERT_EQ(got.layers.size(), want.layers.size());
  EXPECT_EQ(got.tokens, want.tokens);
  for (size_t l = 0; l < want.layers.size(); ++l) {
    EXPECT_EQ(got.layers[l].firing_rate, want.layers[l].firing_rate) << "layer " << l;
    EXPECT_EQ(got.layers[l].sparsity, want.layers[l].sparsity) << "layer " << l;
    EXPECT_EQ(got.layers[l].jaccard, want.layers[l].jaccard) << "layer " << l;
    EXPECT_EQ(got.layers[l].hot_fraction, want.layers[l].hot_fraction) << "layer " << l;
  }
  EXPECT_GT(want.sparsity, 0.0);
  EXPECT_LT(want.sparsity, 1.0);
  // One layer missing: refused, not a profile with a hole.
  auto partial = col;
  partial.layers.pop_back();
  EXPECT_EQ(catch_error([&] { offload::profile_collected(partial); }).status(), Status::InvalidArgument);

  std::vector<offload::NewTensor> add;
  nlohmann::json meta = nlohmann::json::object();
  offload::profile_entries(got, "ids", add, meta);
  offload::rewrite_sf(path("rm.sf"), add, meta, offload::is_profile_entry);
  const auto reread = Model::open(path("rm.sf"));
  const auto back = offload::NeuronStore::from_model(*reread);
  ASSERT_TRUE(back.has_profile());
  for (int64_t j = 0; j < back.layer(1).ffn; ++j)
    ASSERT_EQ(back.layer(1).firing_rate[j], want.layers[1].firing_rate[size_t(j)]) << "neuron " << j;
}

}  // namespace
