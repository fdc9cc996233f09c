// Behaviour the reference renderings cannot pin down: the local date, the refusal of what is
// outside the subset (with its position), the bounds on hostile templates, and the inputs.
#include <gtest/gtest.h>

#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "chat/chat_template.hpp"
#include "core/error.hpp"

namespace {

using sf::chat::ChatContext;
using sf::chat::ChatMessage;
using sf::chat::ChatTemplate;

std::string render(std::string_view src, std::vector<ChatMessage> msgs = {{"user", "hi"}},
                   const ChatContext& ctx = {}) {
  return ChatTemplate::parse(src).render(msgs, true, ctx);
}

sf::Error error_of(std::string_view src, std::vector<ChatMessage> msgs = {{"user", "hi"}},
                   const ChatContext& ctx = {}) {
  try {
    render(src, std::move(msgs), ctx);
  } catch (const sf::Error& e) {
    return e;
  }
  ADD_FAILURE() << "no error for " << src;
  return sf::Error(sf::Status::Ok, "");
}

std::string today(const char* fmt) {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[128];
  return std::string(buf, std::strftime(buf, sizeof buf, fmt, &tm));
}

TEST(ChatTemplate, StrftimeNowUsesTheLocalDate) {
  EXPECT_EQ(render("{{ strftime_now('%Y-%m-%d') }}"), today("%Y-%m-%d"));
  std::ifstream f(SF_TEST_DATA_DIR "/chat/templates/llama3.2-instruct.jinja");
  std::stringstream ss;
  ss << f.rdbuf();
  ChatContext ctx;
  ctx.bos_token = "<|begin_of_text|>";
  const std::string out = render(ss.str(), {{"user", "hi"}}, ctx);
  EXPECT_NE(out.find("Today Date: " + today("%d %b %Y") + "\n"), std::string::npos) << out;
}

TEST(ChatTemplate, RaiseExceptionKeepsTheTemplatesMessage) {
  const auto e = error_of(
      "{% if messages[0].role != 'system' %}{{ raise_exception('Need a system "
      "prompt, got ' ~ messages[0].role) }}{% endif %}");
  EXPECT_EQ(e.status(), sf::Status::InvalidArgument);
  EXPECT_STREQ(e.what(), "Need a system prompt, got user");
}

TEST(ChatTemplate, UnsupportedConstructsNameThemselvesAndTheirPosition) {
  auto e = error_of("ok\n  {% extends 'base' %}");
  EXPECT_EQ(e.status(), sf::Status::UnsupportedShape);
  EXPECT_NE(std::string(e.what()).find("line 2, column 6"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("'extends'"), std::string::npos) << e.what();
  // Reachable only at render time: refused when reached, not before.
  const auto tpl = ChatTemplate::parse(
      "{% for m in messages %}{% if m.role == 'tool' %}{{ m | groupby('x') }}{% endif %}"
      "{{ m.content }}{% endfor %}");
  std::vector<ChatMessage> plain = {{"user", "a"}};
  EXPECT_EQ(tpl.render(plain, false, {}), "a");
  std::vector<ChatMessage> tool = {{"tool", "a"}};
  try {
    tpl.render(tool, false, {});
    ADD_FAILURE() << "groupby was not refused";
  } catch (const sf::Error& err) {
    EXPECT_EQ(err.status(), sf::Status::UnsupportedShape);
    EXPECT_NE(std::string(err.what()).find("'groupby' filter"), std::string::npos) << err.what();
    EXPECT_NE(std::string(err.what()).find("line 1, column"), std::string::npos) << err.what();
  }
}

TEST(ChatTemplate, SyntaxErrorsAreFormatErrors) {
  for (const char* src : {"{% if x %}", "{{ 1 + }}", "{% endfor %}", "{{ x | nosuchfilter }}",
                          "{# never closed", "{{ 'a' "}) {
    SCOPED_TRACE(src);
    try {
      ChatTemplate::parse(src);
      ADD_FAILURE() << "parsed";
    } catch (const sf::Error& e) {
      EXPECT_EQ(e.status(), sf::Status::Format) << e.what();
      EXPECT_NE(std::string(e.what()).find("chat template line "), std::string::npos) << e.what();
    }
  }
}

TEST(ChatTemplate, HostileTemplatesStopInsteadOfHanging) {
  // Unbounded work, output, recursion and nesting all end in an error.
  ChatContext small;
  small.max_steps = 1'000'000;
  const auto e =
      error_of("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
               {{"user", "hi"}}, small);
  EXPECT_EQ(e.status(), sf::Status::UnsupportedShape);
  EXPECT_NE(std::string(e.what()).find("1000000 steps"), std::string::npos) << e.what();
  EXPECT_EQ(
      error_of("{% set s = 'x' * 1000000 %}{% for i in range(100) %}{{ s * 1000 }}{% endfor %}")
          .status(),
      sf::Status::UnsupportedShape);
  EXPECT_EQ(error_of("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").status(),
            sf::Status::UnsupportedShape);
  const std::string deep(5000, '(');
  try {
    ChatTemplate::parse("{{ " + deep + " }}");
    ADD_FAILURE() << "deep nesting parsed";
  } catch (const sf::Error& e) {
    EXPECT_EQ(e.status(), sf::Status::UnsupportedShape) << e.what();
  }
}

TEST(ChatTemplate, ContextFeedsTheTemplateVariables) {
  ChatContext ctx;
  ctx.bos_token = "<s>";
  ctx.special_tokens = {{"unk_token", "<unk>"}};
  ctx.tools_json = R"([{"type": "function", "function": {"name": "f", "z": 1, "a": 2}}])";
  ctx.extra_json = R"({"date_string": "1 Jan 2000", "flag": true})";
  EXPECT_EQ(
      render("{{ bos_token }}|{{ eos_token is defined }}|{{ unk_token }}|{{ tools | tojson }}|"
             "{{ date_string }}|{{ flag }}|{{ documents }}|{{ add_generation_prompt }}",
             {{"user", "hi"}}, ctx),
      R"(<s>|False|<unk>|[{"type": "function", "function": {"name": "f", "z": 1, "a": 2}}]|)"
      "1 Jan 2000|True|None|True");
  ChatContext bad;
  bad.extra_json = R"({"messages": []})";
  EXPECT_EQ(error_of("x", {{"user", "hi"}}, bad).status(), sf::Status::InvalidArgument);
  bad.extra_json = "{not json";
  EXPECT_EQ(error_of("x", {{"user", "hi"}}, bad).status(), sf::Status::InvalidArgument);
}

TEST(ChatTemplate, RejectsInvalidUtf8) {
  try {
    ChatTemplate::parse("\xff{{ 1 }}");
    ADD_FAILURE() << "parsed";
  } catch (const sf::Error& e) {
    EXPECT_EQ(e.status(), sf::Status::Format);
  }
  EXPECT_EQ(error_of("{{ messages[0].content }}", {{"user", "bad \xc3"}}).status(),
            sf::Status::InvalidArgument);
}

TEST(ChatTemplate, ParsedTemplateRendersRepeatedly) {
  const auto tpl = ChatTemplate::parse(
      "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}"
      "{{ ns.n }}");
  std::vector<ChatMessage> two = {{"user", "a"}, {"assistant", "b"}};
  EXPECT_EQ(tpl.render(two, false, {}), "2");
  EXPECT_EQ(tpl.render(two, false, {}), "2");  // the namespace is made afresh per render
}

}  // namespace
