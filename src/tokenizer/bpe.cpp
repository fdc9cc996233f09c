#include "tokenizer/bpe.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <climits>
#include <mutex>
#include <queue>

#include "core/error.hpp"
#include "core/input_file.hpp"
#include "tokenizer/pretokenize.hpp"
#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

// Ids index a dense table; a vocabulary claiming larger ids is damaged (GPT-2's has 50257).
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;
// Pieces longer than this are rare (long runs of one class) and not worth caching.
constexpr size_t kMaxCachedPieceBytes = 256;
constexpr size_t kMaxCacheEntries = size_t{1} << 16;

// GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for themselves, the other 68 bytes
// (controls, space, DEL, NBSP, soft hyphen) are moved to U+0100.. so every token is printable.
std::array<char32_t, 256> make_byte_to_unicode() {
  std::array<char32_t, 256> map{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    map[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return map;
}
const std::array<char32_t, 256> kByteToUnicode = make_byte_to_unicode();

int unicode_to_byte(char32_t cp) {
  if (cp < 256) return kByteToUnicode[cp] == cp ? static_cast<int>(cp) : -1;
  for (int b = 0; b < 256; ++b) {
    if (kByteToUnicode[b] == cp) return b;
  }
  return -1;
}

std::string byte_symbol(uint8_t b) {
  std::string s;
  append_utf8(s, kByteToUnicode[b]);
  return s;
}

// A token's raw bytes: each character through the inverse byte map; a token with a character
// outside the map stands for its own UTF-8 (HF's Rust ByteLevel decoder does the same).
std::string token_to_bytes(const std::string& token) {
  std::string out;
  for (size_t pos = 0; pos < token.size();) {
    const Decoded d = decode_utf8(token, pos);
    const int b = d.valid ? unicode_to_byte(d.cp) : -1;
    if (b < 0) return token;
    out += static_cast<char>(b);
    pos += d.len;
  }
  return out;
}

// For error messages: at most 60 bytes of `s`, escaped.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < 60; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += s.size() > 60 ? "...\"" : "\"";
  return out;
}

std::string read_file(const std::string& path, const char* what) {
  return read_text_file(path, fmt::format("the tokenizer's {}", what));
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

}  // namespace

// Words recur: a bounded map from piece bytes to ids, shared by threads.
struct Tokenizer::Cache {
  struct Hash {  // lets find() take the piece as a string_view, without a copy
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> words;
};

Tokenizer::Tokenizer() : cache_(std::make_unique<Cache>()) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json_and_merges(std::string_view vocab_json, std::string_view merges_txt,
                                          const std::vector<std::string>& special_tokens) {
  Tokenizer t;
  // --- vocab.json: {"token": id}
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(vocab_json);
  } catch (const nlohmann::json::exception& e) {
    fail(Status::Format, "vocab.json is not valid JSON ({}); expected an object mapping each "
         "token to its id, as in a Hugging Face GPT-2/OPT checkpoint", e.what());
  }
  if (!vocab.is_object()) {
    fail(Status::Format, "vocab.json must be a JSON object mapping tokens to ids, found a {}",
         vocab.type_name());
  }
  int64_t max_id = -1;
  for (const auto& [token, value] : vocab.items()) {
    if (!value.is_number_integer()) {
      fail(Status::Format, "vocab.json: token {} has the value {}; expected an integer id",
           quote(token), quote(value.dump()));
    }
    const int64_t id = value.get<int64_t>();
    if (id < 0 || id > kMaxTokenId) {
      fail(Status::Format, "vocab.json: token {} has id {}; expected 0 <= id <= {}", quote(token),
           id, kMaxTokenId);
    }
    max_id = std::max(max_id, id);
    t.token_to_id_.emplace(token, static_cast<int32_t>(id));
  }
  t.id_to_bytes_.resize(static_cast<size_t>(max_id + 1));
  t.id_used_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : t.token_to_id_) {
    if (t.id_used_[id]) {
      fail(Status::Format, "vocab.json: id {} is given to two tokens ({} and another); expected "
           "each id once", id, quote(token));
    }
    t.id_used_[id] = true;
    t.id_to_bytes_[id] = token_to_bytes(token);
  }
  t.byte_ids_.resize(256);
  for (int b = 0; b < 256; ++b) {
    const std::string sym = byte_symbol(static_cast<uint8_t>(b));
    auto it = t.token_to_id_.find(sym);
    if (it == t.token_to_id_.end()) {
      fail(Status::Format, "vocab.json has no token for the byte 0x{:02x} (symbol {}); a byte-level "
           "BPE vocabulary has all 256 byte symbols, so this is not a GPT-2-style vocab.json",
           b, quote(sym));
    }
    t.byte_ids_[b] = it->second;
  }

  // --- merges.txt: "left right" per line, in priority order
  int32_t rank = 0;
  size_t line_no = 0;
  for (size_t pos = 0; pos < merges_txt.size();) {
    size_t eol = merges_txt.find('\n', pos);
    if (eol == std::string_view::npos) eol = merges_txt.size();
    std::string_view line = merges_txt.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.starts_with("#version")) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string_view::npos || sp == 0 || sp + 1 == line.size() ||
        line.find(' ', sp + 1) != std::string_view::npos) {
      fail(Status::Format, "merges.txt line {}: expected two tokens separated by one space, "
           "found {}", line_no, quote(line));
    }
    const std::string left(line.substr(0, sp)), right(line.substr(sp + 1));
    const auto l = t.token_to_id_.find(left), r = t.token_to_id_.find(right),
               m = t.token_to_id_.find(left + right);
    if (l == t.token_to_id_.end() || r == t.token_to_id_.end() || m == t.token_to_id_.end()) {
      const std::string& missing =
          l == t.token_to_id_.end() ? left : r == t.token_to_id_.end() ? right : left + right;
      fail(Status::Format, "merges.txt line {} ({}) uses the token {}, which vocab.json does not "
           "have; are vocab.json and merges.txt from the same checkpoint?", line_no, quote(line),
           quote(missing));
    }
    // A repeated pair takes its later rank, as in both HF implementations.
    t.merges_[pair_key(l->second, r->second)] = Merge{rank++, m->second};
  }

  for (const auto& s : special_tokens) {
    auto it = t.token_to_id_.find(s);
    if (!s.empty() && it != t.token_to_id_.end()) t.special_.emplace_back(s, it->second);
  }
  // Longest first: at one position the longest special token wins.
  std::stable_sort(t.special_.begin(), t.special_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  return t;
}

Tokenizer Tokenizer::from_files(const std::string& vocab_path, const std::string& merges_path,
                                const std::vector<std::string>& special_tokens) {
  const std::string vocab = read_file(vocab_path, "vocab.json");
  const std::string merges = read_file(merges_path, "merges.txt");
  try {
    return from_json_and_merges(vocab, merges, special_tokens);
  } catch (const Error& e) {
    throw Error(e.status(), fmt::format("{} (files: {}, {})", e.what(), vocab_path, merges_path));
  }
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  auto it = token_to_id_.find(std::string(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

std::optional<Tokenizer::Merge> Tokenizer::find_merge(int32_t left, int32_t right) const {
  auto it = merges_.find(pair_key(left, right));
  if (it == merges_.end()) return std::nullopt;
  return it->second;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::string repaired;
  if (!is_valid_utf8(text)) {
    repaired = to_valid_utf8(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  size_t start = 0;
  for (size_t pos = 0; pos < text.size();) {
    const std::pair<std::string, int32_t>* hit = nullptr;
    for (const auto& sp : special_) {
      if (text.substr(pos).starts_with(sp.first)) {
        hit = &sp;
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    encode_ordinary(text.substr(start, pos - start), ids);
    ids.push_back(hit->second);
    pos += hit->first.size();
    start = pos;
  }
  encode_ordinary(text.substr(start), ids);
  return ids;
}

std::vector<int32_t> Tokenizer::encode_with_bos(std::string_view text, int32_t bos_id) const {
  std::vector<int32_t> ids{bos_id};
  const auto rest = encode(text);
  ids.insert(ids.end(), rest.begin(), rest.end());
  return ids;
}

void Tokenizer::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  for (const Piece& p : pretokenize(text)) encode_piece(text.substr(p.begin, p.end - p.begin), out);
}

void Tokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.size() == 1) {
    out.push_back(byte_ids_[static_cast<uint8_t>(piece[0])]);
    return;
  }
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    std::lock_guard lock(cache_->mutex);
    auto it = cache_->words.find(piece);
    if (it != cache_->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  bpe(piece, out);
  if (cacheable) {
    std::lock_guard lock(cache_->mutex);
    if (cache_->words.size() >= kMaxCacheEntries) cache_->words.clear();
    cache_->words.emplace(std::string(piece), std::vector<int32_t>(out.begin() + first, out.end()));
  }
}

// Merges the piece's byte symbols, lowest rank first and leftmost among equal ranks, with a heap
// of candidate pairs (n log n; the textbook rescan-per-merge is quadratic on long pieces).
// Candidates go stale when a neighbour merges; they are recognised by the ids no longer matching.
void Tokenizer::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // -1 at the ends
    bool alive;
  };
  struct Candidate {
    int32_t rank, pos, left, right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  if (piece.empty()) return;
  if (piece.size() > static_cast<size_t>(INT32_MAX)) {
    fail(Status::InvalidArgument, "a single word of {} bytes is too long to tokenize; expected at "
         "most {} bytes between spaces", piece.size(), INT32_MAX);
  }
  const auto n = static_cast<int32_t>(piece.size());
  std::vector<Symbol> sym(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    sym[i] = {byte_ids_[static_cast<uint8_t>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  const auto push = [&](int32_t pos) {
    if (pos < 0 || sym[pos].next < 0) return;
    const int32_t left = sym[pos].id, right = sym[sym[pos].next].id;
    if (auto m = find_merge(left, right)) heap.push({m->rank, pos, left, right});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& s = sym[c.pos];
    if (!s.alive || s.next < 0 || s.id != c.left || sym[s.next].id != c.right) continue;
    Symbol& r = sym[s.next];
    s.id = find_merge(c.left, c.right)->merged_id;
    r.alive = false;
    s.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.pos;
    push(s.prev);
    push(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

const std::string& Tokenizer::bytes_of(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_bytes_.size() || !id_used_[id]) {
    fail(Status::InvalidArgument, "token id {} is not in the vocabulary (ids are 0..{}{}); was it "
         "produced with a different tokenizer or model?", id, vocab_size() - 1,
         vocab_size() == num_tokens() ? "" : ", with gaps");
  }
  return id_to_bytes_[id];
}

std::string Tokenizer::token_bytes(int32_t id) const { return bytes_of(id); }

std::string Tokenizer::decode_bytes(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) out += bytes_of(id);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  return to_valid_utf8(decode_bytes(ids));
}

}  // namespace sf::tok
