#include "tokenizer/spm_tokenizer.hpp"

#include <algorithm>
#include <charconv>
#include <map>
#include <optional>
#include <vector>

#include "core/error.hpp"
#include "tokenizer/hf_convert.hpp"
#include "tokenizer/spm_model.hpp"

namespace sf::tok {
namespace {

using hf::AddedSpec;
using hf::Json;

constexpr std::string_view kHint =
    "to tokenize as transformers' converter does anyway, save the tokenizer as tokenizer.json "
    "(python3 -c \"from transformers import AutoTokenizer as T; "
    "T.from_pretrained('DIR').save_pretrained('DIR')\"), which SparseFlow reads instead";

template <typename... Args>
[[noreturn]] void unsupported(fmt::format_string<Args...> f, Args&&... args) {
  fail(Status::UnsupportedShape, "tokenizer.model: {}; {}",
       fmt::format(f, std::forward<Args>(args)...), kHint);
}

template <typename... Args>
[[noreturn]] void bad_config(fmt::format_string<Args...> f, Args&&... args) {
  fail(Status::Format, "tokenizer_config.json (beside tokenizer.model): {}",
       fmt::format(f, std::forward<Args>(args)...));
}

std::string short_dump(const Json& j) {
  std::string s = j.dump(-1, ' ', false, Json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

// What tokenizer_config.json says, with LlamaTokenizerFast's defaults.
struct Config {
  Json json = Json::object();
  std::optional<std::string> tokenizer_class;
  bool legacy = true;
  std::optional<bool> add_prefix_space;
  bool add_bos = true, add_eos = false;
  // In transformers' SPECIAL_TOKENS_ATTRIBUTES order; nullopt: set to null.
  std::optional<AddedSpec> bos, eos, unk, pad;
  std::vector<AddedSpec> additional;
  std::map<int64_t, AddedSpec> decoder;  // added_tokens_decoder, by id
};

std::optional<bool> flag(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) bad_config("\"{}\" is {}; expected true or false", key, short_dump(*it));
  return it->get<bool>();
}

// A token: a string (special, as transformers makes it) or an AddedToken object.
AddedSpec token_spec(const Json& v, const std::string& where) {
  if (v.is_string()) return AddedSpec{.content = v.get<std::string>(), .special = true};
  if (!v.is_object() || !v.contains("content") || !v["content"].is_string()) {
    bad_config("{} is {}; expected a string or {{\"content\": ...}}", where, short_dump(v));
  }
  const auto b = [&](const char* key, bool fallback) {
    auto it = v.find(key);
    if (it == v.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) {
      bad_config("{}.{} is {}; expected true or false", where, key, short_dump(*it));
    }
    return it->get<bool>();
  };
  AddedSpec s;
  s.content = v["content"].get<std::string>();
  s.special = b("special", false);
  s.normalized = b("normalized", !s.special);  // tokenizers' AddedToken default
  s.lstrip = b("lstrip", false);
  s.rstrip = b("rstrip", false);
  s.single_word = b("single_word", false);
  return s;
}

Config parse_config(std::string_view text) {
  Config c;
  c.bos = AddedSpec{.content = "<s>", .special = true};
  c.eos = AddedSpec{.content = "</s>", .special = true};
  c.unk = AddedSpec{.content = "<unk>", .special = true};
  if (text.empty()) return c;
  try {
    c.json = Json::parse(text);
  } catch (const Json::exception& e) {
    fail(Status::Format, "tokenizer_config.json is not valid JSON ({})", e.what());
  }
  if (!c.json.is_object()) bad_config("is {}; expected an object", short_dump(c.json));
  const Json& j = c.json;
  if (auto it = j.find("tokenizer_class"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) bad_config("\"tokenizer_class\" is {}", short_dump(*it));
    c.tokenizer_class = it->get<std::string>();
  }
  c.legacy = flag(j, "legacy").value_or(true);
  c.add_prefix_space = flag(j, "add_prefix_space");
  c.add_bos = flag(j, "add_bos_token").value_or(true);
  c.add_eos = flag(j, "add_eos_token").value_or(false);
  for (auto [key, slot] : {std::pair{"bos_token", &c.bos}, std::pair{"eos_token", &c.eos},
                           std::pair{"unk_token", &c.unk}, std::pair{"pad_token", &c.pad}}) {
    auto it = j.find(key);
    if (it == j.end()) continue;
    *slot =
        it->is_null() ? std::nullopt : std::optional(token_spec(*it, fmt::format("\"{}\"", key)));
    if (*slot) (*slot)->special = true;
  }
  if (auto it = j.find("additional_special_tokens"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) {
      bad_config("\"additional_special_tokens\" is {}; expected an array", short_dump(*it));
    }
    for (size_t i = 0; i < it->size(); ++i) {
      c.additional.push_back(
          token_spec((*it)[i], fmt::format("\"additional_special_tokens\"[{}]", i)));
      c.additional.back().special = true;
    }
  }
  if (auto it = j.find("added_tokens_decoder"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) {
      bad_config("\"added_tokens_decoder\" is {}; expected an object id -> token", short_dump(*it));
    }
    for (const auto& [key, value] : it->items()) {
      int64_t id = -1;
      const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
      if (ec != std::errc() || end != key.data() + key.size() || id < 0 || id >= (1 << 24)) {
        bad_config("\"added_tokens_decoder\" has the key \"{}\"; expected token ids", key);
      }
      c.decoder[id] = token_spec(value, fmt::format("\"added_tokens_decoder\"[\"{}\"]", key));
    }
  }
  return c;
}

// The model options transformers' Llama converter ignores: with them its ids would not be the
// ones the model was trained on.
void check_model(const SpmModel& m, const Config& c) {
  const char* type = m.model_type == SpmModelType::Unigram ? "UNIGRAM"
                     : m.model_type == SpmModelType::Word  ? "WORD"
                     : m.model_type == SpmModelType::Char  ? "CHAR"
                                                           : "BPE";
  if (m.model_type != SpmModelType::Bpe) {
    unsupported(
        "it is a SentencePiece {} model; SparseFlow reads SentencePiece BPE models (Llama 2, "
        "Mistral)",
        type);
  }
  if (c.tokenizer_class && *c.tokenizer_class != "LlamaTokenizer" &&
      *c.tokenizer_class != "LlamaTokenizerFast") {
    unsupported(
        "tokenizer_config.json names the tokenizer_class \"{}\", which transformers converts "
        "differently; SparseFlow converts tokenizer.model as LlamaTokenizer does",
        *c.tokenizer_class);
  }
  const SpmNormalizer& n = m.normalizer;
  if (n.charsmap_bytes > 0 || n.rule_tsv_bytes > 0) {
    unsupported(
        "normalizer_spec \"{}\" carries normalization rules ({} bytes), which sentencepiece "
        "applies and transformers' Llama converter ignores, so the two give different ids; "
        "SparseFlow reads models with the identity normalizer (Llama 2, Mistral)",
        n.name, n.charsmap_bytes + n.rule_tsv_bytes);
  }
  if (m.has_denormalizer) {
    unsupported(
        "denormalizer_spec has rules, which sentencepiece applies when decoding and "
        "transformers' converter ignores");
  }
  const auto ignored = [&](const char* what) {
    unsupported(
        "{}, which transformers' Llama converter ignores, so its ids would differ from "
        "sentencepiece's",
        what);
  };
  if (n.remove_extra_whitespaces) {
    ignored("normalizer_spec.remove_extra_whitespaces is true (runs of spaces fold to one)");
  }
  if (!n.escape_whitespaces) ignored("normalizer_spec.escape_whitespaces is false");
  if (m.treat_whitespace_as_suffix) ignored("trainer_spec.treat_whitespace_as_suffix is true");
  if (!n.add_dummy_prefix && !c.add_prefix_space) {
    unsupported(
        "normalizer_spec.add_dummy_prefix is false (sentencepiece puts no \"\u2581\" before the "
        "text) and tokenizer_config.json does not say add_prefix_space (transformers' converter "
        "then puts one); set \"add_prefix_space\" in tokenizer_config.json to choose");
  }
  const bool has_bytes = std::any_of(m.pieces.begin(), m.pieces.end(),
                                     [](const SpmPiece& p) { return p.type == SpmType::Byte; });
  if (has_bytes && !m.byte_fallback) {
    ignored("the model has BYTE pieces but trainer_spec.byte_fallback is false");
  }
  if (m.pieces.size() < 3) {
    fail(Status::Format,
         "tokenizer.model has {} pieces; expected at least <unk>, <s> and </s> (transformers' "
         "Llama converter reads the first three)",
         m.pieces.size());
  }
}

}  // namespace

SpmConversion tokenizer_json_from_spm(std::string_view model_bytes,
                                      std::string_view tokenizer_config_json) {
  const SpmModel m = parse_spm_model(
      std::span(reinterpret_cast<const uint8_t*>(model_bytes.data()), model_bytes.size()));
  Config c = parse_config(tokenizer_config_json);
  check_model(m, c);

  hf::VocabBuilder vocab;
  std::vector<std::string> pieces;
  std::vector<float> scores;
  pieces.reserve(m.pieces.size());
  scores.reserve(m.pieces.size());
  for (size_t i = 0; i < m.pieces.size(); ++i) {
    vocab.add(m.pieces[i].piece, static_cast<int32_t>(i));
    pieces.push_back(m.pieces[i].piece);
    scores.push_back(i < 3 ? 0.0f : m.pieces[i].score);  // LlamaConverter.vocab
  }
  if (!vocab.ids.contains(m.unk_piece)) {
    fail(Status::Format,
         "tokenizer.model: trainer_spec.unk_piece \"{}\" is not one of the pieces; expected the "
         "unknown token in the vocabulary",
         m.unk_piece);
  }
  Json merges = hf::merges_from_scores(pieces, scores, vocab);

  // The added vocabulary, in the order transformers fills it.
  hf::AddedBuilder added(vocab);
  for (const SpmPiece& p : m.pieces) {
    if (p.type == SpmType::Control || p.type == SpmType::UserDefined) {
      added.add(AddedSpec{.content = p.piece, .special = p.type == SpmType::Control});
    }
  }
  std::vector<const AddedSpec*> specials;
  for (const auto* t : {&c.bos, &c.eos, &c.unk, &c.pad}) {
    if (*t) specials.push_back(&**t);
  }
  for (const AddedSpec& t : c.additional) specials.push_back(&t);
  const auto is_special = [&](const std::string& content) {
    return std::any_of(specials.begin(), specials.end(),
                       [&](const AddedSpec* s) { return s->content == content; });
  };
  for (auto& [id, token] : c.decoder) {
    if (const std::string* had = added.content_of(static_cast<int32_t>(id))) {
      if (*had != token.content) {
        bad_config(
            "added_tokens_decoder gives the id {} to \"{}\", but tokenizer.model has \"{}\" "
            "there; are the two files from the same checkpoint?",
            id, token.content, *had);
      }
      continue;  // transformers keeps the converter's token
    }
    if (token.content.empty()) bad_config("added_tokens_decoder[\"{}\"] has no content", id);
    const int32_t gets =
        added.has(token.content) ? *added.id(token.content) : added.next_id(token.content);
    if (gets != id) {
      bad_config(
          "added_tokens_decoder gives \"{}\" the id {}, but with tokenizer.model's {} pieces it "
          "gets {} (transformers' fast tokenizer uses {}, its slow one {}); are the two files "
          "from the same checkpoint?",
          token.content, id, m.pieces.size(), gets, gets, id);
    }
    token.special |= is_special(token.content);
    added.add(token);
  }
  for (const AddedSpec* t : specials) {
    if (!added.has(t->content)) added.add(*t);
  }

  const auto frame_token = [&](const std::optional<AddedSpec>& t, bool wanted, const char* flag,
                               const char* name) -> std::optional<std::string> {
    if (!wanted) return std::nullopt;
    if (!t) bad_config("{} is true but {} is null", flag, name);
    return t->content;
  };
  const auto bos = frame_token(c.bos, c.add_bos, "add_bos_token", "bos_token");
  const auto eos = frame_token(c.eos, c.add_eos, "add_eos_token", "eos_token");
  const auto id_of = [&](const std::optional<std::string>& t) -> std::optional<int32_t> {
    if (!t) return std::nullopt;
    return added.id(*t);
  };

  const bool prefix = c.add_prefix_space.value_or(true);
  Json out = {{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", added.to_json()}};
  if (c.legacy) {
    Json steps = Json::array();
    if (prefix) steps.push_back({{"type", "Prepend"}, {"prepend", "\u2581"}});
    steps.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}});
    out["normalizer"] = {{"type", "Sequence"}, {"normalizers", std::move(steps)}};
    out["pre_tokenizer"] = nullptr;
  } else {
    out["normalizer"] = nullptr;
    out["pre_tokenizer"] = {{"type", "Metaspace"},
                            {"replacement", "\u2581"},
                            {"prepend_scheme", prefix ? "first" : "never"},
                            {"split", false}};
  }
  out["post_processor"] = hf::template_processing(bos, id_of(bos), eos, id_of(eos));
  out["decoder"] = hf::llama_decoder(prefix);
  out["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", m.unk_piece},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", true},
                  {"byte_fallback", true},
                  {"ignore_merges", false},
                  {"vocab", std::move(vocab.object)},
                  {"merges", std::move(merges)}};

  // The config with the special tokens transformers defaulted, for the Tokenizer and the model's
  // metadata (chat templates read bos_token / eos_token).
  for (auto [key, t] : {std::pair{"bos_token", &c.bos}, std::pair{"eos_token", &c.eos},
                        std::pair{"unk_token", &c.unk}}) {
    if (!c.json.contains(key) && *t) c.json[key] = (*t)->content;
  }
  return {out.dump(), c.json.dump()};
}

}  // namespace sf::tok
