#include "offload/cuda/lru_policy.hpp"

#include <algorithm>
#include <numeric>

#include "core/error.hpp"

namespace sf::offload {

LruState LruState::make(int64_t ffn, std::span<const int32_t> hot, int32_t lru_slots) {
  if (ffn <= 0 || lru_slots < 0 || int64_t(hot.size()) > ffn)
    fail(Status::InvalidArgument, "neuron cache: {} hot neurons and {} LRU slots do not fit a layer of {} neurons",
         hot.size(), lru_slots, ffn);
  LruState s;
  s.ffn = ffn;
  s.pinned = int32_t(hot.size());
  s.slots = s.pinned + lru_slots;
  s.slot_of.assign(size_t(ffn), -1);
  s.owner.assign(size_t(s.slots), -1);
  s.stamp.assign(size_t(s.slots), 0);
  for (int32_t k = 0; k < s.pinned; ++k) {
    const int32_t b = hot[size_t(k)];
    if (b < 0 || b >= ffn || s.slot_of[size_t(b)] >= 0)
      fail(Status::InvalidArgument, "neuron cache: hot neuron {} is out of range or listed twice", b);
    s.slot_of[size_t(b)] = k;
    s.owner[size_t(k)] = b;
  }
  return s;
}

std::vector<int32_t> lane_class_order(std::span<const uint8_t> flags, int chunk, std::array<int32_t, 33>* class_start) {
  const int64_t nchunks = int64_t(flags.size()) / chunk;
  std::vector<int32_t> ids;
  for (int w = 0; w < 32; ++w) {
    if (class_start) (*class_start)[size_t(w)] = int32_t(ids.size());
    for (int64_t c = w; c < nchunks; c += 32)
      for (int e = 0; e < chunk; ++e)
        if (flags[size_t(c * chunk + e)]) ids.push_back(int32_t(c * chunk + e));
  }
  if (class_start) (*class_start)[32] = int32_t(ids.size());
  return ids;
}

LruLookup lru_lookup(LruState& s, std::span<const uint8_t> flags, int chunk, bool allocate) {
  LruLookup r;
  r.ids = lane_class_order(flags, chunk, &r.class_start);
  const uint32_t now = ++s.step;
  r.slot.assign(r.ids.size(), -1);
  std::vector<size_t> miss;
  for (size_t p = 0; p < r.ids.size(); ++p) {
    const int32_t sl = s.slot_of[size_t(r.ids[p])];
    if (sl >= 0) {
      r.slot[p] = sl;
      if (sl >= s.pinned) s.stamp[size_t(sl)] = now;
    } else {
      miss.push_back(p);
    }
  }
  r.misses = int32_t(miss.size());
  if (allocate && !miss.empty()) {
    std::vector<int32_t> ev;
    for (int32_t sl = s.pinned; sl < s.slots; ++sl)
      if (s.stamp[size_t(sl)] != now) ev.push_back(sl);
    const size_t m = std::min(miss.size(), ev.size());
    std::stable_sort(ev.begin(), ev.end(), [&](int32_t a, int32_t b) { return s.stamp[size_t(a)] < s.stamp[size_t(b)]; });
    ev.resize(m);
    std::sort(ev.begin(), ev.end());  // paired with the misses in slot order
    for (size_t k = 0; k < m; ++k) {
      const size_t p = miss[k];
      const int32_t j = r.ids[p], v = ev[k];
      if (const int32_t old = s.owner[size_t(v)]; old >= 0) s.slot_of[size_t(old)] = -1;
      s.owner[size_t(v)] = j;
      s.slot_of[size_t(j)] = v;
      s.stamp[size_t(v)] = now;
      r.slot[p] = v;
      r.fetch_ids.push_back(j);
      r.fetch_slots.push_back(v);
    }
    r.fetched = int32_t(m);
  }
  r.overflow = r.misses - r.fetched;
  return r;
}

}  // namespace sf::offload
