#include "tokenizer/gguf_tokenizer.hpp"

#include <algorithm>
#include <optional>
#include <span>

#include "core/error.hpp"
#include "tokenizer/byte_level.hpp"
#include "tokenizer/hf_convert.hpp"
#include "tokenizer/split_regex.hpp"
#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

using hf::AddedBuilder;
using hf::Json;
using hf::VocabBuilder;

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
    merges = hf::merges_from_scores(d.tokens, d.scores, vocab);
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
  out["post_processor"] = hf::template_processing(
      add_bos ? bos : std::nullopt, add_bos ? added.id(*bos) : std::nullopt,
      add_eos ? eos : std::nullopt, add_eos ? added.id(*eos) : std::nullopt);
  if (gpt2) {
    out["decoder"] = {{"type", "ByteLevel"},
                      {"add_prefix_space", true},
                      {"trim_offsets", true},
                      {"use_regex", true}};
  } else {
    out["decoder"] = hf::llama_decoder(true);
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
