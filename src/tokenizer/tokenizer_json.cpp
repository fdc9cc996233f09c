// Tokenizer from tokenizer.json (+ tokenizer_config.json). Each part of the file is read into the
// pipeline piece that runs it; whatever this reader does not implement is refused by name with
// Status::UnsupportedShape (a well-formed file we cannot take), malformed input with
// Status::Format. "truncation" and "padding" are not read: transformers leaves them off unless a
// call asks.
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "tokenizer/tokenizer_impl.hpp"
#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

using nlohmann::json;

constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;
constexpr std::string_view kSupported =
    "SparseFlow reads the BPE tokenizers of Llama 2/3, Mistral, Qwen2, GPT-2 and SmolLM2";

template <typename... Args>
[[noreturn]] void bad(std::string_view where, fmt::format_string<Args...> f, Args&&... args) {
  fail(Status::Format, "tokenizer.json {}: {}", where, fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
[[noreturn]] void unsupported(std::string_view where, fmt::format_string<Args...> f,
                              Args&&... args) {
  fail(Status::UnsupportedShape, "tokenizer.json {}: {}; {}", where,
       fmt::format(f, std::forward<Args>(args)...), kSupported);
}

std::string short_dump(const json& j) {
  std::string s = j.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

const json& member(const json& obj, const char* key, std::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end()) bad(where, "has no \"{}\"", key);
  return *it;
}

std::string string_member(const json& obj, const char* key, std::string_view where) {
  const json& v = member(obj, key, where);
  if (!v.is_string()) bad(where, "\"{}\" is {}; expected a string", key, short_dump(v));
  return v.get<std::string>();
}

bool bool_member(const json& obj, const char* key, bool fallback, std::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) bad(where, "\"{}\" is {}; expected true or false", key, short_dump(*it));
  return it->get<bool>();
}

const json& array_member(const json& obj, const char* key, std::string_view where) {
  const json& v = member(obj, key, where);
  if (!v.is_array()) bad(where, "\"{}\" is {}; expected an array", key, short_dump(v));
  return v;
}

std::string type_of(const json& j, std::string_view where) {
  if (!j.is_object()) bad(where, "is {}; expected an object with a \"type\"", short_dump(j));
  return string_member(j, "type", where);
}

char32_t single_char(const std::string& s, std::string_view where, const char* key) {
  if (s.empty() || !is_valid_utf8(s) || decode_utf8(s, 0).len != s.size()) {
    bad(where, "\"{}\" is \"{}\"; expected one character", key, s);
  }
  return decode_utf8(s, 0).cp;
}

// {"String": s} (a plain string); {"Regex": r} only as the caller allows.
std::string string_pattern(const json& j, std::string_view where) {
  const json& p = member(j, "pattern", where);
  if (p.is_object() && p.contains("String") && p["String"].is_string()) {
    std::string s = p["String"].get<std::string>();
    if (s.empty()) unsupported(where, "an empty pattern is not implemented");
    return s;
  }
  if (p.is_object() && p.contains("Regex")) {
    unsupported(where, "the regex pattern {} is not implemented (only plain-string patterns are)",
                short_dump(p["Regex"]));
  }
  bad(where, "\"pattern\" is {}; expected {{\"String\": ...}}", short_dump(p));
}

PrependScheme prepend_scheme(const json& j, std::string_view where) {
  PrependScheme scheme = PrependScheme::Always;  // HF's default
  if (auto it = j.find("prepend_scheme"); it != j.end() && !it->is_null()) {
    const std::string s = it->is_string() ? it->get<std::string>() : "";
    if (s == "first") {
      scheme = PrependScheme::First;
    } else if (s == "always") {
      scheme = PrependScheme::Always;
    } else if (s == "never") {
      scheme = PrependScheme::Never;
    } else {
      bad(where, "\"prepend_scheme\" is {}; expected \"first\", \"always\" or \"never\"",
          short_dump(*it));
    }
  }
  // Older files say add_prefix_space instead; false means never (HF refuses a contradiction).
  if (!bool_member(j, "add_prefix_space", true, where)) {
    if (j.contains("prepend_scheme") && scheme != PrependScheme::Never) {
      bad(where, "add_prefix_space is false but prepend_scheme is not \"never\"");
    }
    scheme = PrependScheme::Never;
  }
  return scheme;
}

// --- normalizer

void parse_normalizer(const json& j, const std::string& where, Normalizer& out) {
  if (j.is_null()) return;
  const std::string type = type_of(j, where);
  if (type == "Sequence") {
    const json& list = array_member(j, "normalizers", where);
    for (size_t i = 0; i < list.size(); ++i) {
      parse_normalizer(list[i], fmt::format("{}[{}]", where, i), out);
    }
  } else if (type == "Prepend") {
    out.add(Normalizer::Prepend{string_member(j, "prepend", where)});
  } else if (type == "Replace") {
    out.add(Normalizer::Replace{string_pattern(j, where), string_member(j, "content", where)});
  } else if (type == "NFC") {
    out.add(Normalizer::Nfc{});
  } else {
    unsupported(where,
                "the normalizer \"{}\" is not implemented (Sequence, Prepend, Replace and "
                "NFC are)",
                type);
  }
}

// --- pre-tokenizer

void parse_pre_tokenizer(const json& j, const std::string& where, PreTokenizer& out) {
  if (j.is_null()) return;
  const std::string type = type_of(j, where);
  if (type == "Sequence") {
    const json& list = array_member(j, "pretokenizers", where);
    for (size_t i = 0; i < list.size(); ++i) {
      parse_pre_tokenizer(list[i], fmt::format("{}[{}]", where, i), out);
    }
  } else if (type == "Split") {
    const json& p = member(j, "pattern", where);
    if (!p.is_object() || !p.contains("Regex") || !p["Regex"].is_string()) {
      unsupported(where,
                  "a Split by {} is not implemented (only the regexes of GPT-2, Llama 3 "
                  "and Qwen2 are)",
                  short_dump(p));
    }
    const std::string pattern = p["Regex"].get<std::string>();
    const auto regex = split_regex_from_pattern(pattern);
    if (!regex) {
      unsupported(where,
                  "the Split regex {} is not one SparseFlow implements (GPT-2's, Llama "
                  "3's and Qwen2's, character for character); tokenizing with another regex "
                  "would give wrong ids",
                  json(pattern).dump());
    }
    const std::string behavior = string_member(j, "behavior", where);
    if (behavior != "Isolated" || bool_member(j, "invert", false, where)) {
      unsupported(where, "a Split with behavior \"{}\"{} is not implemented (Isolated is)",
                  behavior, bool_member(j, "invert", false, where) ? " inverted" : "");
    }
    out.add(PreTokenizer::Split{*regex});
  } else if (type == "ByteLevel") {
    out.add(PreTokenizer::ByteLevel{bool_member(j, "add_prefix_space", true, where),
                                    bool_member(j, "use_regex", true, where)});
  } else if (type == "Digits") {
    out.add(PreTokenizer::Digits{bool_member(j, "individual_digits", false, where)});
  } else if (type == "Metaspace") {
    const std::string replacement = string_member(j, "replacement", where);
    single_char(replacement, where, "replacement");
    out.add(PreTokenizer::Metaspace{replacement, prepend_scheme(j, where),
                                    bool_member(j, "split", true, where)});
  } else {
    unsupported(where,
                "the pre-tokenizer \"{}\" is not implemented (Sequence, Split, ByteLevel, "
                "Digits and Metaspace are)",
                type);
  }
}

// --- decoder

void parse_decoder(const json& j, const std::string& where, Decoder& out) {
  const std::string type = type_of(j, where);
  if (type == "Sequence") {
    const json& list = array_member(j, "decoders", where);
    for (size_t i = 0; i < list.size(); ++i) {
      parse_decoder(list[i], fmt::format("{}[{}]", where, i), out);
    }
  } else if (type == "ByteLevel") {
    out.add(Decoder::ByteLevel{});
  } else if (type == "Replace") {
    out.add(Decoder::Replace{string_pattern(j, where), string_member(j, "content", where)});
  } else if (type == "ByteFallback") {
    out.add(Decoder::ByteFallback{});
  } else if (type == "Fuse") {
    out.add(Decoder::Fuse{});
  } else if (type == "Strip") {
    const auto count = [&](const char* key) {
      const json& v = member(j, key, where);
      if (!v.is_number_unsigned()) bad(where, "\"{}\" is {}; expected a count", key, short_dump(v));
      return v.get<size_t>();
    };
    const std::string content = string_member(j, "content", where);
    out.add(Decoder::Strip{single_char(content, where, "content"), count("start"), count("stop")});
  } else if (type == "Metaspace") {
    const std::string replacement = string_member(j, "replacement", where);
    single_char(replacement, where, "replacement");
    out.add(Decoder::Metaspace{replacement, prepend_scheme(j, where) == PrependScheme::Never});
  } else {
    unsupported(where,
                "the decoder \"{}\" is not implemented (Sequence, ByteLevel, Replace, "
                "ByteFallback, Fuse, Strip and Metaspace are)",
                type);
  }
}

// --- post-processor: what add_special_tokens puts around a single sequence

struct Frame {
  std::vector<int32_t> prefix, suffix;
};

int32_t id_value(const json& v, std::string_view where) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxTokenId) {
    bad(where, "has the id {}; expected an integer 0..{}", short_dump(v), kMaxTokenId);
  }
  return v.get<int32_t>();
}

Frame parse_template(const json& j, const std::string& where) {
  const json& single = array_member(j, "single", where);
  const json& specials = member(j, "special_tokens", where);
  Frame f;
  bool seen_a = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string at = fmt::format("{}.single[{}]", where, i);
    const json& item = single[i];
    if (item.is_object() && item.contains("Sequence")) {
      const json& seq = item["Sequence"];
      if (!seq.is_object() || seq.value("id", "") != "A" || seen_a) {
        bad(at, "is {}; expected the sequence $A once", short_dump(item));
      }
      seen_a = true;
      continue;
    }
    if (!item.is_object() || !item.contains("SpecialToken") || !item["SpecialToken"].is_object()) {
      bad(at, "is {}; expected {{\"SpecialToken\": ...}} or {{\"Sequence\": ...}}",
          short_dump(item));
    }
    const std::string name = string_member(item["SpecialToken"], "id", at);
    if (!specials.is_object() || !specials.contains(name)) {
      bad(at, "names the special token \"{}\", which special_tokens does not define", name);
    }
    const json& ids = array_member(specials[name], "ids", fmt::format("{}.special_tokens", where));
    for (const json& id : ids) (seen_a ? f.suffix : f.prefix).push_back(id_value(id, at));
  }
  if (!seen_a) bad(where, "\"single\" has no $A; expected the sequence between the special tokens");
  return f;
}

Frame parse_post_processor(const json& j, const std::string& where) {
  if (j.is_null()) return {};
  const std::string type = type_of(j, where);
  if (type == "TemplateProcessing") return parse_template(j, where);
  if (type == "ByteLevel") return {};  // only moves offsets
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    const auto token_id = [&](const char* key) {
      const json& v = member(j, key, where);
      if (!v.is_array() || v.size() != 2) {
        bad(where, "\"{}\" is {}; expected [token, id]", key, short_dump(v));
      }
      return id_value(v[1], where);
    };
    return Frame{{token_id("cls")}, {token_id("sep")}};
  }
  if (type == "Sequence") {
    // Each processor wraps what the previous ones made.
    Frame all;
    const json& list = array_member(j, "processors", where);
    for (size_t i = 0; i < list.size(); ++i) {
      Frame f = parse_post_processor(list[i], fmt::format("{}[{}]", where, i));
      f.prefix.insert(f.prefix.end(), all.prefix.begin(), all.prefix.end());
      all.suffix.insert(all.suffix.end(), f.suffix.begin(), f.suffix.end());
      all.prefix = std::move(f.prefix);
    }
    return all;
  }
  unsupported(where,
              "the post-processor \"{}\" is not implemented (TemplateProcessing, "
              "RobertaProcessing, BertProcessing, ByteLevel and Sequence are)",
              type);
}

// --- model

Vocab parse_vocab(const json& model) {
  const json& v = member(model, "vocab", "model");
  if (!v.is_object()) bad("model.vocab", "is {}; expected an object token -> id", short_dump(v));
  Vocab vocab;
  vocab.reserve(v.size());
  for (const auto& [token, id] : v.items()) {
    vocab.emplace(token, id_value(id, fmt::format("model.vocab[{}]", json(token).dump())));
  }
  return vocab;
}

std::vector<MergeRule> parse_merges(const json& model, const Vocab& vocab) {
  const json& list = array_member(model, "merges", "model");
  std::vector<MergeRule> merges;
  merges.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const json& m = list[i];
    std::string left, right;
    if (m.is_string()) {  // older files: "left right"
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        bad(fmt::format("model.merges[{}]", i),
            "is {}; expected two tokens separated by one "
            "space",
            short_dump(m));
      }
      left = s.substr(0, sp), right = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>(), right = m[1].get<std::string>();
    } else {
      bad(fmt::format("model.merges[{}]", i), "is {}; expected [left, right]", short_dump(m));
    }
    const auto l = vocab.find(left), r = vocab.find(right), both = vocab.find(left + right);
    if (l == vocab.end() || r == vocab.end() || both == vocab.end()) {
      const std::string& missing = l == vocab.end()   ? left
                                   : r == vocab.end() ? right
                                                      : left + right;
      bad(fmt::format("model.merges[{}]", i),
          "{} uses the token {}, which model.vocab does not "
          "have",
          short_dump(m), json(missing).dump());
    }
    merges.push_back({l->second, r->second, both->second});
  }
  return merges;
}

BpeModel parse_model(const json& model, bool byte_level) {
  const std::string type = model.is_object() && model.contains("type")
                               ? type_of(model, "model")
                               : (model.is_object() && model.contains("merges") ? "BPE" : "?");
  if (type != "BPE") {
    unsupported("model", "the model type \"{}\" is not implemented (BPE is)", type);
  }
  if (auto it = model.find("dropout");
      it != model.end() && !it->is_null() && !(it->is_number() && it->get<double>() == 0.0)) {
    unsupported("model", "BPE dropout {} is not implemented (it makes tokenization random)",
                short_dump(*it));
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() &&
        !(it->is_string() && it->get<std::string>().empty())) {
      unsupported("model", "\"{}\" {} is not implemented", key, short_dump(*it));
    }
  }
  Vocab vocab = parse_vocab(model);
  const std::vector<MergeRule> merges = parse_merges(model, vocab);
  BpeOptions options{.byte_level = byte_level,
                     .byte_fallback = bool_member(model, "byte_fallback", false, "model"),
                     .fuse_unk = bool_member(model, "fuse_unk", false, "model"),
                     .ignore_merges = bool_member(model, "ignore_merges", false, "model")};
  if (auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
    if (!it->is_string()) bad("model", "\"unk_token\" is {}; expected a string", short_dump(*it));
    auto unk = vocab.find(it->get<std::string>());
    if (unk == vocab.end()) {
      bad("model", "the unk_token {} is not in model.vocab", it->dump());
    }
    options.unk_id = unk->second;
  }
  return BpeModel(std::move(vocab), merges, options);
}

std::vector<AddedToken> parse_added_tokens(const json& j) {
  std::vector<AddedToken> out;
  if (j.is_null()) return out;
  if (!j.is_array()) bad("added_tokens", "is {}; expected an array", short_dump(j));
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string where = fmt::format("added_tokens[{}]", i);
    if (!j[i].is_object()) bad(where, "is {}; expected an object", short_dump(j[i]));
    AddedToken t;
    t.id = id_value(member(j[i], "id", where), where);
    t.content = string_member(j[i], "content", where);
    t.special = bool_member(j[i], "special", false, where);
    t.lstrip = bool_member(j[i], "lstrip", false, where);
    t.rstrip = bool_member(j[i], "rstrip", false, where);
    t.normalized = bool_member(j[i], "normalized", !t.special, where);
    t.single_word = bool_member(j[i], "single_word", false, where);
    out.push_back(std::move(t));
  }
  return out;
}

// --- tokenizer_config.json

struct Config {
  std::optional<std::string> bos_token, eos_token;
  std::optional<bool> add_bos, add_eos;
};

Config parse_config(std::string_view text) {
  Config c;
  if (text.empty()) return c;
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(Status::Format, "tokenizer_config.json is not valid JSON ({})", e.what());
  }
  if (!j.is_object()) {
    fail(Status::Format, "tokenizer_config.json is {}; expected an object", short_dump(j));
  }
  // A token is a string or an AddedToken object {"content": ...}.
  const auto token = [&](const char* key) -> std::optional<std::string> {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
      return (*it)["content"].get<std::string>();
    }
    fail(Status::Format,
         "tokenizer_config.json: \"{}\" is {}; expected a string or "
         "{{\"content\": ...}}",
         key, short_dump(*it));
  };
  const auto flag = [&](const char* key) -> std::optional<bool> {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    if (!it->is_boolean()) {
      fail(Status::Format, "tokenizer_config.json: \"{}\" is {}; expected true or false", key,
           short_dump(*it));
    }
    return it->get<bool>();
  };
  c.bos_token = token("bos_token");
  c.eos_token = token("eos_token");
  c.add_bos = flag("add_bos_token");
  c.add_eos = flag("add_eos_token");
  return c;
}

}  // namespace

Tokenizer Tokenizer::from_tokenizer_json(std::string_view tokenizer_json,
                                         std::string_view tokenizer_config_json) {
  json j;
  try {
    j = json::parse(tokenizer_json);
  } catch (const json::exception& e) {
    fail(Status::Format,
         "tokenizer.json is not valid JSON ({}); expected the file the "
         "`tokenizers` library writes (Tokenizer.save)",
         e.what());
  }
  if (!j.is_object() || !j.contains("model")) {
    fail(Status::Format, "tokenizer.json is {}; expected an object with a \"model\"",
         short_dump(j));
  }
  const Config config = parse_config(tokenizer_config_json);
  auto impl = std::make_unique<Impl>();
  parse_normalizer(j.value("normalizer", json()), "normalizer", impl->normalizer);
  parse_pre_tokenizer(j.value("pre_tokenizer", json()), "pre_tokenizer", impl->pre_tokenizer);
  const auto& steps = impl->pre_tokenizer.steps();
  for (size_t i = 0; i + 1 < steps.size(); ++i) {
    if (std::holds_alternative<PreTokenizer::ByteLevel>(steps[i])) {
      unsupported("pre_tokenizer",
                  "a ByteLevel step before other steps is not implemented (it "
                  "must come last, as in every byte-level tokenizer.json)");
    }
  }
  const json decoder = j.value("decoder", json());
  if (decoder.is_null()) {
    impl->decoder = Decoder::none();
  } else {
    parse_decoder(decoder, "decoder", impl->decoder);
  }
  const bool byte_level = impl->pre_tokenizer.byte_level();
  if (impl->decoder.byte_level() && !byte_level) {
    unsupported("decoder",
                "a ByteLevel decoder without a ByteLevel pre-tokenizer is not "
                "implemented");
  }
  try {
    impl->model = parse_model(j["model"], byte_level);
  } catch (const Error& e) {
    throw Error(e.status(), fmt::format("tokenizer.json model: {}", e.what()));
  }
  impl->model.split_words_at("\u2581");
  impl->added = AddedTokens(parse_added_tokens(j.value("added_tokens", json())), impl->normalizer);
  Frame frame = parse_post_processor(j.value("post_processor", json()), "post_processor");
  impl->finish();

  const auto lookup = [&](const std::string& token, const char* key) {
    auto id = impl->find(token);
    if (!id) {
      fail(Status::Format,
           "tokenizer_config.json: {} {} is not in the vocabulary of "
           "tokenizer.json; are the two files from the same checkpoint?",
           key, json(token).dump());
    }
    return *id;
  };
  impl->bos = config.bos_token       ? std::optional(lookup(*config.bos_token, "bos_token"))
              : frame.prefix.empty() ? std::nullopt
                                     : std::optional(frame.prefix.front());
  impl->eos = config.eos_token       ? std::optional(lookup(*config.eos_token, "eos_token"))
              : frame.suffix.empty() ? std::nullopt
                                     : std::optional(frame.suffix.back());
  // transformers rebuilds the post-processor from add_bos_token / add_eos_token when the config
  // states either (the other then counts as false).
  if (config.add_bos || config.add_eos) {
    frame = {};
    if (config.add_bos.value_or(false) && impl->bos) frame.prefix = {*impl->bos};
    if (config.add_eos.value_or(false) && impl->eos) frame.suffix = {*impl->eos};
  }
  for (int32_t id : frame.prefix) {
    if (!impl->find_id(id))
      bad("post_processor", "adds the id {}, which is not in the vocabulary", id);
  }
  for (int32_t id : frame.suffix) {
    if (!impl->find_id(id))
      bad("post_processor", "adds the id {}, which is not in the vocabulary", id);
  }
  impl->prefix = std::move(frame.prefix);
  impl->suffix = std::move(frame.suffix);
  impl->eos_ids.clear();
  if (impl->eos) impl->eos_ids.push_back(*impl->eos);
  return Tokenizer(std::move(impl));
}

}  // namespace sf::tok
