#include "tokenizer/hf_convert.hpp"

#include <algorithm>

#include "tokenizer/unicode.hpp"

namespace sf::tok::hf {
namespace {

size_t code_points(std::string_view s) {
  size_t n = 0;
  for (size_t pos = 0; pos < s.size(); pos += decode_utf8(s, pos).len) ++n;
  return n;
}

}  // namespace

Json merges_from_scores(std::span<const std::string> tokens, std::span<const float> scores,
                        const VocabBuilder& vocab) {
  struct Candidate {
    std::string left, right;
    float score;
    size_t left_len, right_len;
  };
  const size_t n = std::min(tokens.size(), scores.size());
  std::unordered_map<std::string, size_t> first_at;  // dict(zip(tokens, scores)): first position
  std::vector<std::pair<const std::string*, float>> scored;
  for (size_t i = 0; i < n; ++i) {
    auto [it, inserted] = first_at.emplace(tokens[i], scored.size());
    if (inserted) {
      scored.emplace_back(&tokens[i], scores[i]);
    } else {
      scored[it->second].second = scores[i];  // the last score wins
    }
  }
  std::vector<Candidate> all;
  for (const auto& [token, score] : scored) {
    std::vector<Candidate> local;
    size_t left_len = 0;
    for (size_t pos = 0; pos < token->size();) {
      pos += decode_utf8(*token, pos).len;
      ++left_len;
      if (pos >= token->size()) break;
      std::string left = token->substr(0, pos), right = token->substr(pos);
      if (vocab.ids.contains(left) && vocab.ids.contains(right)) {
        local.push_back({std::move(left), std::move(right), score, left_len, 0});
      }
    }
    for (Candidate& c : local) c.right_len = code_points(c.right);
    std::sort(local.begin(), local.end(), [&](const Candidate& a, const Candidate& b) {
      const int32_t al = vocab.ids.at(a.left), bl = vocab.ids.at(b.left);
      return al != bl ? al < bl : vocab.ids.at(a.right) < vocab.ids.at(b.right);
    });
    for (Candidate& c : local) all.push_back(std::move(c));
  }
  std::stable_sort(all.begin(), all.end(), [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.left_len != b.left_len) return a.left_len > b.left_len;
    return a.right_len > b.right_len;
  });
  Json merges = Json::array();
  for (const Candidate& c : all) merges.push_back({c.left, c.right});
  return merges;
}

int32_t AddedBuilder::next_id(const std::string& content) const {
  if (auto v = vocab_.ids.find(content); v != vocab_.ids.end()) return v->second;
  const auto size = static_cast<int32_t>(vocab_.ids.size());
  return max_id_ < 0 ? size : (max_id_ >= size || size == 0 ? max_id_ + 1 : size);
}

void AddedBuilder::add(const AddedSpec& token) {
  if (token.content.empty()) return;
  if (auto it = index_.find(token.content); it != index_.end()) {
    tokens_[it->second].spec.special |= token.special;
    return;
  }
  const int32_t id = next_id(token.content);
  max_id_ = std::max(max_id_, id);
  index_.emplace(token.content, tokens_.size());
  tokens_.push_back({token, id});
}

std::optional<int32_t> AddedBuilder::id(const std::string& content) const {
  auto it = index_.find(content);
  if (it == index_.end()) return std::nullopt;
  return tokens_[it->second].id;
}

const std::string* AddedBuilder::content_of(int32_t id) const {
  for (const Token& t : tokens_) {
    if (t.id == id) return &t.spec.content;
  }
  return nullptr;
}

Json AddedBuilder::to_json() const {
  std::vector<Token> sorted = tokens_;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const Token& a, const Token& b) { return a.id < b.id; });
  Json out = Json::array();
  for (const Token& t : sorted) {
    out.push_back({{"id", t.id},
                   {"content", t.spec.content},
                   {"single_word", t.spec.single_word},
                   {"lstrip", t.spec.lstrip},
                   {"rstrip", t.spec.rstrip},
                   {"normalized", t.spec.normalized},
                   {"special", t.spec.special}});
  }
  return out;
}

Json template_processing(const std::optional<std::string>& bos, std::optional<int32_t> bos_id,
                         const std::optional<std::string>& eos, std::optional<int32_t> eos_id) {
  const auto special = [](const std::string& name, int type_id) {
    return Json{{"SpecialToken", {{"id", name}, {"type_id", type_id}}}};
  };
  const auto sequence = [](const char* name, int type_id) {
    return Json{{"Sequence", {{"id", name}, {"type_id", type_id}}}};
  };
  Json single = Json::array(), pair = Json::array(), specials = Json::object();
  for (int part = 0; part < 2; ++part) {
    Json& out = part == 0 ? single : pair;
    for (int seq = 0; seq <= part; ++seq) {
      if (bos) out.push_back(special(*bos, seq));
      out.push_back(sequence(seq == 0 ? "A" : "B", seq));
      if (eos) out.push_back(special(*eos, seq));
    }
  }
  if (bos) specials[*bos] = {{"id", *bos}, {"ids", {*bos_id}}, {"tokens", {*bos}}};
  if (eos) specials[*eos] = {{"id", *eos}, {"ids", {*eos_id}}, {"tokens", {*eos}}};
  return {{"type", "TemplateProcessing"},
          {"single", single},
          {"pair", pair},
          {"special_tokens", specials}};
}

Json llama_decoder(bool strip_space) {
  Json steps =
      Json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                   {{"type", "ByteFallback"}},
                   {{"type", "Fuse"}}});
  if (strip_space)
    steps.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  return {{"type", "Sequence"}, {"decoders", std::move(steps)}};
}

}  // namespace sf::tok::hf
