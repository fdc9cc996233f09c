// The tokenizer against Hugging Face: tests/data/tokenizer/cases.json holds the ids that
// transformers' GPT2Tokenizer (slow) and GPT2TokenizerFast agree on for the vocabulary trained by
// scripts/make_tokenizer_fixtures.py, configured as OPT's tokenizer.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <thread>

#include "core/error.hpp"
#include "tokenizer/bpe.hpp"
#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

const std::string kDir = std::string(SF_TEST_DATA_DIR) + "/tokenizer/";

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f) << "cannot open " << path;
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const Tokenizer& fixture() {
  static const Tokenizer t = Tokenizer::from_files(kDir + "vocab.json", kDir + "merges.txt");
  return t;
}

const nlohmann::json& cases() {
  static const nlohmann::json j = nlohmann::json::parse(slurp(kDir + "cases.json"));
  return j;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return out;
}

TEST(Tokenizer, LoadsOptStyleVocabulary) {
  const Tokenizer& t = fixture();
  EXPECT_EQ(t.vocab_size(), 1500);
  EXPECT_EQ(t.num_tokens(), 1500);
  EXPECT_GT(t.num_merges(), 1000);
  EXPECT_EQ(t.token_id("<s>"), 0);
  EXPECT_EQ(t.token_id("<pad>"), 1);
  EXPECT_EQ(t.token_id("</s>"), 2);
  EXPECT_EQ(t.token_id("<unk>"), 3);
  EXPECT_EQ(t.token_id("Ġ"), t.encode(" ").at(0));
  EXPECT_FALSE(t.token_id("no such token").has_value());
  EXPECT_EQ(t.token_bytes(2), "</s>");
}

TEST(Tokenizer, IdsMatchHuggingFace) {
  const Tokenizer& t = fixture();
  const auto& all = cases().at("cases");
  ASSERT_GE(all.size(), 300u);
  for (const auto& c : all) {
    const std::string name = c.at("name"), text = c.at("text");
    const std::vector<int32_t> want = c.at("ids");
    EXPECT_EQ(t.encode(text), want) << "case '" << name << "'";
  }
}

TEST(Tokenizer, DecodeMatchesHuggingFaceAndRoundTrips) {
  const Tokenizer& t = fixture();
  for (const auto& c : cases().at("cases")) {
    const std::string name = c.at("name"), text = c.at("text"), decoded = c.at("decoded");
    const std::vector<int32_t> ids = c.at("ids");
    EXPECT_EQ(t.decode(ids), decoded) << "case '" << name << "'";
    EXPECT_EQ(t.decode(t.encode(text)), text) << "case '" << name << "'";
    std::string streamed;
    for (int32_t id : ids) streamed += t.token_bytes(id);
    EXPECT_EQ(streamed, t.decode(ids)) << "case '" << name << "'";
  }
}

TEST(Tokenizer, BosIsPrependedLikeOpt) {
  const Tokenizer& t = fixture();
  const int32_t bos = cases().at("bos_id");
  EXPECT_EQ(bos, 2);
  for (const auto& c : cases().at("cases")) {
    std::vector<int32_t> want{bos};
    for (int32_t id : c.at("ids")) want.push_back(id);
    EXPECT_EQ(t.encode_with_bos(c.at("text").get<std::string>(), bos), want);
  }
  EXPECT_EQ(t.encode_with_bos("", bos), std::vector<int32_t>{2});
}

TEST(Tokenizer, InvalidUtf8IsEncodedAsPythonsReplacementDecoding) {
  const Tokenizer& t = fixture();
  const auto& all = cases().at("invalid_utf8");
  ASSERT_FALSE(all.empty());
  for (const auto& c : all) {
    const std::string hex = c.at("hex");
    const std::vector<int32_t> want = c.at("ids");
    const std::string raw = from_hex(hex);
    ASSERT_FALSE(is_valid_utf8(raw)) << hex;
    EXPECT_EQ(t.encode(raw), want) << "bytes " << hex;
    // Decoding gives valid UTF-8: the text HF would have seen.
    EXPECT_EQ(t.decode(want), to_valid_utf8(raw)) << "bytes " << hex;
  }
}

TEST(Tokenizer, EveryByteAndBytePairEncodes) {
  const Tokenizer& t = fixture();
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; b += 5) {
      const std::string s{static_cast<char>(a), static_cast<char>(b)};
      const auto ids = t.encode(s);
      ASSERT_FALSE(ids.empty());
      EXPECT_EQ(t.decode(ids), to_valid_utf8(s));
    }
  }
}

TEST(Tokenizer, SpecialTokensSplitOnlyForRegisteredOnes) {
  const Tokenizer& t = fixture();
  const auto ids = t.encode("a</s><pad><s><unk>");
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids[1], 2);
  EXPECT_EQ(ids[2], 1);
  // "<s>" and "<unk>" are not special for OPT: plain BPE, so neither id 0 nor 3 appears.
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 0), 0);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 3), 0);
  // With no special tokens, "</s>" is ordinary text.
  const Tokenizer plain = Tokenizer::from_files(kDir + "vocab.json", kDir + "merges.txt", {});
  const auto p = plain.encode("</s>");
  EXPECT_GT(p.size(), 1u);
  EXPECT_EQ(plain.decode(p), "</s>");
  // Every token registered: "<s>" now maps to its id too.
  const Tokenizer all = Tokenizer::from_files(kDir + "vocab.json", kDir + "merges.txt",
                                              {"<s>", "</s>", "<pad>", "<unk>", "<absent>"});
  EXPECT_EQ(all.encode("<s>x<unk>"), (std::vector<int32_t>{0, all.encode("x")[0], 3}));
}

TEST(Tokenizer, LongInputsAreLinearAndExact) {
  const Tokenizer& t = fixture();
  // One 1 MB word: a quadratic BPE would take minutes.
  const std::string word(1 << 20, 'e');
  const auto ids = t.encode(word);
  EXPECT_LT(ids.size(), word.size());
  EXPECT_EQ(t.decode(ids), word);
  std::string mixed;
  for (int i = 0; i < 20000; ++i) mixed += "x \xe4\xb8\xad\t1'S ";
  EXPECT_EQ(t.decode(t.encode(mixed)), mixed);
}

TEST(Tokenizer, ThreadsShareTheCache) {
  const Tokenizer& t = fixture();
  std::vector<std::vector<int32_t>> want;
  for (const auto& c : cases().at("cases")) want.push_back(c.at("ids"));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      size_t i = 0;
      for (const auto& c : cases().at("cases")) {
        if (t.encode(c.at("text").get<std::string>()) != want[i++]) ++mismatches[k];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(Tokenizer, UnknownIdIsAClearError) {
  const Tokenizer& t = fixture();
  for (int32_t bad : {-1, 1500, 1 << 30}) {
    const std::vector<int32_t> ids{5, bad};
    try {
      t.decode(ids);
      ADD_FAILURE() << "decode accepted id " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::InvalidArgument);
      EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
    }
  }
}

// A tiny hand-written vocabulary: all 256 byte symbols, plus the merges given.
std::string byte_vocab(const std::vector<std::string>& extra) {
  nlohmann::json v = nlohmann::json::object();
  int id = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    std::string s;
    if (printable) {
      append_utf8(s, static_cast<char32_t>(b));
      v[s] = id++;
    }
  }
  int moved = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    if (!printable) {
      std::string s;
      append_utf8(s, static_cast<char32_t>(256 + moved++));
      v[s] = id++;
    }
  }
  for (const auto& e : extra) v[e] = id++;
  return v.dump();
}

Status load_status(const std::string& vocab, const std::string& merges, std::string* msg = nullptr) {
  try {
    Tokenizer::from_json_and_merges(vocab, merges);
  } catch (const Error& e) {
    if (msg) *msg = e.what();
    return e.status();
  }
  return Status::Ok;
}

TEST(Tokenizer, MergeRankOrderIsRespected) {
  // "a b" outranks "b c": "abc" -> "ab" "c". Reversed order: "a" "bc".
  const std::string vocab = byte_vocab({"ab", "bc"});
  const Tokenizer t1 = Tokenizer::from_json_and_merges(vocab, "#version: 0.2\na b\nb c\n");
  const Tokenizer t2 = Tokenizer::from_json_and_merges(vocab, "b c\r\na b\r\n");  // no header, CRLF
  EXPECT_EQ(t1.encode("abc"), (std::vector<int32_t>{*t1.token_id("ab"), *t1.token_id("c")}));
  EXPECT_EQ(t2.encode("abc"), (std::vector<int32_t>{*t2.token_id("a"), *t2.token_id("bc")}));
  // Equal pairs merge leftmost first: "aaa" -> "aa" "a".
  const Tokenizer t3 = Tokenizer::from_json_and_merges(byte_vocab({"aa"}), "a a\n");
  EXPECT_EQ(t3.encode("aaa"), (std::vector<int32_t>{*t3.token_id("aa"), *t3.token_id("a")}));
  EXPECT_EQ(t3.encode("aaaa"), (std::vector<int32_t>{*t3.token_id("aa"), *t3.token_id("aa")}));
}

TEST(Tokenizer, MalformedFilesAreRejectedWithReasons) {
  const std::string good = byte_vocab({"ab"});
  std::string msg;
  EXPECT_EQ(load_status(good, "a b\n"), Status::Ok);
  EXPECT_EQ(load_status("{not json", "", &msg), Status::Format);
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
  EXPECT_EQ(load_status("[1, 2]", "", &msg), Status::Format);
  EXPECT_NE(msg.find("object"), std::string::npos) << msg;
  EXPECT_EQ(load_status(R"({"a": "x"})", "", &msg), Status::Format);
  EXPECT_NE(msg.find("integer"), std::string::npos) << msg;
  EXPECT_EQ(load_status(R"({"a": -4})", "", &msg), Status::Format);
  EXPECT_EQ(load_status(R"({"a": 4294967296})", "", &msg), Status::Format);
  EXPECT_EQ(load_status(R"({"a": 1, "b": 1})", "", &msg), Status::Format);
  EXPECT_NE(msg.find("two tokens"), std::string::npos) << msg;
  EXPECT_EQ(load_status(R"({"a": 0})", "", &msg), Status::Format);
  EXPECT_NE(msg.find("byte 0x00"), std::string::npos) << msg;
  EXPECT_EQ(load_status(good, "a b c\n", &msg), Status::Format);
  EXPECT_NE(msg.find("line 1"), std::string::npos) << msg;
  EXPECT_EQ(load_status(good, "#version: 0.2\nab\n", &msg), Status::Format);
  EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;
  EXPECT_EQ(load_status(good, "a  b\n"), Status::Format);
  EXPECT_EQ(load_status(good, "b c\n", &msg), Status::Format);  // "bc" is not in the vocab
  EXPECT_NE(msg.find("\"bc\""), std::string::npos) << msg;
  EXPECT_EQ(load_status(good, "a zz\n", &msg), Status::Format);
  EXPECT_NE(msg.find("\"zz\""), std::string::npos) << msg;
}

TEST(Tokenizer, MissingFilesAreIoErrors) {
  try {
    Tokenizer::from_files("/nonexistent/vocab.json", kDir + "merges.txt");
    ADD_FAILURE() << "loaded a missing file";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::Io);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/vocab.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace sf::tok
