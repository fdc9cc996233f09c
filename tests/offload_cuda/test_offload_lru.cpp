// The neuron cache's policy on the host (src/offload/cuda/lru_policy.hpp): the reference that the
// GPU lookup kernel is compared with in test_offload_cuda. CPU only.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "core/error.hpp"
#include "offload/cuda/lru_policy.hpp"

namespace sf::offload {
namespace {

std::vector<uint8_t> flags_of(int64_t ffn, std::initializer_list<int32_t> on) {
  std::vector<uint8_t> f(size_t(ffn), 0);
  for (int32_t b : on) f[size_t(b)] = 1;
  return f;
}

void check_invariants(const LruState& s) {
  for (int32_t sl = 0; sl < s.slots; ++sl)
    if (s.owner[size_t(sl)] >= 0) {
      EXPECT_EQ(s.slot_of[size_t(s.owner[size_t(sl)])], sl);
    }
  for (int64_t b = 0; b < s.ffn; ++b)
    if (s.slot_of[size_t(b)] >= 0) {
      EXPECT_EQ(s.owner[size_t(s.slot_of[size_t(b)])], b);
    }
}

TEST(LaneClassOrder, ClassesInOrderAndComplete) {
  for (int chunk : {4, 8})
    for (int64_t ffn : {int64_t(64), int64_t(256), int64_t(1000), int64_t(16384)}) {
      if (ffn % chunk) continue;
      std::mt19937 rng(unsigned(ffn + chunk));
      std::vector<uint8_t> f(static_cast<size_t>(ffn));
      for (auto& v : f) v = rng() % 3 == 0;
      std::array<int32_t, 33> cs{};
      const auto ids = lane_class_order(f, chunk, &cs);
      EXPECT_EQ(cs[0], 0);
      EXPECT_EQ(cs[32], int32_t(ids.size()));
      std::set<int32_t> seen(ids.begin(), ids.end());
      EXPECT_EQ(seen.size(), ids.size());
      size_t want = 0;
      for (auto v : f) want += v;
      EXPECT_EQ(ids.size(), want);
      for (int w = 0; w < 32; ++w)
        for (int32_t p = cs[size_t(w)]; p < cs[size_t(w + 1)]; ++p) {
          EXPECT_EQ((ids[size_t(p)] / chunk) % 32, w);
          if (p > cs[size_t(w)]) {
            EXPECT_LT(ids[size_t(p - 1)], ids[size_t(p)]);
          }
        }
    }
}

TEST(LruPolicy, PinnedNeuronsAreHitsAndNeverEvicted) {
  const std::vector<int32_t> hot = {5, 9};
  LruState s = LruState::make(64, hot, 2);
  for (int t = 0; t < 10; ++t) {
    const auto r = lru_lookup(s, flags_of(64, {5, int32_t(10 + t), int32_t(20 + t), int32_t(30 + t)}), 8, true);
    EXPECT_EQ(r.misses, 3);
    EXPECT_EQ(r.fetched, 2);
    EXPECT_EQ(r.overflow, 1);
    EXPECT_EQ(s.slot_of[5], 0);
    EXPECT_EQ(s.slot_of[9], 1);
    check_invariants(s);
  }
}

TEST(LruPolicy, EvictsTheLeastRecentlyUsedFreeSlotsFirstTiesToTheLowerSlot) {
  LruState s = LruState::make(64, {}, 3);
  auto r = lru_lookup(s, flags_of(64, {1}), 8, true);  // free slots: the lowest first
  EXPECT_EQ(r.fetch_slots, std::vector<int32_t>{0});
  r = lru_lookup(s, flags_of(64, {2, 3}), 8, true);
  EXPECT_EQ(r.fetch_slots, (std::vector<int32_t>{1, 2}));
  r = lru_lookup(s, flags_of(64, {1}), 8, true);  // hit: 1 is now the most recent
  EXPECT_EQ(r.misses, 0);
  // LRU is now slots 1 and 2 (stamp 2, tie -> slot 1 first), then slot 0 (stamp 3).
  r = lru_lookup(s, flags_of(64, {4}), 8, true);
  EXPECT_EQ(r.fetch_slots, std::vector<int32_t>{1});
  EXPECT_EQ(s.slot_of[2], -1);
  EXPECT_EQ(s.slot_of[3], 2);
  r = lru_lookup(s, flags_of(64, {5, 6}), 8, true);  // victims: slot 2 (stamp 2), slot 0 (stamp 3)
  EXPECT_EQ(r.fetch_slots, (std::vector<int32_t>{0, 2}));
  check_invariants(s);
}

TEST(LruPolicy, NeverEvictsANeuronTheCurrentStepUses) {
  LruState s = LruState::make(256, {}, 8);
  std::mt19937 rng(7);
  for (int t = 0; t < 200; ++t) {
    std::vector<uint8_t> f(256, 0);
    for (auto& v : f) v = rng() % 16 == 0;  // ~16 active > 8 slots
    std::vector<int32_t> cached_used;
    for (int b = 0; b < 256; ++b)
      if (f[size_t(b)] && s.slot_of[size_t(b)] >= 0) cached_used.push_back(b);
    const auto r = lru_lookup(s, f, 8, true);
    for (int32_t b : cached_used) EXPECT_GE(s.slot_of[size_t(b)], 0) << "step " << t << " evicted " << b;
    EXPECT_EQ(int32_t(r.ids.size()) - r.misses + r.fetched + r.overflow, int32_t(r.ids.size()));
    for (size_t p = 0; p < r.ids.size(); ++p) {
      if (r.slot[p] >= 0) {
        EXPECT_EQ(s.owner[size_t(r.slot[p])], r.ids[p]);
      } else {
        EXPECT_EQ(s.slot_of[size_t(r.ids[p])], -1);
      }
    }
    check_invariants(s);
  }
}

TEST(LruPolicy, WithoutAllocationNothingMoves) {
  LruState s = LruState::make(64, std::vector<int32_t>{3}, 4);
  const auto r = lru_lookup(s, flags_of(64, {3, 4, 5}), 8, false);
  EXPECT_EQ(r.misses, 2);
  EXPECT_EQ(r.fetched, 0);
  EXPECT_EQ(r.overflow, 2);
  for (int32_t sl = 1; sl < 5; ++sl) EXPECT_EQ(s.owner[size_t(sl)], -1);
}

TEST(LruPolicy, BadHotListsAreRefused) {
  EXPECT_THROW(LruState::make(8, std::vector<int32_t>{1, 1}, 0), Error);
  EXPECT_THROW(LruState::make(8, std::vector<int32_t>{8}, 0), Error);
}

}  // namespace
}  // namespace sf::offload
