// The neuron cache's policy on the host: the same pure function of (state, flags) that the GPU's
// lookup kernel (neuron_cache.cu) computes. It is the reference the GPU tests compare with, and
// what the CPU tests check the policy's properties on (no GPU needed). Built in every build.
//
// Policy, per layer and token (a "step"):
//   - the active list is the flagged neurons in lane-class order (offload_kernels.hpp);
//   - an entry whose neuron has a slot is a hit; an LRU hit's stamp becomes the step;
//   - misses, in list order, take the evictable slots (LRU region, stamp != step: never a slot this
//     step uses, never a pinned one) with the smallest (stamp, slot): exact LRU, free slots first
//     (stamp 0), ties to the lower slot; victims are paired with misses in slot order;
//   - misses beyond the evictable slots, or every miss when not allocating, get slot -1: the FFN
//     reads them from the backing (host) copy, or the CPU computes them.
#pragma once
#include <array>
#include <cstdint>
#include <span>
#include <vector>

namespace sf::offload {

struct LruState {
  int64_t ffn = 0;
  int32_t pinned = 0, slots = 0;
  uint32_t step = 0;
  std::vector<int32_t> slot_of;  // [ffn], -1 absent
  std::vector<int32_t> owner;    // [slots], -1 free
  std::vector<uint32_t> stamp;   // [slots]
  // hot neurons in slots [0, hot.size()), then `lru_slots` free LRU slots. Throws on bad ids.
  static LruState make(int64_t ffn, std::span<const int32_t> hot, int32_t lru_slots);
};

struct LruLookup {
  std::vector<int32_t> ids;   // the active list, lane-class order
  std::vector<int32_t> slot;  // per entry after the lookup, -1: read from the backing
  std::array<int32_t, 33> class_start{};
  int32_t misses = 0, fetched = 0, overflow = 0;
  std::vector<int32_t> fetch_ids, fetch_slots;  // [fetched]
};

// Neurons with flags[b] != 0 ordered by (class = (b / chunk) % 32, then b).
std::vector<int32_t> lane_class_order(std::span<const uint8_t> flags, int chunk, std::array<int32_t, 33>* class_start);

// One step of the policy (advances state.step).
LruLookup lru_lookup(LruState& state, std::span<const uint8_t> flags, int chunk, bool allocate);

}  // namespace sf::offload
