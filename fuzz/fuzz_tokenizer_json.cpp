// The tokenizer.json reader and pipeline on arbitrary bytes, two ways:
//  - input that parses as a JSON object is a tokenizer.json: loading returns or throws sf::Error;
//    a tokenizer that loads encodes and decodes text without crashing, ids in range.
//  - anything else is text for the fixture tokenizers (tests/data/tokenizer: Llama 3, Qwen2,
//    Llama 2, Mistral and Metaspace-split shapes) with their added tokens removed, so that decoding
//    gives the text back: byte-level exactly (Qwen2 after NFC), SentencePiece with "▁" read as a
//    space; token_bytes streams the same bytes as decode_bytes. Llama 2's ids equal those of the
//    same tokenizer encoding its words whole (BpeModel::split_words_at off).
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.hpp"
#include "harness.hpp"
#include "tokenizer/nfc.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/unicode.hpp"

#ifndef SF_FUZZ_TOKENIZER_DIR
#error "SF_FUZZ_TOKENIZER_DIR must name the folder holding the tokenizer.json fixtures"
#endif

namespace {

using sf::tok::Tokenizer;

struct Fixture {
  Tokenizer tok;
  bool byte_level, nfc;
};

nlohmann::json without_added(const char* name);

Tokenizer load_without_added(const char* name) {
  return Tokenizer::from_tokenizer_json(without_added(name).dump());
}

// The same tokenizer with SentencePiece words encoded whole: a merge that never applies (its
// left token is no character and no merge's result) but makes a token with "▁" inside turns off
// BpeModel::split_words_at, whose ids must not change.
Tokenizer load_unsplit(const char* name) {
  nlohmann::json j = without_added(name);
  auto& vocab = j["model"]["vocab"];
  const int64_t next = static_cast<int64_t>(vocab.size()) + 1000;
  vocab["zzq"] = next;
  vocab["zzq\u2581"] = next + 1;
  j["model"]["merges"].push_back({"zzq", "\u2581"});
  return Tokenizer::from_tokenizer_json(j.dump());
}

nlohmann::json without_added(const char* name) {
  std::string path = SF_FUZZ_TOKENIZER_DIR "/";
  path.append(name).append(".json");
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str());
  nlohmann::json kept = nlohmann::json::array();
  for (const auto& t : j["added_tokens"]) {  // the ones the model has: the template needs them
    if (j["model"]["vocab"].contains(t["content"].get<std::string>()) && t["special"]) {
      kept.push_back(t);
    }
  }
  j["added_tokens"] = kept;
  j["post_processor"] = nullptr;  // it names added tokens that are gone
  return j;
}

std::vector<Fixture>& fixtures() {
  static std::vector<Fixture> f = [] {
    std::vector<Fixture> out;
    out.push_back({load_without_added("llama3_bpe"), true, false});
    out.push_back({load_without_added("qwen2_bpe"), true, true});
    out.push_back({load_without_added("llama2_sp"), false, false});
    out.push_back({load_without_added("mistral_sp"), false, false});
    out.push_back({load_without_added("metaspace_split_sp"), false, false});
    return out;
  }();
  return f;
}

const Tokenizer& unsplit_llama2() {
  static const Tokenizer t = load_unsplit("llama2_sp");
  return t;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string_view::npos; pos = hit + from.size()) {
    out.append(s.substr(pos, hit - pos)).append(to);
  }
  return out.append(s.substr(pos));
}

// The text of the fixtures' special tokens would be split out; the fuzzer's text avoids them.
bool has_special_text(std::string_view text) {
  for (std::string_view s : {"<|", "<s>", "</s>", "<unk>"}) {
    if (text.find(s) != std::string_view::npos) return true;
  }
  return false;
}

void exercise_loaded(const Tokenizer& t) {
  for (std::string_view text :
       {"", "Hello world", " a  b\n\n12345 caf\xc3\xa9 \xe4\xb8\xad\xf0\x9f\x98\x80",
        "<s>x</s><|im_start|>", "\xff\xfe"}) {
    for (bool special : {false, true}) {
      const auto ids = t.encode(text, special);
      for (int32_t id : ids) SF_FUZZ_CHECK(id >= 0 && id < t.vocab_size());
      const std::string decoded = t.decode(ids);
      SF_FUZZ_CHECK(sf::tok::is_valid_utf8(decoded));
      std::string streamed;
      for (int32_t id : ids) streamed += t.token_bytes(id);
      SF_FUZZ_CHECK(streamed == t.decode_bytes(ids));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto j = nlohmann::json::parse(input, nullptr, /*allow_exceptions=*/false);
  if (j.is_object()) {
    try {
      exercise_loaded(Tokenizer::from_tokenizer_json(input));
    } catch (const sf::Error&) {
      // A refusal is the contract for bad or unsupported files.
    }
    return 0;
  }
  if (has_special_text(input)) return 0;
  const std::string valid = sf::tok::to_valid_utf8(input);
  SF_FUZZ_CHECK(unsplit_llama2().encode(input) == fixtures()[2].tok.encode(input));
  for (const Fixture& f : fixtures()) {
    const auto ids = f.tok.encode(input);
    SF_FUZZ_CHECK(f.tok.encode(valid) == ids);
    for (int32_t id : ids) SF_FUZZ_CHECK(id >= 0 && id < f.tok.vocab_size());
    std::string streamed;
    for (int32_t id : ids) streamed += f.tok.token_bytes(id);
    SF_FUZZ_CHECK(streamed == f.tok.decode_bytes(ids));
    const std::string decoded = f.tok.decode(ids);
    if (f.byte_level) {
      SF_FUZZ_CHECK(decoded == (f.nfc ? sf::tok::to_nfc(valid) : valid));
    } else {
      // Every character is in the vocabulary or its byte tokens: nothing is lost but the
      // distinction between " " and "▁", and at the start what the decoder strips (one space;
      // every "▁" of the first token for the Metaspace decoder).
      const std::string want = replace_all(valid, "\xe2\x96\x81", " ");
      const std::string got = replace_all(decoded, "\xe2\x96\x81", " ");
      SF_FUZZ_CHECK(got.size() <= want.size());
      SF_FUZZ_CHECK(want.ends_with(got));
    }
  }
  return 0;
}
