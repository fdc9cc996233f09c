// The placement planner and size parsing: budget edges (too small names the minimum, exactly the
// minimum works, one byte less does not, the whole model fits), hot neurons chosen greedily by
// firing rate across layers, the cache ratio, host placement (pinned, mmap, refused), and attention
// weights moved to the host only as far as the budget needs (the fewest last layers).
#include <cstdio>
#include <numeric>

#include <fmt/format.h>

#include "offload/decode_limit.hpp"
#include "offload/planner.hpp"
#include "sf_test_util.hpp"

using namespace sf;
using namespace sf::offload;
using sftest::catch_error;

namespace {

PlannerInput toy(std::vector<std::vector<float>>* rates = nullptr) {
  PlannerInput in;
  in.layers = 2;
  in.hidden = 64;
  in.ffn = 1024;
  in.embedding_bytes = 1000000;
  in.attention_bytes = 500000;
  in.norm_bytes = 1000;
  in.ffn_bias_bytes = 256;
  in.predictor_bytes = 20000;
  in.bundle_stride = 384;
  in.kv_cache_bytes = 65536;
  in.workspace_bytes = 100000;
  if (rates)
    for (const auto& r : *rates) in.firing_rates.emplace_back(r);
  return in;
}

TEST(SizeSpec, Parses) {
  EXPECT_EQ(parse_size_spec("6GiB", "x").resolve(0), 6ull << 30);
  EXPECT_EQ(parse_size_spec("6 GB", "x").resolve(0), 6000000000ull);
  EXPECT_EQ(parse_size_spec("6000MiB", "x").resolve(0), 6000ull << 20);
  EXPECT_EQ(parse_size_spec("512M", "x").resolve(0), 512ull << 20);
  EXPECT_EQ(parse_size_spec("1.5gib", "x").resolve(0), 3ull << 29);
  EXPECT_EQ(parse_size_spec("123456", "x").resolve(0), 123456u);
  EXPECT_TRUE(parse_size_spec("0.5", "x").fraction);
  EXPECT_EQ(parse_size_spec("0.5", "x").resolve(1000), 500u);
  EXPECT_EQ(parse_size_spec("30%", "x").resolve(1000), 300u);
  for (const char* bad : {"", "abc", "6XB", "-1GiB", "0", "150%", "2.5", "GiB"}) {
    const auto e = catch_error([&] { parse_size_spec(bad, "--gpu-memory"); });
    EXPECT_EQ(e.status(), Status::InvalidArgument) << bad;
    EXPECT_NE(std::string(e.what()).find("--gpu-memory"), std::string::npos);
  }
}

TEST(Planner, BudgetEdges) {
  PlannerInput in = toy();
  in.gpu_budget = 1;
  const auto e = catch_error([&] { plan_placement(in); });
  EXPECT_EQ(e.status(), Status::InvalidArgument);
  const std::string msg = e.what();
  EXPECT_NE(msg.find("raise it to at least"), std::string::npos) << msg;
  EXPECT_NE(msg.find("embeddings"), std::string::npos) << msg;
  // The minimum: fixed bytes + the minimal cache (ffn/8 slots per layer without a profile).
  const uint64_t min = in.fixed_bytes() + 2 * 128 * in.bundle_stride;
  in.gpu_budget = min - 1;
  EXPECT_EQ(catch_error([&] { plan_placement(in); }).status(), Status::InvalidArgument);
  in.gpu_budget = min;  // exactly enough
  const Plan p = plan_placement(in);
  EXPECT_EQ(p.min_gpu_bytes, min);
  EXPECT_FALSE(p.whole_model_resident);
  for (const auto& l : p.layers) {
    EXPECT_EQ(l.hot, 0);
    EXPECT_EQ(l.cache_slots, 128);
  }
  EXPECT_LE(p.fixed_bytes + p.hot_bytes + p.cache_bytes, in.gpu_budget);
  // The whole model fits: everything resident.
  in.gpu_budget = in.fixed_bytes() + in.ffn_bytes();
  const Plan all = plan_placement(in);
  EXPECT_TRUE(all.whole_model_resident);
  EXPECT_EQ(all.layers[1].hot, 1024);
  EXPECT_EQ(all.expected_hit, 1.0);
  // One bundle less: offloaded, and the plan never exceeds the budget.
  in.gpu_budget -= in.bundle_stride;
  const Plan almost = plan_placement(in);
  EXPECT_FALSE(almost.whole_model_resident);
  EXPECT_LE(almost.fixed_bytes + almost.hot_bytes + almost.cache_bytes, in.gpu_budget);
  EXPECT_FALSE(almost.table().empty());
}

TEST(Planner, HotNeuronsFollowFiringRatesAcrossLayers) {
  // Layer 0 is much hotter than layer 1: it should get most pinned neurons.
  std::vector<std::vector<float>> rates(2, std::vector<float>(1024));
  for (int j = 0; j < 1024; ++j) {
    rates[0][size_t(j)] = 0.5f / float(1 + j);
    rates[1][size_t(j)] = 0.05f / float(1 + j);
  }
  PlannerInput in = toy(&rates);
  in.gpu_cache_ratio = 0.25;
  in.gpu_budget = in.fixed_bytes() + 800 * in.bundle_stride;
  const Plan p = plan_placement(in);
  int64_t slots = 0;
  for (const auto& l : p.layers) slots += l.hot + l.cache_slots;
  EXPECT_EQ(slots, 800);
  EXPECT_GT(p.layers[0].hot, p.layers[1].hot);
  EXPECT_GT(p.expected_hit, 0.5);
  // The hot set of a layer: the highest rates first, so its coverage beats the uniform share.
  EXPECT_GT(p.layers[0].hot_coverage, double(p.layers[0].hot) / 1024.0);
  // Minimum cache from the profile: 2 * expected active per token, at least 64.
  EXPECT_EQ(min_cache_slots(in, 1), 64);
}

TEST(Planner, HostPlacement) {
  PlannerInput in = toy();
  in.gpu_budget = in.fixed_bytes() + 600 * in.bundle_stride;
  EXPECT_EQ(plan_placement(in).host, HostPlacement::Pinned);
  in.host_limit = 1000;
  const auto e = catch_error([&] { plan_placement(in); });
  EXPECT_NE(std::string(e.what()).find("--neuron-major"), std::string::npos) << e.what();
  in.bundles_in_file = true;
  EXPECT_EQ(plan_placement(in).host, HostPlacement::Mmap);
  in.gpu_cache_ratio = 1.5;
  EXPECT_EQ(catch_error([&] { plan_placement(in); }).status(), Status::InvalidArgument);
}

// Four layers whose attention weights may move to the host, of unequal sizes so that "the last k"
// shows in the bytes.
PlannerInput toy_attention() {
  PlannerInput in = toy();
  in.layers = 4;
  in.attention_weight_bytes = {100000, 110000, 120000, 130000};
  in.attention_bytes = 460000 + 4 * 1000;  // + biases, which stay
  return in;
}

TEST(PlannerAttentionOnHost, MovesTheFewestLastLayers) {
  PlannerInput in = toy_attention();
  const uint64_t fixed = in.fixed_bytes(), min_cache = 4 * 128 * in.bundle_stride;
  // Everything fits, and exactly the all-resident minimum: nothing moves.
  for (uint64_t budget : {fixed + in.ffn_bytes(), fixed + min_cache}) {
    in.gpu_budget = budget;
    const Plan p = plan_placement(in);
    EXPECT_EQ(p.attention_host_layers, 0) << budget;
    EXPECT_EQ(p.attention_host_bytes, 0u);
    EXPECT_EQ(p.fixed_bytes, fixed);
    EXPECT_EQ(p.table().find("on the host ("), std::string::npos);
  }
  // A budget that holds all but the last k layers' attention gets exactly k; one byte less, k + 1.
  uint64_t moved = 0;
  for (int64_t k = 1; k <= 4; ++k) {
    moved += in.attention_weight_bytes[size_t(4 - k)];
    in.gpu_budget = fixed - moved + min_cache;
    const Plan p = plan_placement(in);
    EXPECT_EQ(p.attention_host_layers, k);
    EXPECT_EQ(p.attention_host_bytes, moved);
    EXPECT_EQ(p.fixed_bytes, fixed - moved);
    EXPECT_EQ(p.min_gpu_bytes, fixed - 460000 + min_cache);
    EXPECT_LE(p.fixed_bytes + p.hot_bytes + p.cache_bytes, in.gpu_budget);
    const std::string t = p.table();
    EXPECT_NE(t.find(fmt::format("weights of layers {}..3 on the host", 4 - k)), std::string::npos) << t;
    if (k < 4) {
      in.gpu_budget -= 1;
      EXPECT_EQ(plan_placement(in).attention_host_layers, k + 1);
    }
  }
  // Between the edges: the budget left after the moved layers goes to the FFN, within the budget.
  in.gpu_budget = fixed - 200000 + min_cache + 50 * in.bundle_stride;
  const Plan mid = plan_placement(in);
  EXPECT_EQ(mid.attention_host_layers, 2);  // 130000 + 120000 >= 200000 - 50 bundles
  EXPECT_LE(mid.fixed_bytes + mid.hot_bytes + mid.cache_bytes, in.gpu_budget);
  int64_t slots = 0;
  for (const auto& l : mid.layers) slots += l.hot + l.cache_slots;
  EXPECT_EQ(uint64_t(slots), (in.gpu_budget - mid.fixed_bytes) / in.bundle_stride);
}

TEST(PlannerAttentionOnHost, BelowTheNewMinimumIsRefusedNamingIt) {
  PlannerInput in = toy_attention();
  const uint64_t min = in.fixed_bytes() - 460000 + 4 * 128 * in.bundle_stride;
  in.gpu_budget = min - 1;
  const auto e = catch_error([&] { plan_placement(in); });
  EXPECT_EQ(e.status(), Status::InvalidArgument);
  const std::string msg = e.what();
  EXPECT_NE(msg.find("below the " + format_bytes(min)), std::string::npos) << msg;
  EXPECT_NE(msg.find("counted on the host"), std::string::npos) << msg;
  EXPECT_NE(msg.find("raise it to at least"), std::string::npos) << msg;
  in.gpu_budget = min;
  const Plan p = plan_placement(in);
  EXPECT_EQ(p.attention_host_layers, 4);
  EXPECT_EQ(p.min_gpu_bytes, min);
  EXPECT_LE(p.fixed_bytes + p.hot_bytes + p.cache_bytes, in.gpu_budget);
  // Without movable attention (2:4), the old minimum holds.
  in.attention_weight_bytes.clear();
  EXPECT_EQ(catch_error([&] { plan_placement(in); }).status(), Status::InvalidArgument);
  in.attention_weight_bytes = {1, 2};  // not one entry per layer
  in.gpu_budget = uint64_t(1) << 40;
  EXPECT_EQ(catch_error([&] { plan_placement(in); }).status(), Status::InvalidArgument);
}

// OPT-6.7B as the H200 benchmark runs it (fp16, prompt 8 + 64 new tokens, rank-128 predictors,
// 97% sparsity: 3% firing rate per neuron) at --gpu-memory 0.3: with all attention resident the
// minimum is 5.20 GiB (fixed 4.72 + minimal cache 0.48), the budget 3.79 GiB, so the last 12 layers'
// attention (1.50 GiB) is read over PCIe every token.
// OPT-6.7B's byte counts (fp16, rank-128 predictors, a 72-token context) at 3% firing everywhere.
struct Opt67b {
  static constexpr int64_t L = 32, d = 4096, F = 16384, V = 50272;
  std::vector<float> rate = std::vector<float>(size_t(F), 0.03f);
  PlannerInput in;
  explicit Opt67b(const char* budget) {
    in.layers = L;
    in.hidden = d;
    in.ffn = F;
    in.embedding_bytes = uint64_t(V + 2050) * d * 2;
    in.attention_weight_bytes.assign(size_t(L), uint64_t(4) * d * d * 2);
    in.attention_bytes = uint64_t(L) * (4 * d * d + 4 * d) * 2;
    in.norm_bytes = uint64_t(2 * d + L * 4 * d) * 2;
    in.ffn_bias_bytes = uint64_t(L) * d * 2;
    in.predictor_bytes = uint64_t(L) * ((d * 128 + 128 * F) * 2 + F * 4);
    in.bundle_stride = 16512;
    in.kv_cache_bytes = uint64_t(2) * L * 72 * d * 2;
    in.workspace_bytes = (uint64_t(64) << 20) + 2 * uint64_t(V) * 4 + uint64_t(F) * in.bundle_stride / 4;
    for (int64_t l = 0; l < L; ++l) in.firing_rates.emplace_back(rate);
    in.gpu_budget = parse_size_spec(budget, "--gpu-memory").resolve(in.model_bytes());
  }
};

TEST(PlannerAttentionOnHost, Opt67bAtThirtyPercent) {
  const Opt67b m("0.3");
  const int64_t d = Opt67b::d;
  const Plan p = plan_placement(m.in);
  std::printf("%s", p.table().c_str());
  EXPECT_EQ(p.attention_host_layers, 12);
  EXPECT_EQ(p.attention_host_bytes, uint64_t(12) * 4 * d * d * 2);
  EXPECT_LE(p.fixed_bytes + p.hot_bytes + p.cache_bytes, m.in.gpu_budget);
}

// The offloaded token's limit: GPU-memory bytes from the plan and the run's listed neurons (fc2 only
// for the share that fired), PCIe bytes from the run, each at its bandwidth, the larger one binding.
TEST(DecodeLimit, BytesFromThePlanAndTheRun) {
  const Opt67b m("0.3");
  const int64_t L = Opt67b::L, d = Opt67b::d, V = Opt67b::V;
  const Plan p = plan_placement(m.in);
  OffloadStats st;
  st.tokens = 10;
  st.active = 10 * 30000.0;  // 30000 listed neurons per token
  st.pcie_bytes = 10 * 1.6e9;
  DecodeLimitInput in;
  in.head_bytes = uint64_t(V) * d * 2;
  in.kv_share = 0.5;
  in.hbm_GBps = 4000;
  in.pcie_GBps = 50;
  EXPECT_FALSE(decode_limit(p, st, in).has_value());  // precision not measured: fc2's bytes unknown
  st.exact_rows = 64;
  st.true_pos = 300;
  st.false_pos = 100;  // precision 0.75
  const auto l = decode_limit(p, st, in);
  ASSERT_TRUE(l.has_value());
  // 20 layers' attention weights on the GPU (all 32 layers' biases), the head, norms, b2, predictors,
  // half the KV cache, 30000 fc1 rows and 22500 fc2 columns.
  const double gpu = double(L) * (4 * d * d + 4 * d) * 2 - 12.0 * 4 * d * d * 2 + double(V) * d * 2 +
                     double(m.in.norm_bytes) + double(m.in.ffn_bias_bytes) + double(m.in.predictor_bytes) +
                     0.5 * double(m.in.kv_cache_bytes) + (30000.0 + 22500.0) * d * 2;
  EXPECT_NEAR(l->gpu_bytes, gpu, 1.0);
  EXPECT_DOUBLE_EQ(l->pcie_bytes, 1.6e9);
  EXPECT_NEAR(l->hbm_ms, gpu / 4e9, 1e-9);
  EXPECT_NEAR(l->pcie_ms, 32.0, 1e-9);
  EXPECT_DOUBLE_EQ(l->ms(), l->pcie_ms);  // at 30% the PCIe bytes bind
  EXPECT_NEAR(l->fraction(25.0), 0.8, 1e-12);
  in.pcie_GBps = 0;
  EXPECT_FALSE(decode_limit(p, st, in).has_value());  // PCIe bytes but no DMA bandwidth
  st.pcie_bytes = 0;  // a resident run: nothing over PCIe, no probe; the HBM bytes bind
  const auto r = decode_limit(p, st, in);
  ASSERT_TRUE(r.has_value());
  EXPECT_DOUBLE_EQ(r->pcie_ms, 0.0);
  EXPECT_DOUBLE_EQ(r->ms(), r->hbm_ms);
}

}  // namespace
