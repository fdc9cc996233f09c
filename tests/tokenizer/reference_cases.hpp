// Checks a Tokenizer against the Hugging Face references that
// tests/data/tokenizer/make_llama_cases.py records (llama_cases.json, gguf_cases.json,
// smollm2_cases.json): one object per tokenizer with
//   special_prefix / special_suffix  what add_special_tokens puts around every text
//   cases        per shared text (the file's "texts"): ids, and where they differ from the
//                defaults, ids_special (default prefix + ids + suffix) and decoded (default: the
//                text)
//   added_cases  the same with their own "text": texts writing the tokenizer's added tokens
//   invalid_utf8 hex bytes and the ids of their U+FFFD repair
//   decode_only  id sequences and HF's decode of them
#pragma once
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.hpp"
#include "tokenizer/unicode.hpp"
#include "tokenizer/utf8_stream.hpp"

namespace sf::tok::testing {

inline const std::string kTokenizerData = std::string(SF_TEST_DATA_DIR) + "/tokenizer/";

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f) << "cannot open " << path;
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return out;
}

// The text a stream of token_bytes shows.
inline std::string streamed(const Tokenizer& t, const std::vector<int32_t>& ids) {
  Utf8Stream stream;
  std::string out;
  for (int32_t id : ids) out += stream.push(t.token_bytes(id));
  return out + stream.finish();
}

enum class Streaming {
  Exact,           // byte-level: the stream is decode()
  StripsOneSpace,  // Llama 2's decoder: decode() is the stream less its first space
  NotCompared,
};

struct Counts {
  size_t encoded = 0, decoded = 0;
};

inline Counts check_references(const Tokenizer& t, const nlohmann::json& ref,
                               const nlohmann::json& texts, const std::string& label,
                               Streaming streaming) {
  Counts n;
  const std::vector<int32_t> prefix = ref.at("special_prefix"), suffix = ref.at("special_suffix");
  EXPECT_EQ(std::vector<int32_t>(t.special_prefix().begin(), t.special_prefix().end()), prefix)
      << label;
  EXPECT_EQ(std::vector<int32_t>(t.special_suffix().begin(), t.special_suffix().end()), suffix)
      << label;
  const auto check = [&](const nlohmann::json& rec, const std::string& name,
                         const std::string& text) {
    const std::vector<int32_t> ids = rec.at("ids");
    std::vector<int32_t> with_special = prefix;
    with_special.insert(with_special.end(), ids.begin(), ids.end());
    with_special.insert(with_special.end(), suffix.begin(), suffix.end());
    if (rec.contains("ids_special")) with_special = rec["ids_special"].get<std::vector<int32_t>>();
    const std::string decoded = rec.value("decoded", text);
    EXPECT_EQ(t.encode(text, false), ids) << label << ": case '" << name << "'";
    EXPECT_EQ(t.encode(text, true), with_special) << label << ": case '" << name << "'";
    EXPECT_EQ(t.decode(ids), decoded) << label << ": case '" << name << "'";
    ++n.encoded;
    if (streaming == Streaming::Exact) {
      EXPECT_EQ(streamed(t, ids), decoded) << label << ": streaming case '" << name << "'";
    } else if (streaming == Streaming::StripsOneSpace &&
               decoded.find("\xEF\xBF\xBD") == std::string::npos) {
      std::string s = streamed(t, ids);
      if (s.starts_with(' ')) s.erase(0, 1);
      EXPECT_EQ(s, decoded) << label << ": streaming case '" << name << "'";
    }
  };
  const auto& cases = ref.at("cases");
  EXPECT_EQ(cases.size(), texts.size()) << label;
  for (size_t i = 0; i < cases.size() && i < texts.size(); ++i) {
    check(cases[i], texts[i].at("name"), texts[i].at("text"));
  }
  for (const auto& c : ref.at("added_cases")) check(c, c.at("name"), c.at("text"));
  for (const auto& c : ref.at("invalid_utf8")) {
    const std::string raw = from_hex(c.at("hex"));
    EXPECT_FALSE(is_valid_utf8(raw));
    EXPECT_EQ(t.encode(raw), c.at("ids").get<std::vector<int32_t>>()) << label << ": " << raw;
    ++n.encoded;
  }
  for (const auto& c : ref.at("decode_only")) {
    const std::vector<int32_t> ids = c.at("ids");
    EXPECT_EQ(t.decode(ids), c.at("decoded").get<std::string>())
        << label << ": decode of " << c.at("ids").dump();
    ++n.decoded;
  }
  return n;
}

}  // namespace sf::tok::testing
