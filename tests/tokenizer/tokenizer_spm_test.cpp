// SentencePiece models (tokenizer.model) against transformers and sentencepiece. The fixture
// spm_bpe.model and the references in spm_cases.json come from
// tests/data/tokenizer/make_spm_cases.py: per tokenizer_config.json, LlamaTokenizerFast's ids
// (what AutoTokenizer gives for a directory with tokenizer.model and no tokenizer.json), and
// where they differ, those of the slow LlamaTokenizer and of the sentencepiece library.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "reference_cases.hpp"
#include "tokenizer/spm_model.hpp"
#include "tokenizer/spm_tokenizer.hpp"
#include "tokenizer/tokenizer.hpp"

namespace sf::tok {
namespace {

using nlohmann::json;
using testing::check_references;
using testing::kTokenizerData;
using testing::slurp;
using testing::Streaming;

const json& spm_cases() {
  static const json j = json::parse(slurp(kTokenizerData + "spm_cases.json"));
  return j;
}

std::vector<uint8_t> model_bytes() {
  const std::string s = slurp(kTokenizerData + "spm_bpe.model");
  return {s.begin(), s.end()};
}

std::string config_text(const std::string& name) {
  const json& c = spm_cases().at("configs").at(name).at("tokenizer_config");
  return c.is_null() ? std::string() : c.dump();
}

Tokenizer load(std::span<const uint8_t> model, std::string_view config) {
  const SpmConversion c = tokenizer_json_from_spm(
      std::string_view(reinterpret_cast<const char*>(model.data()), model.size()), config);
  return Tokenizer::from_tokenizer_json(c.tokenizer_json, c.tokenizer_config_json);
}

// --- protobuf pieces, to damage or extend the fixture. Fields appended to a message override
// (scalars) or extend (repeated) what it had: protobuf merges repeated occurrences.

void varint(std::vector<uint8_t>& out, uint64_t v) {
  for (; v >= 0x80; v >>= 7) out.push_back(uint8_t(v | 0x80));
  out.push_back(uint8_t(v));
}

std::vector<uint8_t> field(uint32_t number, const std::vector<uint8_t>& message) {
  std::vector<uint8_t> out;
  varint(out, (uint64_t(number) << 3) | 2);
  varint(out, message.size());
  out.insert(out.end(), message.begin(), message.end());
  return out;
}

std::vector<uint8_t> varint_field(uint32_t number, uint64_t v) {
  std::vector<uint8_t> out;
  varint(out, uint64_t(number) << 3);
  varint(out, v);
  return out;
}

std::vector<uint8_t> piece(const std::string& text, float score, int type = 1) {
  std::vector<uint8_t> m = field(1, std::vector<uint8_t>(text.begin(), text.end()));
  m.push_back(0x15);  // field 2, fixed32
  uint32_t bits;
  std::memcpy(&bits, &score, 4);
  for (int i = 0; i < 4; ++i) m.push_back(uint8_t(bits >> (8 * i)));
  const auto t = varint_field(3, uint64_t(type));
  m.insert(m.end(), t.begin(), t.end());
  return field(1, m);
}

std::vector<uint8_t> with(std::vector<uint8_t> model, const std::vector<uint8_t>& extra) {
  model.insert(model.end(), extra.begin(), extra.end());
  return model;
}

std::vector<uint8_t> trainer(uint32_t number, uint64_t v) {
  return field(2, varint_field(number, v));
}

std::vector<uint8_t> normalizer(uint32_t number, uint64_t v) {
  return field(3, varint_field(number, v));
}

Status status_of(std::span<const uint8_t> model, std::string_view config = {}) {
  try {
    load(model, config);
  } catch (const Error& e) {
    return e.status();
  }
  return Status::Ok;
}

std::string message_of(std::span<const uint8_t> model, std::string_view config = {}) {
  try {
    load(model, config);
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

// --- references

struct Case {
  const char* config;
  Streaming streaming;
};

class SpmReference : public ::testing::TestWithParam<Case> {};

TEST_P(SpmReference, MatchesTransformers) {
  const Case c = GetParam();
  const json& ref = spm_cases().at("configs").at(c.config);
  const auto model = model_bytes();
  const Tokenizer t = load(model, config_text(c.config));
  EXPECT_EQ(t.vocab_size(), ref.at("vocab_size").get<int64_t>());
  EXPECT_EQ(t.bos_id(), ref.at("bos_id").get<int32_t>());
  EXPECT_EQ(t.eos_id(), ref.at("eos_id").get<int32_t>());
  const auto n = check_references(t, ref, spm_cases().at("texts"), c.config, c.streaming);
  EXPECT_GT(n.encoded, 140u);
  EXPECT_GT(n.decoded, 40u);
}

INSTANTIATE_TEST_SUITE_P(Configs, SpmReference,
                         ::testing::Values(Case{"llama2_legacy", Streaming::StripsOneSpace},
                                           Case{"llama2", Streaming::StripsOneSpace},
                                           Case{"no_prefix_eos", Streaming::Exact},
                                           Case{"no_config", Streaming::StripsOneSpace}),
                         [](const auto& info) { return std::string(info.param.config); });

bool writes_added_token(const std::string& text) {
  for (const char* t : {"<s>", "</s>", "<unk>", "<tool>", "<ctrl>", "<|im_end|>"}) {
    if (text.find(t) != std::string::npos) return true;
  }
  return false;
}

// With Llama 2's legacy settings transformers' ids are sentencepiece's own for every text that
// writes no special or added token (those transformers splits out first; sentencepiece reads
// them as text). The generator records sentencepiece's ids where they differ.
TEST(SpmReference, LegacyIsSentencepieceOnPlainText) {
  const json& texts = spm_cases().at("texts");
  for (const char* name : {"llama2_legacy", "no_config"}) {
    const json& ref = spm_cases().at("configs").at(name);
    size_t plain = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      const std::string text = texts[i].at("text");
      if (writes_added_token(text)) continue;
      ++plain;
      EXPECT_FALSE(ref["cases"][i].contains("spm_ids")) << name << ": " << texts[i]["name"];
      EXPECT_FALSE(ref["cases"][i].contains("slow_ids")) << name << ": " << texts[i]["name"];
      EXPECT_FALSE(ref["cases"][i].contains("spm_decoded")) << name << ": " << texts[i]["name"];
    }
    EXPECT_GT(plain, 50u) << name;
  }
}

TEST(SpmModel, ReadsTheFixture) {
  const auto bytes = model_bytes();
  const SpmModel m = parse_spm_model(bytes);
  EXPECT_EQ(m.pieces.size(), 700u);
  EXPECT_EQ(m.model_type, SpmModelType::Bpe);
  EXPECT_TRUE(m.byte_fallback);
  EXPECT_EQ(m.unk_id, 0);
  EXPECT_EQ(m.bos_id, 1);
  EXPECT_EQ(m.eos_id, 2);
  EXPECT_EQ(m.pad_id, -1);
  EXPECT_EQ(m.pieces[0].piece, "<unk>");
  EXPECT_EQ(m.pieces[0].type, SpmType::Unknown);
  EXPECT_EQ(m.pieces[1].type, SpmType::Control);
  EXPECT_EQ(m.pieces[3].piece, "<ctrl>");
  EXPECT_EQ(m.pieces[4].piece, "<tool>");
  EXPECT_EQ(m.pieces[4].type, SpmType::UserDefined);
  EXPECT_EQ(m.pieces[5].piece, "<0x00>");
  EXPECT_EQ(m.pieces[5].type, SpmType::Byte);
  EXPECT_EQ(m.normalizer.name, "identity");
  EXPECT_TRUE(m.normalizer.add_dummy_prefix);
  EXPECT_FALSE(m.normalizer.remove_extra_whitespaces);
  EXPECT_TRUE(m.normalizer.escape_whitespaces);
}

// Every prefix of the file either parses (a prefix ending between top-level fields is a smaller
// model) or is refused as malformed; none crashes.
TEST(SpmModel, TruncatedFilesAreRefused) {
  const auto bytes = model_bytes();
  size_t refused = 0;
  for (size_t n = 0; n < bytes.size(); ++n) {
    try {
      parse_spm_model(std::span(bytes).first(n));
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::Format) << n;
      ++refused;
    }
  }
  EXPECT_GT(refused, bytes.size() / 2);
}

TEST(SpmModel, MalformedBytesAreFormatErrors) {
  const auto bytes = model_bytes();
  const auto format_error = [](std::vector<uint8_t> b, const char* says) {
    try {
      parse_spm_model(b);
      ADD_FAILURE() << "accepted; expected an error saying " << says;
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::Format) << e.what();
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  format_error({}, "no pieces");
  format_error({0x0a, 0x7f}, "claims 127 bytes");
  format_error({0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
               "longer than 64 bits");
  format_error({0x00, 0x00}, "field number");
  format_error({0x0b}, "wire type 3");
  format_error(with(bytes, {0x08, 0x01}), "pieces[] (field 1) has wire type 0");
  format_error(with(bytes, piece("\xff", 0.0f)), "not valid UTF-8");
  format_error(with(bytes, piece("", 0.0f)), "has no text");
  format_error(with(bytes, piece("<s>", -1.0f)), "repeats pieces[1]");
  format_error(with(bytes, piece("zzq", std::nanf(""))), "finite");
  format_error(with(bytes, piece("zzq", 0.0f, 9)), "pieces[700].type is 9");
  format_error(with(bytes, trainer(3, 7)), "model_type is 7");
  format_error(with(bytes, trainer(40, uint64_t(1) << 40)), "32-bit integer");
}

TEST(SpmTokenizer, RefusesWhatTransformersWouldConvertDifferently) {
  const auto bytes = model_bytes();
  const auto unsupported = [](std::span<const uint8_t> b, std::string_view config,
                              const char* says) {
    const std::string msg = message_of(b, config);
    EXPECT_EQ(status_of(b, config), Status::UnsupportedShape) << msg;
    EXPECT_NE(msg.find(says), std::string::npos) << msg;
    EXPECT_NE(msg.find("save_pretrained"), std::string::npos) << msg;
  };
  unsupported(with(bytes, trainer(3, 1)), "", "SentencePiece UNIGRAM model");
  unsupported(with(bytes, normalizer(4, 1)), "", "remove_extra_whitespaces");
  unsupported(with(bytes, normalizer(5, 0)), "", "escape_whitespaces");
  unsupported(with(bytes, trainer(24, 1)), "", "treat_whitespace_as_suffix");
  unsupported(with(bytes, field(3, field(2, {1, 2, 3}))), "", "normalization rules");
  unsupported(with(bytes, field(5, field(6, {'a'}))), "", "denormalizer_spec");
  unsupported(with(bytes, trainer(35, 0)), "", "BYTE pieces");
  unsupported(bytes, R"({"tokenizer_class": "T5Tokenizer"})", "T5Tokenizer");
  // add_dummy_prefix false: transformers and sentencepiece agree only once the config decides.
  const auto no_dummy = with(bytes, normalizer(3, 0));
  unsupported(no_dummy, "", "add_prefix_space");
  EXPECT_EQ(status_of(no_dummy, R"({"add_prefix_space": false})"), Status::Ok);
}

TEST(SpmTokenizer, InconsistentConfigsAreFormatErrors) {
  const auto bytes = model_bytes();
  const auto format_error = [&](std::string_view config, const char* says) {
    const std::string msg = message_of(bytes, config);
    EXPECT_EQ(status_of(bytes, config), Status::Format) << msg;
    EXPECT_NE(msg.find(says), std::string::npos) << msg;
  };
  format_error("[1]", "expected an object");
  format_error("{", "not valid JSON");
  format_error(R"({"legacy": "yes"})", "\"legacy\"");
  format_error(R"({"added_tokens_decoder": {"1000": {"content": "<|im_end|>"}}})", "gets 700");
  format_error(R"({"added_tokens_decoder": {"1": {"content": "<bos>"}}})", "has \"<s>\" there");
  format_error(R"({"added_tokens_decoder": {"x": {"content": "a"}}})", "expected token ids");
  format_error(R"({"bos_token": null})", "add_bos_token is true but bos_token is null");
  format_error(R"({"bos_token": 3})", "expected a string");
  const std::string msg = message_of(with(bytes, field(2, field(45, {'n', 'o'}))));
  EXPECT_NE(msg.find("unk_piece \"no\" is not one of the pieces"), std::string::npos) << msg;
}

TEST(SpmTokenizer, FillsTheSpecialTokensInTheConfig) {
  const auto bytes = model_bytes();
  const SpmConversion c = tokenizer_json_from_spm(
      std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
      R"({"chat_template": "x"})");
  const json config = json::parse(c.tokenizer_config_json);
  EXPECT_EQ(config.at("bos_token"), "<s>");
  EXPECT_EQ(config.at("eos_token"), "</s>");
  EXPECT_EQ(config.at("unk_token"), "<unk>");
  EXPECT_EQ(config.at("chat_template"), "x");
  const Tokenizer t = Tokenizer::from_tokenizer_json(c.tokenizer_json, c.tokenizer_config_json);
  EXPECT_EQ(t.encode("", true), std::vector<int32_t>{1});
  EXPECT_TRUE(t.is_special(3));   // <ctrl>: a CONTROL piece
  EXPECT_FALSE(t.is_special(4));  // <tool>: USER_DEFINED
}

}  // namespace
}  // namespace sf::tok
