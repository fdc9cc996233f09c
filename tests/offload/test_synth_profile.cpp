// Synthetic activation profiles (synth --activation-profile) and `profile`: the spec parser, the
// firing-rate fit, a synthetic model whose measured sparsity follows the asked one, correlation
// that follows `corr`, and profile tensors written into the .sf atomically (the file stays valid,
// a second profile replaces the first, no temporaries are left).
#include <cmath>

#include "format/sf_file.hpp"
#include "model/weights.hpp"
#include "offload/neuron_store.hpp"
#include "offload/profile.hpp"
#include "offload/synth_profile.hpp"
#include "sf_test_util.hpp"

using namespace sf;
using namespace sf::offload;
using sftest::catch_error;

namespace {

class SynthProfileTest : public sftest::ScratchTest {};

// A deterministic token stream with a skewed (Zipf-like) frequency, like text.
std::vector<int32_t> token_stream(size_t n, int32_t vocab) {
  std::vector<int32_t> ids = {2};
  uint64_t s = 12345;
  while (ids.size() < n) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const double u = double(s >> 11) * 0x1.0p-53;
    ids.push_back(int32_t(std::min<double>(vocab - 1, std::floor(std::pow(double(vocab), u)))));
  }
  return ids;
}

TEST(ActivationProfileSpec, ParsesDefaultsAndRefusesNonsense) {
  const auto d = parse_activation_profile("default");
  EXPECT_DOUBLE_EQ(d.sparsity, 0.97);
  EXPECT_DOUBLE_EQ(d.hot_fraction, 0.26);
  EXPECT_DOUBLE_EQ(d.hot_share, 0.80);
  EXPECT_DOUBLE_EQ(d.corr, 0.5);
  const auto s = parse_activation_profile("sparsity=0.9,hot=0.3:0.7,corr=0.2,latent=16");
  EXPECT_DOUBLE_EQ(s.sparsity, 0.9);
  EXPECT_DOUBLE_EQ(s.hot_fraction, 0.3);
  EXPECT_DOUBLE_EQ(s.hot_share, 0.7);
  EXPECT_DOUBLE_EQ(s.corr, 0.2);
  EXPECT_EQ(s.latent, 16);
  for (const char* bad : {"sparsity=1.2", "hot=0.8:0.2", "hot=0.3", "color=red", "sparsity", "corr=0.99,rho=0.5",
                          "sparsity=abc"}) {
    const auto e = catch_error([&] { parse_activation_profile(bad); });
    EXPECT_EQ(e.status(), Status::InvalidArgument) << bad;
  }
}

TEST(ActivationProfileSpec, FitHitsMeanAndHotShare) {
  EXPECT_NEAR(inv_norm_cdf(0.975), 1.959963984540054, 1e-9);
  EXPECT_NEAR(inv_norm_cdf(1e-6), -4.753424308822899, 1e-7);
  for (const char* spec : {"default", "sparsity=0.9,hot=0.3:0.8", "sparsity=0.95,hot=0.2:0.7"}) {
    const auto p = parse_activation_profile(spec);
    for (int64_t ffn : {256, 3072, 16384}) {
      const auto f = fit_firing_rates(p, ffn);
      ASSERT_EQ(int64_t(f.rates.size()), ffn);
      double mean = 0;
      for (float r : f.rates) mean += r;
      mean /= double(ffn);
      EXPECT_NEAR(mean, 1 - p.sparsity, 1e-4) << spec << " ffn " << ffn;
      EXPECT_NEAR(f.hot_share, p.hot_share, 2e-3) << spec << " ffn " << ffn;
      EXPECT_NEAR(hot_fraction_for_share(f.rates, p.hot_share), p.hot_fraction, 2.0 / double(ffn) + 2e-3);
      EXPECT_LE(*std::max_element(f.rates.begin(), f.rates.end()), float(f.p_max));
    }
  }
}

TEST_F(SynthProfileTest, MeasuredSparsityFollowsTheProfileAndProfileIsStored) {
  ProfiledSynthOptions o;
  o.arch = "tiny";
  o.profile = parse_activation_profile("sparsity=0.95,hot=0.26:0.80,corr=0.5");
  write_profiled_opt(path("m.sf"), o);
  const auto ids = token_stream(2048, 1500);
  ProfileResult r;
  {
    const auto m = model::Model::open(path("m.sf"));
    EXPECT_TRUE(m->metadata().contains("synth.activation_profile"));
    r = profile_activations(*m, ids);
  }
  // Measured, not assumed: within 0.01 of the asked sparsity on a 256-neuron toy model.
  EXPECT_NEAR(r.sparsity, 0.95, 0.01);
  for (const auto& l : r.layers) EXPECT_NEAR(l.sparsity, 0.95, 0.015);
  EXPECT_GT(r.hot_fraction, 0.08);
  EXPECT_LT(r.hot_fraction, 0.4);
  EXPECT_GT(r.jaccard, 0.05);

  write_profile(path("m.sf"), r, "token_stream");
  EXPECT_TRUE(temporaries().empty());
  const auto f = sff::File::open(path("m.sf"));  // checksums verified
  EXPECT_EQ(f.metadata().at("profile.tokens"), 2048);
  EXPECT_EQ(f.metadata().at("profile.calibration"), "token_stream");
  const auto m = model::Model::open(path("m.sf"));
  const auto store = NeuronStore::from_model(*m);
  ASSERT_TRUE(store.has_profile());
  for (int64_t l = 0; l < 2; ++l)
    for (int64_t j = 0; j < 256; ++j) ASSERT_EQ(store.layer(l).firing_rate[j], r.layers[size_t(l)].firing_rate[size_t(j)]);
  // A second profile replaces the first (one entry per layer, new values).
  ProfileResult r2 = r;
  r2.tokens = 7;
  r2.layers[0].firing_rate.assign(256, 0.5f);
  write_profile(path("m.sf"), r2, "again");
  const auto f2 = sff::File::open(path("m.sf"));
  EXPECT_EQ(f2.metadata().at("profile.tokens"), 7);
  int count = 0;
  for (const auto& e : f2.entries()) count += e.name.rfind("profile.layers.", 0) == 0;
  EXPECT_EQ(count, 2);
  EXPECT_EQ(f2.entries().size(), f.entries().size());
}

TEST_F(SynthProfileTest, CorrelationFollowsCorrAndNeuronMajorSynthRuns) {
  const auto ids = token_stream(1024, 1500);
  double jac[2] = {};
  int i = 0;
  for (const char* spec : {"sparsity=0.9,corr=0.05", "sparsity=0.9,corr=0.85"}) {
    ProfiledSynthOptions o;
    o.profile = parse_activation_profile(spec);
    o.neuron_major = i == 1;
    write_profiled_opt(path("c.sf"), o);
    const auto m = model::Model::open(path("c.sf"));
    EXPECT_EQ(m->is_neuron_major(), i == 1);
    const auto r = profile_activations(*m, ids);
    EXPECT_NEAR(r.sparsity, 0.9, 0.02) << spec;
    jac[i++] = r.jaccard;
  }
  EXPECT_GT(jac[1], jac[0] + 0.1) << "jaccard " << jac[0] << " vs " << jac[1];
}

TEST_F(SynthProfileTest, HfOutputAndErrors) {
  ProfiledSynthOptions o;
  o.format = "hf";
  write_profiled_opt(path("dir"), o);
  const auto m = model::Model::open(path("dir"));
  EXPECT_EQ(m->config().hidden_size, 64);
  o.neuron_major = true;
  EXPECT_EQ(catch_error([&] { write_profiled_opt(path("dir2"), o); }).status(), Status::InvalidArgument);
  o.format = "sf";
  o.neuron_major = false;
  o.layers = 1;  // the first layer of tiny's two
  write_profiled_opt(path("one.sf"), o);
  EXPECT_EQ(model::Model::open(path("one.sf"))->config().num_hidden_layers, 1);
  EXPECT_EQ(model::Model::open(path("one.sf"))->config().hidden_size, 64);
  o.layers = 3;  // more than the arch has
  const auto e = catch_error([&] { write_profiled_opt(path("three.sf"), o); });
  EXPECT_EQ(e.status(), Status::InvalidArgument);
  EXPECT_NE(std::string(e.what()).find("1..2"), std::string::npos) << e.what();
  o.layers = 0;
  o.neuron_major = true;
  o.arch = "opt-999b";
  EXPECT_EQ(catch_error([&] { write_profiled_opt(path("x.sf"), o); }).status(), Status::InvalidArgument);
  EXPECT_EQ(catch_error([&] { profile_activations(*m, std::vector<int32_t>{2}); }).status(), Status::InvalidArgument);
}

}  // namespace
