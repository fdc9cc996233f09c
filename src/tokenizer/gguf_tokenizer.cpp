#include "tokenizer/gguf_tokenizer.hpp"

#include <algorithm>
#include <optional>
#include <span>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "tokenizer/byte_level.hpp"
#include "tokenizer/split_regex.hpp"
#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

// nlohmann::json, not ordered_json: ordered_json finds keys by linear search, which is quadratic
// over a 49152-token vocabulary. HF reads the objects in any key order.
using Json = nlohmann::json;

constexpr int32_t kControl = 3, kUserDefined = 4;

// transformers' GGUF_PRE_TOKENIZER_SPLITS, by the regex each name maps to.
constexpr std::string_view kLlama3Pres[] = {"llama3",       "llama-v3", "llama-bpe", "falcon3",
                                            "falcon-h1",    "pixtral",  "midm-2.0",  "lfm2",
                                            "jina-v5-nano", "dbrx",     "smaug-bpe"};
constexpr std::string_view kQwen2Pres[] = {"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2",
                                           "megrez"};
constexpr std::string_view kOtherRegexPres[] = {"tekken",  "qwen35", "gpt-4o",    "llama4",
                                                "kanana2", "talkie", "minimax-m2"};

bool contains(std::span<const std::string_view> list, std::string_view s) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

size_t code_points(std::string_view s) {
  size_t n = 0;
  for (size_t pos = 0; pos < s.size(); pos += decode_utf8(s, pos).len) ++n;
  return n;
}

void require_utf8(const std::string& token, size_t index) {
  if (!is_valid_utf8(token)) {
    fail(Status::Format,
         "GGUF tokenizer.ggml.tokens[{}] is not valid UTF-8; expected the text "
         "of each token",
         index);
  }
}

std::pair<std::string, std::string> split_merge(const std::string& merge, size_t index) {
  const size_t sp = merge.find(' ');
  if (sp == std::string::npos || merge.find(' ', sp + 1) != std::string::npos) {
    fail(Status::Format,
         "GGUF tokenizer.ggml.merges[{}] is \"{}\"; expected two tokens "
         "separated by one space",
         index, merge.substr(0, 60));
  }
  return {merge.substr(0, sp), merge.substr(sp + 1)};
}

// The vocabulary as transformers' dict {token: index}: a repeated token keeps its last index.
struct VocabBuilder {
  Json object = Json::object();
  std::unordered_map<std::string, int32_t> ids;
  void add(const std::string& token, int32_t id) {
    object[token] = id;
    ids[token] = id;
  }
};

// transformers' generate_merges(vocab, scores): every split of a token into two tokens of the
// vocabulary, ordered within a token by the parts' ids, then all by score, left length and
// right length (code points), descending and stably.
Json merges_from_scores(const GgufTokenizerData& d, const VocabBuilder& vocab) {
  struct Candidate {
    std::string left, right;
    float score;
    size_t left_len, right_len;
  };
  const size_t n = std::min(d.tokens.size(), d.scores.size());
  std::unordered_map<std::string, size_t> first_at;  // dict(zip(tokens, scores)): first position
  std::vector<std::pair<const std::string*, float>> scored;
  for (size_t i = 0; i < n; ++i) {
    auto [it, inserted] = first_at.emplace(d.tokens[i], scored.size());
    if (inserted) {
      scored.emplace_back(&d.tokens[i], d.scores[i]);
    } else {
      scored[it->second].second = d.scores[i];  // the last score wins
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

// HF's added vocabulary as transformers fills it: an id from the vocabulary when the content is
// in it, else the next id after the vocabulary and the tokens added so far.
class AddedBuilder {
 public:
  AddedBuilder(const VocabBuilder& vocab) : vocab_(vocab) {}
  void add(const std::string& content, bool special) {
    if (content.empty()) return;
    if (auto it = index_.find(content); it != index_.end()) {
      tokens_[it->second].special |= special;  // HF's set of special tokens only grows
      return;
    }
    int32_t id;
    if (auto v = vocab_.ids.find(content); v != vocab_.ids.end()) {
      id = v->second;
    } else {
      const auto size = static_cast<int32_t>(vocab_.ids.size());
      id = max_id_ < 0 ? size : (max_id_ >= size || size == 0 ? max_id_ + 1 : size);
    }
    max_id_ = std::max(max_id_, id);
    index_.emplace(content, tokens_.size());
    tokens_.push_back({content, id, special});
  }
  bool has(const std::string& content) const { return index_.contains(content); }
  std::optional<int32_t> id(const std::string& content) const {
    auto it = index_.find(content);
    if (it == index_.end()) return std::nullopt;
    return tokens_[it->second].id;
  }
  Json to_json() const {
    std::vector<Token> sorted = tokens_;
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const Token& a, const Token& b) { return a.id < b.id; });
    Json out = Json::array();
    for (const Token& t : sorted) {
      out.push_back({{"id", t.id},
                     {"content", t.content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", t.special}});
    }
    return out;
  }

 private:
  struct Token {
    std::string content;
    int32_t id;
    bool special;
  };
  const VocabBuilder& vocab_;
  std::vector<Token> tokens_;
  std::unordered_map<std::string, size_t> index_;
  int32_t max_id_ = -1;
};

std::optional<std::string> named_token(const GgufTokenizerData& d, int64_t id, const char* key) {
  if (id < 0) return std::nullopt;
  if (id >= static_cast<int64_t>(d.tokens.size())) {
    fail(Status::Format, "GGUF tokenizer.ggml.{} is {}, but the file has {} tokens", key, id,
         d.tokens.size());
  }
  require_utf8(d.tokens[id], static_cast<size_t>(id));
  return d.tokens[id];
}

Json byte_level_pre_tokenizer(const std::string& pre) {
  std::optional<SplitRegex> regex;
  if (contains(kLlama3Pres, pre)) regex = SplitRegex::Llama3;
  if (contains(kQwen2Pres, pre)) regex = SplitRegex::Qwen2;
  if (contains(kOtherRegexPres, pre)) {
    fail(Status::UnsupportedShape,
         "GGUF tokenizer.ggml.pre \"{}\" splits text with a regex "
         "SparseFlow does not implement (it implements GPT-2's, Llama 3's and Qwen2's)",
         pre);
  }
  if (!regex) {
    return {{"type", "ByteLevel"},
            {"add_prefix_space", false},
            {"trim_offsets", true},
            {"use_regex", true}};
  }
  return {{"type", "Sequence"},
          {"pretokenizers",
           Json::array({{{"type", "Split"},
                         {"pattern", {{"Regex", std::string(split_regex_pattern(*regex))}}},
                         {"behavior", "Isolated"},
                         {"invert", false}},
                        {{"type", "ByteLevel"},
                         {"add_prefix_space", false},
                         {"trim_offsets", true},
                         {"use_regex", false}}})}};
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

}  // namespace

std::string tokenizer_json_from_gguf(const GgufTokenizerData& d) {
  const bool gpt2 = d.model == "gpt2";
  if (!gpt2 && d.model != "llama") {
    fail(Status::UnsupportedShape,
         "GGUF tokenizer.ggml.model \"{}\" is not implemented; "
         "SparseFlow reads \"gpt2\" (byte-level BPE) and \"llama\" (SentencePiece BPE) "
         "tokenizers",
         d.model);
  }
  if (d.tokens.empty()) fail(Status::Format, "GGUF tokenizer.ggml.tokens is empty");
  VocabBuilder vocab;
  for (size_t i = 0; i < d.tokens.size(); ++i) {
    const std::string& t = d.tokens[i];
    const auto id = static_cast<int32_t>(i);
    if (gpt2) {
      vocab.add(byte_level_bytes(t) ? t : byte_level_spelling(t), id);
    } else {
      require_utf8(t, i);
      vocab.add(t, id);
    }
  }
  Json merges = Json::array();
  if (!d.merges.empty()) {
    for (size_t i = 0; i < d.merges.size(); ++i) {
      auto [left, right] = split_merge(d.merges[i], i);
      const std::string both = left + right;
      for (const std::string& part : {left, right, both}) {
        if (!vocab.ids.contains(part)) {
          fail(Status::Format,
               "GGUF tokenizer.ggml.merges[{}] \"{}\" uses a token the "
               "vocabulary does not have",
               i, d.merges[i].substr(0, 60));
        }
      }
      merges.push_back({left, right});
    }
  } else if (!gpt2) {
    merges = merges_from_scores(d, vocab);
  }

  // The added tokens, in the order transformers adds them.
  AddedBuilder added(vocab);
  if (gpt2) {
    added.add("<|endoftext|>", true);  // GPT2Tokenizer's default bos/eos/unk
  } else {
    for (const char* t : {"<s>", "</s>", "<unk>"}) added.add(t, true);  // LlamaTokenizer's
  }
  const size_t typed = std::min(d.tokens.size(), d.token_types.size());
  for (size_t i = 0; i < typed; ++i) {
    // A "gpt2" control token spelled outside the byte alphabet is llama.cpp mislabelling one.
    if (d.token_types[i] == kControl && (!gpt2 || byte_level_bytes(d.tokens[i]))) {
      require_utf8(d.tokens[i], i);
      added.add(d.tokens[i], true);
    }
  }
  for (size_t i = 0; i < typed; ++i) {
    if (d.token_types[i] == kUserDefined && is_valid_utf8(d.tokens[i]) &&
        (vocab.ids.contains(d.tokens[i]) || added.has(d.tokens[i]))) {
      added.add(d.tokens[i], false);
    }
  }
  const auto bos = named_token(d, d.bos, "bos_token_id");
  const auto eos = named_token(d, d.eos, "eos_token_id");
  const auto unk = named_token(d, d.unk, "unknown_token_id");
  const auto pad = named_token(d, d.pad, "padding_token_id");
  for (const auto* t : {&bos, &eos, &unk, &pad}) {
    if (*t) added.add(**t, true);
  }

  Json model = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", gpt2 ? Json("") : Json(nullptr)},
                {"end_of_word_suffix", gpt2 ? Json("") : Json(nullptr)},
                {"fuse_unk", !gpt2},
                {"byte_fallback", !gpt2},
                {"ignore_merges", false},
                {"vocab", std::move(vocab.object)},
                {"merges", std::move(merges)}};
  Json out = {{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", added.to_json()},
              {"normalizer", nullptr}};
  if (gpt2) {
    out["pre_tokenizer"] = byte_level_pre_tokenizer(d.pre);
  } else {
    out["pre_tokenizer"] = {{"type", "Metaspace"},
                            {"replacement", "\u2581"},
                            {"prepend_scheme", "first"},
                            {"split", false}};
  }
  const bool add_bos = d.add_bos && bos, add_eos = d.add_eos && eos;
  out["post_processor"] =
      template_processing(add_bos ? bos : std::nullopt, add_bos ? added.id(*bos) : std::nullopt,
                          add_eos ? eos : std::nullopt, add_eos ? added.id(*eos) : std::nullopt);
  if (gpt2) {
    out["decoder"] = {{"type", "ByteLevel"},
                      {"add_prefix_space", true},
                      {"trim_offsets", true},
                      {"use_regex", true}};
  } else {
    out["decoder"] = {
        {"type", "Sequence"},
        {"decoders",
         Json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                      {{"type", "ByteFallback"}},
                      {{"type", "Fuse"}},
                      {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
  }
  out["model"] = std::move(model);
  return out.dump();
}

std::string tokenizer_config_json_from_gguf(const GgufTokenizerData& d) {
  Json out = Json::object();
  const std::pair<const char*, std::pair<int64_t, const char*>> named[] = {
      {"bos_token", {d.bos, "bos_token_id"}},
      {"eos_token", {d.eos, "eos_token_id"}},
      {"unk_token", {d.unk, "unknown_token_id"}},
      {"pad_token", {d.pad, "padding_token_id"}}};
  for (const auto& [key, source] : named) {
    const auto token = named_token(d, source.first, source.second);
    out[key] = token ? Json(*token) : Json(nullptr);
  }
  return out.dump();
}

}  // namespace sf::tok
