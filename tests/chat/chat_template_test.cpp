// Renders every case of tests/data/chat/cases.json (made by tests/data/chat/make_cases.py with
// transformers' own rendering) and compares byte for byte, or compares the error.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "chat/chat_template.hpp"
#include "core/error.hpp"

namespace {

using nlohmann::ordered_json;

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Case {
  std::string name;
  ordered_json data;
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

std::vector<Case> load_cases() {
  const auto j = ordered_json::parse(read_file(SF_TEST_DATA_DIR "/chat/cases.json"));
  std::vector<Case> out;
  for (const auto& c : j["cases"]) out.push_back({c["name"].get<std::string>(), c});
  return out;
}

const char* status_enum(sf::Status s) {
  switch (s) {
    case sf::Status::InvalidArgument:
      return "InvalidArgument";
    case sf::Status::UnsupportedShape:
      return "UnsupportedShape";
    case sf::Status::Format:
      return "Format";
    default:
      return "other";
  }
}

class ChatCases : public ::testing::TestWithParam<Case> {};

TEST_P(ChatCases, MatchesTransformers) {
  const ordered_json& c = GetParam().data;
  const std::string source =
      c.contains("template")
          ? read_file(SF_TEST_DATA_DIR "/chat/templates/" + c["template"].get<std::string>())
          : c["source"].get<std::string>();
  std::vector<sf::chat::ChatMessage> messages;
  for (const auto& m : c["messages"]) messages.push_back({m["role"], m["content"]});
  sf::chat::ChatContext ctx;
  ctx.bos_token = c["bos_token"];
  ctx.eos_token = c["eos_token"];
  if (c.contains("tools")) ctx.tools_json = c["tools"].dump();
  if (c.contains("extra")) ctx.extra_json = c["extra"].dump();
  const bool agp = c["add_generation_prompt"];
  if (c.contains("expected")) {
    const auto tpl = sf::chat::ChatTemplate::parse(source);
    EXPECT_EQ(tpl.render(messages, agp, ctx), c["expected"].get<std::string>());
    return;
  }
  const auto& err = c["error"];
  try {
    const auto tpl = sf::chat::ChatTemplate::parse(source);
    const std::string out = tpl.render(messages, agp, ctx);
    ADD_FAILURE() << "rendered without error: " << out;
  } catch (const sf::Error& e) {
    EXPECT_STREQ(status_enum(e.status()), err["status"].get<std::string>().c_str()) << e.what();
    if (err.contains("message")) {
      EXPECT_EQ(std::string(e.what()), err["message"].get<std::string>());
    }
    if (err.contains("contains") && err["contains"].is_string()) {
      EXPECT_NE(std::string(e.what()).find(err["contains"].get<std::string>()), std::string::npos)
          << e.what();
    }
    if (err["status"] != "InvalidArgument" || !err.contains("message")) {
      // Every error but the template's own raise_exception() message says where it happened.
      EXPECT_NE(std::string(e.what()).find("chat template line "), std::string::npos) << e.what();
    }
  }
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string s;
  for (char ch : info.param.name) s += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  return s + "_" + std::to_string(info.index);
}

INSTANTIATE_TEST_SUITE_P(Reference, ChatCases, ::testing::ValuesIn(load_cases()), case_name);

}  // namespace
