// tokenizer.json and GGUF tokenizers against Hugging Face. The references (ids, ids with special
// tokens, decoded strings) come from tests/data/tokenizer/make_llama_cases.py: the `tokenizers`
// library for the six tiny tokenizer.json files (Llama 3 and Qwen2 byte-level BPE, GPT-2 with
// SmolLM2's Digits pre-tokenizer, Llama 2, Mistral and older Metaspace-split SentencePiece BPE),
// and transformers' GGUF loader for the two tiny GGUF files.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <thread>

#include "core/error.hpp"
#include "format/gguf.hpp"
#include "gguf_glue.hpp"
#include "reference_cases.hpp"
#include "tokenizer/gguf_tokenizer.hpp"
#include "tokenizer/nfc.hpp"
#include "tokenizer/tokenizer.hpp"

namespace sf::tok {
namespace {

using nlohmann::json;
using testing::check_references;
using testing::kTokenizerData;
using testing::read_gguf_tokenizer;
using testing::slurp;
using testing::Streaming;

const json& llama_cases() {
  static const json j = json::parse(slurp(kTokenizerData + "llama_cases.json"));
  return j;
}

const json& gguf_cases() {
  static const json j = json::parse(slurp(kTokenizerData + "gguf_cases.json"));
  return j;
}

Tokenizer load(const std::string& name, std::string_view config = {}) {
  return Tokenizer::from_tokenizer_json(slurp(kTokenizerData + name + ".json"), config);
}

json tokenizer_file(const std::string& name) {
  return json::parse(slurp(kTokenizerData + name + ".json"));
}

struct Family {
  const char* name;
  Streaming streaming;
};

class TokenizerJson : public ::testing::TestWithParam<Family> {};

TEST_P(TokenizerJson, MatchesHuggingFace) {
  const Family f = GetParam();
  const Tokenizer t = load(f.name);
  const auto n = check_references(t, llama_cases().at("tokenizers_json").at(f.name),
                                  llama_cases().at("texts"), f.name, f.streaming);
  EXPECT_GT(n.encoded, 150u);
  EXPECT_GT(n.decoded, 50u);
}

INSTANTIATE_TEST_SUITE_P(Families, TokenizerJson,
                         ::testing::Values(Family{"llama3_bpe", Streaming::Exact},
                                           Family{"qwen2_bpe", Streaming::Exact},
                                           Family{"gpt2_digits_bpe", Streaming::Exact},
                                           Family{"llama2_sp", Streaming::StripsOneSpace},
                                           Family{"mistral_sp", Streaming::StripsOneSpace},
                                           Family{"metaspace_split_sp", Streaming::NotCompared}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(TokenizerJson, SpecialTokensBosAndEos) {
  const Tokenizer llama3 = load("llama3_bpe");
  const int32_t begin = *llama3.token_id("<|begin_of_text|>");
  const int32_t end = *llama3.token_id("<|end_of_text|>"), eot = *llama3.token_id("<|eot_id|>");
  EXPECT_EQ(llama3.bos_id(), begin);  // from the template
  EXPECT_FALSE(llama3.eos_id().has_value());
  EXPECT_TRUE(llama3.eos_ids().empty());
  EXPECT_TRUE(llama3.is_special(begin));
  EXPECT_FALSE(llama3.is_special(*llama3.token_id("<tool>")));  // added, not special
  EXPECT_FALSE(llama3.is_special(llama3.encode("a")[0]));
  EXPECT_FALSE(llama3.is_special(-1));
  EXPECT_EQ(llama3.encode("", true), std::vector<int32_t>{begin});

  // tokenizer_config.json names the EOS; generation_config's several are set by the caller.
  Tokenizer instruct = load("llama3_bpe", R"({"bos_token": "<|begin_of_text|>",
      "eos_token": {"content": "<|eot_id|>", "special": true}})");
  EXPECT_EQ(instruct.eos_id(), eot);
  EXPECT_EQ(instruct.eos_ids(), std::vector<int32_t>{eot});
  instruct.set_eos_ids({end, eot});
  EXPECT_TRUE(instruct.is_eos(end));
  EXPECT_TRUE(instruct.is_eos(eot));
  EXPECT_FALSE(instruct.is_eos(begin));
  EXPECT_THROW(instruct.set_eos_ids({end, 1 << 20}), Error);
  EXPECT_EQ(instruct.encode("hi", true).front(), begin);

  const Tokenizer qwen = load("qwen2_bpe");  // no BOS, as Qwen2
  EXPECT_FALSE(qwen.bos_id().has_value());
  EXPECT_EQ(qwen.encode("hi", true), qwen.encode("hi", false));

  const Tokenizer gpt2 = load("gpt2_digits_bpe");  // RobertaProcessing: <s> ... </s>
  EXPECT_EQ(gpt2.bos_id(), 0);
  EXPECT_EQ(gpt2.eos_id(), 2);
  EXPECT_EQ(gpt2.encode("", true), (std::vector<int32_t>{0, 2}));
}

TEST(TokenizerJson, ConfigFlagsRebuildThePostProcessor) {
  // As transformers: add_bos_token / add_eos_token, when stated, decide what is added.
  const Tokenizer no_bos = load("llama2_sp", R"({"add_bos_token": false, "bos_token": "<s>"})");
  EXPECT_TRUE(no_bos.special_prefix().empty());
  EXPECT_EQ(no_bos.bos_id(), 1);
  const Tokenizer both =
      load("llama2_sp", R"({"add_bos_token": true, "add_eos_token": true, "eos_token": "</s>"})");
  const auto ids = both.encode("hello", true);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  const Tokenizer plain = load("llama2_sp", R"({"chat_template": "whatever"})");
  EXPECT_EQ(plain.encode("hello", true).front(), 1);
  EXPECT_EQ(plain.encode("hello", true).back(), plain.encode("hello").back());
}

TEST(TokenizerJson, StreamingSentencePieceTokens) {
  const Tokenizer t = load("llama2_sp");
  // "▁" is a space in the stream; byte-fallback tokens are their byte.
  EXPECT_EQ(t.token_bytes(*t.token_id("\u2581")), " ");
  EXPECT_EQ(t.token_bytes(*t.token_id("<0x41>")), "A");
  EXPECT_EQ(t.token_bytes(*t.token_id("<0xE4>")), "\xE4");
  const auto ids = t.encode("\u4e2d x");  // a CJK character not in the vocabulary: 3 byte tokens
  EXPECT_EQ(t.decode_bytes(ids), " \u4e2d x");
  EXPECT_EQ(t.decode(ids), "\u4e2d x");  // HF's Strip of the first space
}

TEST(TokenizerJson, SentencePieceWordsSplitExactly) {
  // BpeModel::split_words_at encodes a SentencePiece stretch piece by piece (cacheable). A merge
  // that never applies but makes a token with "▁" inside turns it off: the ids must not change.
  for (const char* name : {"llama2_sp", "mistral_sp"}) {
    json j = tokenizer_file(name);
    const int64_t next = static_cast<int64_t>(j["model"]["vocab"].size()) + 1000;
    j["model"]["vocab"]["zzq"] = next;
    j["model"]["vocab"]["zzq\u2581"] = next + 1;
    j["model"]["merges"].push_back({"zzq", "\u2581"});
    const Tokenizer whole = Tokenizer::from_tokenizer_json(j.dump());
    const Tokenizer split = load(name);
    std::vector<std::string> texts;
    for (const auto& t : llama_cases().at("texts")) texts.push_back(t.at("text"));
    for (const char* t : {"a  b   c    d     e", "  x", "\u2581\u2581\u2581y", " \u2581 \u2581z ",
                          "\u2581", "x\u2581", "\u2581\u2581", "\t \t\u4e2d \u2581a"}) {
      texts.push_back(t);
    }
    for (const std::string& text : texts) {
      EXPECT_EQ(split.encode(text), whole.encode(text)) << name << ": " << text;
    }
  }
}

TEST(TokenizerJson, LongInputsAreLinear) {
  // A SentencePiece segment is one word however long: 1 MB must not be quadratic.
  const Tokenizer sp = load("llama2_sp");
  std::string text;
  while (text.size() < (1u << 20)) text += "the sparse engine runs the model ";
  const auto ids = sp.encode(text);
  EXPECT_LT(ids.size(), text.size() / 2);
  EXPECT_EQ(sp.decode(ids), text.substr(0, text.size()));
  const Tokenizer llama3 = load("llama3_bpe");
  const std::string digits(1 << 20, '7');
  EXPECT_EQ(llama3.decode(llama3.encode(digits)), digits);
}

TEST(TokenizerJson, ThreadsShareTheCache) {
  const Tokenizer t = load("mistral_sp");
  const json& texts = llama_cases().at("texts");
  const json& ref = llama_cases().at("tokenizers_json").at("mistral_sp").at("cases");
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (size_t i = 0; i < texts.size(); ++i) {
        if (t.encode(texts[i].at("text").get<std::string>()) !=
            ref[i].at("ids").get<std::vector<int>>())
          ++mismatches[k];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(TokenizerJson, Nfc) {
  // Expected values from Python's unicodedata.normalize("NFC", ...).
  EXPECT_EQ(to_nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(to_nfc("e\u0301"), "\u00e9");
  EXPECT_EQ(to_nfc("a\u0307\u0323"), "\u1ea1\u0307");   // reordered below-dot first, then composed
  EXPECT_EQ(to_nfc("\u212b \u2126"), "\u00c5 \u03a9");  // singletons
  EXPECT_EQ(to_nfc("\u1100\u1161\u11a8"), "\uac01");    // Hangul L V T
  EXPECT_EQ(to_nfc("\u0301a"), "\u0301a");              // a leading mark composes with nothing
  EXPECT_EQ(to_nfc("\u0958"), "\u0915\u093c");          // composition exclusion
}

// --- errors: what is not implemented is refused by name

Status load_status(const json& j, std::string* msg) {
  try {
    Tokenizer::from_tokenizer_json(j.dump());
  } catch (const Error& e) {
    *msg = e.what();
    return e.status();
  }
  return Status::Ok;
}

TEST(TokenizerJson, RefusesWhatItDoesNotImplement) {
  std::string msg;
  json j = tokenizer_file("llama3_bpe");
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = R"(\p{L}+|\s+)";
  EXPECT_EQ(load_status(j, &msg), Status::UnsupportedShape);
  EXPECT_NE(msg.find("Split regex"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\\\\p{L}+"), std::string::npos) << msg;

  j = tokenizer_file("llama3_bpe");
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
  EXPECT_EQ(load_status(j, &msg), Status::UnsupportedShape);
  EXPECT_NE(msg.find("Removed"), std::string::npos) << msg;

  j = tokenizer_file("llama3_bpe");
  std::swap(j["pre_tokenizer"]["pretokenizers"][0], j["pre_tokenizer"]["pretokenizers"][1]);
  EXPECT_EQ(load_status(j, &msg), Status::UnsupportedShape);
  EXPECT_NE(msg.find("ByteLevel"), std::string::npos) << msg;

  j = tokenizer_file("qwen2_bpe");
  j["normalizer"] = {{"type", "NFKC"}};
  EXPECT_EQ(load_status(j, &msg), Status::UnsupportedShape);
  EXPECT_NE(msg.find("\"NFKC\""), std::string::npos) << msg;

  j = tokenizer_file("llama2_sp");
  j["normalizer"]["normalizers"][1]["pattern"] = {{"Regex", " +"}};
  EXPECT_EQ(load_status(j, &msg), Status::UnsupportedShape);
  EXPECT_NE(msg.find("normalizer[1]"), std::string::npos) << msg;

  j = tokenizer_file("llama2_sp");
  j["model"]["type"] = "Unigram";
  EXPECT_EQ(load_status(j, &msg), Status::UnsupportedShape);
  EXPECT_NE(msg.find("Unigram"), std::string::npos) << msg;

  j = tokenizer_file("llama2_sp");
  j["model"]["dropout"] = 0.1;
  EXPECT_EQ(load_status(j, &msg), Status::UnsupportedShape);
  EXPECT_NE(msg.find("dropout"), std::string::npos) << msg;

  j = tokenizer_file("mistral_sp");
  j["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}};
  EXPECT_EQ(load_status(j, &msg), Status::UnsupportedShape);
  EXPECT_NE(msg.find("WordPiece"), std::string::npos) << msg;

  j = tokenizer_file("gpt2_digits_bpe");
  j["post_processor"] = {{"type", "Whatever"}};
  EXPECT_EQ(load_status(j, &msg), Status::UnsupportedShape);
}

TEST(TokenizerJson, RejectsMalformedFiles) {
  std::string msg;
  try {
    Tokenizer::from_tokenizer_json("{not json");
    ADD_FAILURE() << "parsed invalid JSON";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::Format);
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos);
  }
  EXPECT_EQ(load_status(json::array(), &msg), Status::Format);

  json j = tokenizer_file("llama3_bpe");
  j["model"]["merges"][5] = {"no such token", "x"};
  EXPECT_EQ(load_status(j, &msg), Status::Format);
  EXPECT_NE(msg.find("merges[5]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no such token"), std::string::npos) << msg;

  j = tokenizer_file("llama3_bpe");
  j["model"]["merges"][0] = "a b c";
  EXPECT_EQ(load_status(j, &msg), Status::Format);

  j = tokenizer_file("llama3_bpe");
  j["model"]["vocab"]["\u0120"] = -3;
  EXPECT_EQ(load_status(j, &msg), Status::Format);
  EXPECT_NE(msg.find("-3"), std::string::npos) << msg;

  // A byte the vocabulary lacks is dropped, as HF drops it (SmolLM2 has no token for 0x04).
  j = tokenizer_file("llama3_bpe");
  j["model"]["vocab"].erase("\u0120");  // the byte 0x20
  j["model"]["merges"] = json::array();
  j["model"]["ignore_merges"] = false;
  const Tokenizer no_space = Tokenizer::from_tokenizer_json(j.dump());
  EXPECT_EQ(no_space.encode("a b"),
            (std::vector<int32_t>{*no_space.token_id("a"), *no_space.token_id("b")}));

  j = tokenizer_file("llama2_sp");
  j["added_tokens"][0]["content"] = 7;
  EXPECT_EQ(load_status(j, &msg), Status::Format);
  EXPECT_NE(msg.find("added_tokens[0]"), std::string::npos) << msg;

  j = tokenizer_file("llama2_sp");
  j["post_processor"]["single"][0]["SpecialToken"]["id"] = "<nope>";
  EXPECT_EQ(load_status(j, &msg), Status::Format);
  EXPECT_NE(msg.find("<nope>"), std::string::npos) << msg;

  j = tokenizer_file("mistral_sp");
  j["pre_tokenizer"]["replacement"] = "ab";
  EXPECT_EQ(load_status(j, &msg), Status::Format);

  try {
    load("llama2_sp", R"({"bos_token": "<absent>"})");
    ADD_FAILURE() << "accepted a bos_token outside the vocabulary";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::Format);
    EXPECT_NE(std::string(e.what()).find("<absent>"), std::string::npos) << e.what();
  }
  const Tokenizer t = load("llama2_sp");
  for (int32_t bad : {-1, int32_t(t.vocab_size()), 1 << 30}) {
    EXPECT_THROW(t.decode(std::vector<int32_t>{bad}), Error);
    EXPECT_THROW(t.token_bytes(bad), Error);
  }
}

// --- GGUF: the metadata of the two tiny files through tokenizer_json_from_gguf

void expect_same_data(const GgufTokenizerData& d, const json& want) {
  EXPECT_EQ(d.model, want.at("model").get<std::string>());
  EXPECT_EQ(d.pre, want.at("pre").get<std::string>());
  EXPECT_EQ(d.tokens, want.at("tokens").get<std::vector<std::string>>());
  EXPECT_EQ(d.scores, want.at("scores").get<std::vector<float>>());
  EXPECT_EQ(d.token_types, want.at("token_types").get<std::vector<int32_t>>());
  EXPECT_EQ(d.merges, want.at("merges").get<std::vector<std::string>>());
  EXPECT_EQ(d.bos, want.at("bos").get<decltype(d.bos)>());
  EXPECT_EQ(d.eos, want.at("eos").get<decltype(d.eos)>());
  EXPECT_EQ(d.unk, want.at("unk").get<decltype(d.unk)>());
  EXPECT_EQ(d.pad, want.at("pad").get<decltype(d.pad)>());
  EXPECT_EQ(d.add_bos, want.at("add_bos").get<bool>());
  EXPECT_EQ(d.add_eos, want.at("add_eos").get<bool>());
}

Tokenizer from_gguf(const GgufTokenizerData& d) {
  return Tokenizer::from_tokenizer_json(tokenizer_json_from_gguf(d),
                                        tokenizer_config_json_from_gguf(d));
}

class GgufTokenizer : public ::testing::TestWithParam<const char*> {};

TEST_P(GgufTokenizer, MatchesTransformers) {
  const std::string name = GetParam();
  const json& ref = gguf_cases().at("gguf").at(name);
  const format::GgufFile file =
      format::GgufFile::open(kTokenizerData + ref.at("file").get<std::string>());
  const GgufTokenizerData d = read_gguf_tokenizer(file);
  expect_same_data(d, ref.at("data"));
  const Tokenizer t = from_gguf(d);
  const auto streaming = d.model == "gpt2" ? Streaming::Exact : Streaming::StripsOneSpace;
  const auto n = check_references(t, ref, gguf_cases().at("texts"), "gguf " + name, streaming);
  EXPECT_GT(n.encoded, 150u);
  EXPECT_EQ(t.bos_id(), ref.at("bos_id").get<int32_t>());
  EXPECT_EQ(t.eos_id(), ref.at("eos_id").get<int32_t>());
  std::vector<int32_t> special;
  for (int32_t id = 0; id < t.vocab_size(); ++id) {
    if (t.is_special(id)) special.push_back(id);
  }
  EXPECT_EQ(special, ref.at("special_ids").get<std::vector<int32_t>>());
}

INSTANTIATE_TEST_SUITE_P(Files, GgufTokenizer, ::testing::Values("llama_sp", "llama3_bpe"));

TEST(GgufTokenizer, RefusesWhatItCannotBuild) {
  GgufTokenizerData d;
  d.model = "t5";
  d.tokens = {"a"};
  try {
    tokenizer_json_from_gguf(d);
    ADD_FAILURE() << "built a t5 tokenizer";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::UnsupportedShape);
    EXPECT_NE(std::string(e.what()).find("\"t5\""), std::string::npos) << e.what();
  }
  d.model = "gpt2";
  d.pre = "tekken";
  EXPECT_THROW(tokenizer_json_from_gguf(d), Error);
  d.pre = "";
  d.bos = 5;  // out of range
  try {
    tokenizer_json_from_gguf(d);
    ADD_FAILURE() << "accepted bos 5 of 1 token";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::Format);
    EXPECT_NE(std::string(e.what()).find("bos_token_id"), std::string::npos) << e.what();
  }
  d.bos = -1;
  d.merges = {"a"};
  EXPECT_THROW(tokenizer_json_from_gguf(d), Error);
  d.model = "llama";
  d.merges = {};
  d.tokens = {"ok", "\xff"};
  EXPECT_THROW(tokenizer_json_from_gguf(d), Error);
}

TEST(GgufTokenizer, MergesFromScoresFollowTransformers) {
  // generate_merges: each token's splits into two vocabulary tokens, by score, then by the
  // left part's length, then the right's, all descending and stable.
  GgufTokenizerData d;
  d.model = "llama";
  d.tokens = {"<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "abc"};
  d.scores = {0, 0, 0, -1, -1, -1, -2, -3, -4};
  d.token_types = {2, 3, 3, 1, 1, 1, 1, 1, 1};
  d.bos = 1, d.eos = 2, d.add_bos = true;
  const json j = json::parse(tokenizer_json_from_gguf(d));
  EXPECT_EQ(j.at("model").at("merges"),
            json::parse(R"([["a","b"],["b","c"],["ab","c"],["a","bc"]])"));
  const Tokenizer t = from_gguf(d);
  EXPECT_EQ(t.encode("abc", true), (std::vector<int32_t>{1, 8}));  // BOS, then "abc"
  EXPECT_EQ(t.special_prefix().size(), 1u);
}

}  // namespace
}  // namespace sf::tok
