#include "tokenizer/bpe_model.hpp"

#include <algorithm>
#include <climits>
#include <mutex>
#include <queue>

#include <fmt/format.h>

#include "core/error.hpp"
#include "tokenizer/byte_level.hpp"
#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

// Words recur; long ones (runs of one class, or a whole SentencePiece segment) rarely do.
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = size_t{1} << 16;

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

}  // namespace

struct BpeModel::Cache {
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> words;
};

BpeModel::BpeModel() : cache_(std::make_unique<Cache>()) {}
BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;
BpeModel::~BpeModel() = default;

BpeModel::BpeModel(Vocab vocab, const std::vector<MergeRule>& merges, BpeOptions options)
    : vocab_(std::move(vocab)), options_(options), cache_(std::make_unique<Cache>()) {
  std::vector<const std::string*> spelling;
  if (!options_.byte_level) {
    for (const auto& [token, id] : vocab_) {
      if (spelling.size() <= static_cast<size_t>(id)) spelling.resize(static_cast<size_t>(id) + 1);
      spelling[id] = &token;
    }
  }
  for (int32_t rank = 0; rank < static_cast<int32_t>(merges.size()); ++rank) {
    const MergeRule& m = merges[rank];
    merges_[pair_key(m.left, m.right)] = Merge{rank, m.merged};
    if (!options_.byte_level) merged_.push_back(*spelling.at(m.merged));
  }
  byte_ids_.assign(256, -1);
  for (int b = 0; b < 256; ++b) {
    const std::string name = options_.byte_level ? byte_level_spelling(std::string(1, char(b)))
                                                 : fmt::format("<0x{:02X}>", b);
    if (auto it = vocab_.find(name); it != vocab_.end()) byte_ids_[b] = it->second;
  }
  ascii_ids_.assign(128, -1);
  for (int c = 0; c < 128; ++c) {
    auto it = vocab_.find(std::string(1, static_cast<char>(c)));
    if (it != vocab_.end()) ascii_ids_[c] = it->second;
  }
  if (options_.byte_level && options_.ignore_merges) {
    for (const auto& [token, id] : vocab_) {
      if (auto bytes = byte_level_bytes(token)) raw_words_.emplace(std::move(*bytes), id);
    }
  }
}

const BpeModel::Merge* BpeModel::find_merge(int32_t left, int32_t right) const {
  auto it = merges_.find(pair_key(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& ids) const {
  int32_t unk_pending = -1;  // an unknown token not yet added (it may fuse with the next)
  for (size_t pos = 0; pos < word.size();) {
    // A symbol is a byte (byte-level) or a character.
    const size_t len = options_.byte_level ? 1 : decode_utf8(word, pos).len;
    const std::string_view ch = word.substr(pos, len);
    pos += len;
    const auto c0 = static_cast<uint8_t>(ch[0]);
    int32_t id = -1;
    if (options_.byte_level) {
      id = byte_ids_[c0];  // -1 for a byte some vocabularies lack (SmolLM2 has no 0x04)
    } else if (c0 < 128) {
      id = ascii_ids_[c0];
    } else if (auto it = vocab_.find(ch); it != vocab_.end()) {
      id = it->second;
    }
    if (id >= 0) {
      if (unk_pending >= 0) ids.push_back(unk_pending);
      unk_pending = -1;
      ids.push_back(id);
      continue;
    }
    if (options_.byte_fallback && !options_.byte_level &&
        std::all_of(ch.begin(), ch.end(), [&](char c) { return byte_ids_[uint8_t(c)] >= 0; })) {
      // As in HF, a pending unknown token stays pending across the byte tokens.
      for (char c : ch) ids.push_back(byte_ids_[static_cast<uint8_t>(c)]);
      continue;
    }
    if (options_.unk_id < 0) continue;  // no unknown token: the character is dropped, as in HF
    if (unk_pending >= 0 && !options_.fuse_unk) ids.push_back(unk_pending);
    unk_pending = options_.unk_id;
  }
  if (unk_pending >= 0) ids.push_back(unk_pending);
}

// Merges with a heap of candidate pairs (n log n; the textbook rescan per merge is quadratic on
// long words). A queued candidate is stale when its position no longer holds a pair that merges
// into the same token; HF checks exactly this, so the ranks tie-break identically.
void BpeModel::merge(std::vector<int32_t>& ids) const {
  struct Symbol {
    int32_t id, prev, next;  // prev/next: -1 at the ends
    bool alive;
  };
  struct Candidate {
    int32_t rank, pos, merged;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  if (ids.size() < 2 || merges_.empty()) return;
  if (ids.size() > static_cast<size_t>(INT32_MAX)) {
    fail(Status::InvalidArgument,
         "a single word of {} symbols is too long to tokenize; expected "
         "at most {} between the pre-tokenizer's splits",
         ids.size(), INT32_MAX);
  }
  const auto n = static_cast<int32_t>(ids.size());
  std::vector<Symbol> sym(ids.size());
  for (int32_t i = 0; i < n; ++i) sym[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1, true};
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  const auto push = [&](int32_t pos) {
    if (pos < 0 || sym[pos].next < 0) return;
    if (const Merge* m = find_merge(sym[pos].id, sym[sym[pos].next].id)) {
      heap.push({m->rank, pos, m->merged});
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& s = sym[c.pos];
    if (!s.alive || s.next < 0) continue;
    const Merge* now = find_merge(s.id, sym[s.next].id);
    if (now == nullptr || now->merged != c.merged) continue;
    Symbol& r = sym[s.next];
    s.id = c.merged;
    r.alive = false;
    s.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.pos;
    push(s.prev);
    push(c.pos);
  }
  ids.clear();
  for (int32_t i = 0; i >= 0; i = sym[i].next) ids.push_back(sym[i].id);
}

bool BpeModel::split_words_at(std::string_view marker) {
  if (options_.byte_level || options_.ignore_merges || marker.empty() || !vocab_.contains(marker)) {
    return false;
  }
  const auto only_markers = [&](std::string_view t) {
    for (; t.starts_with(marker); t.remove_prefix(marker.size())) {
    }
    return t.empty();
  };
  for (const std::string& token : merged_) {
    if (token.find(marker, 1) != std::string::npos && !only_markers(token)) return false;
  }
  marker_ = marker;
  merged_ = {};
  return true;
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (marker_.empty()) {
    encode_piece(word, out);
    return;
  }
  // Pieces start where a run of markers does.
  size_t start = 0;
  for (size_t hit = word.find(marker_, 1); hit != std::string_view::npos;) {
    const size_t next = word.find(marker_, hit + marker_.size());
    if (hit < marker_.size() || word.substr(hit - marker_.size(), marker_.size()) != marker_) {
      encode_piece(word.substr(start, hit - start), out);
      start = hit;
    }
    hit = next;
  }
  encode_piece(word.substr(start), out);
}

void BpeModel::encode_piece(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    const Vocab& whole = options_.byte_level ? raw_words_ : vocab_;
    if (auto it = whole.find(word); it != whole.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (options_.byte_level && word.size() == 1 && byte_ids_[static_cast<uint8_t>(word[0])] >= 0) {
    out.push_back(byte_ids_[static_cast<uint8_t>(word[0])]);
    return;
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard lock(cache_->mutex);
    auto it = cache_->words.find(word);
    if (it != cache_->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  initial_symbols(word, ids);
  merge(ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard lock(cache_->mutex);
    if (cache_->words.size() >= kMaxCacheEntries) cache_->words.clear();
    cache_->words.emplace(std::string(word), std::move(ids));
  }
}

}  // namespace sf::tok
