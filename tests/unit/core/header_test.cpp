// §1 and §7 header rules, each at its boundary: N accepted, N+1 refused.
#include "proto/header.hpp"

#include <gtest/gtest.h>

#include <string>

namespace ops::core {
namespace {

std::string nested(int depth) {
  std::string s = "{\"x\":";
  for (int i = 1; i < depth; ++i) s += "[";
  s += "0";
  for (int i = 1; i < depth; ++i) s += "]";
  return s + "}";
}

TEST(Header, AcceptsAPlainObject) {
  auto h = parse_header(R"({"id":1,"operate":"describe","payload":5})");
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->payload, 5u);
}

TEST(Header, DepthThirtyTwoIsTheLimit) {
  EXPECT_TRUE(parse_header(nested(32)));
  auto h = parse_header(nested(33));
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, ErrorCode::bad_frame);
  // Far deeper input fails the same way, without recursion trouble.
  std::string deep = "{\"x\":" + std::string(100000, '[');
  EXPECT_FALSE(parse_header(deep));
}

struct BadCase {
  const char* name;
  std::string text;
};

TEST(Header, RefusesEverythingSection7Names) {
  const BadCase cases[] = {
      {"array", "[]"},
      {"string", "\"x\""},
      {"number", "1"},
      {"duplicate", R"({"a":1,"a":2})"},
      {"nested duplicate", R"({"a":{"b":1,"b":1}})"},
      {"duplicate in array element", R"({"a":[{"b":1,"b":1}]})"},
      {"bom", "\xEF\xBB\xBF{}"},
      {"trailing space", "{} "},
      {"trailing newline", "{}\n"},
      {"trailing object", "{}{}"},
      {"invalid utf8", "{\"a\":\"\xFF\"}"},
      {"overlong", "{\"a\":\"\xC0\xAF\"}"},
      {"raw surrogate", "{\"a\":\"\xED\xB0\x80\"}"},
      {"lone high surrogate", R"({"a":"\ud800"})"},
      {"lone low surrogate", R"({"a":"\udc00"})"},
      {"lone surrogate in key", R"({"\udc00":1})"},
      {"payload fraction", R"({"payload":1.5})"},
      {"payload 1.0", R"({"payload":1.0})"},
      {"payload exponent", R"({"payload":1e3})"},
      {"payload negative", R"({"payload":-3})"},
      {"payload minus zero", R"({"payload":-0})"},
      {"payload string", R"({"payload":"3"})"},
      {"payload bool", R"({"payload":true})"},
      {"payload 2^53", R"({"payload":9007199254740992})"},
      {"payload huge", R"({"payload":123456789012345678901234567890})"},
      {"comment", "{/*c*/}"},
      {"trailing comma", R"({"a":1,})"},
      {"raw control char", "{\"a\":\"\x01\"}"},
      {"nul inside", std::string("{\"a\":\"\0\"}", 9)},
  };
  for (const BadCase& c : cases) {
    auto h = parse_header(c.text);
    EXPECT_FALSE(h) << c.name;
    if (!h) {
      EXPECT_EQ(h.error().code, ErrorCode::bad_frame) << c.name;
    }
  }
}

TEST(Header, PayloadBoundaries) {
  auto max = parse_header(R"({"payload":9007199254740991})");
  ASSERT_TRUE(max);
  EXPECT_EQ(max->payload, 9007199254740991u);
  auto zero = parse_header(R"({"payload":0})");
  ASSERT_TRUE(zero);
  EXPECT_EQ(zero->payload, 0u);
  EXPECT_TRUE(parse_header(R"({"ok":"\ud83d\ude00"})")) << "a valid surrogate pair is fine";
  EXPECT_TRUE(parse_header(" {}")) << "leading whitespace is part of JSON text";
}

TEST(Request, IdAndOperateRules) {
  auto interpret = [](const std::string& text) {
    auto h = parse_header(text);
    EXPECT_TRUE(h) << text;
    static Header keep;  // the Request points into the header
    keep = std::move(*h);
    return interpret_request(keep);
  };
  auto ok = interpret(R"({"id":9007199254740991,"operate":"x","args":null})");
  ASSERT_TRUE(std::holds_alternative<Request>(ok));
  EXPECT_EQ(std::get<Request>(ok).id, 9007199254740991u);
  EXPECT_EQ(std::get<Request>(ok).args, nullptr);

  for (const char* bad : {R"({"operate":"x"})", R"({"id":-1,"operate":"x"})",
                          R"({"id":1.0,"operate":"x"})", R"({"id":9007199254740992,"operate":"x"})",
                          R"({"id":"1","operate":"x"})", R"({"id":null,"operate":"x"})"}) {
    auto r = interpret(bad);
    ASSERT_TRUE(std::holds_alternative<RequestError>(r)) << bad;
    EXPECT_FALSE(std::get<RequestError>(r).id.has_value()) << bad;
    EXPECT_EQ(std::get<RequestError>(r).error.code, ErrorCode::bad_request);
  }
  auto no_op = interpret(R"({"id":3})");
  ASSERT_TRUE(std::holds_alternative<RequestError>(no_op));
  EXPECT_EQ(std::get<RequestError>(no_op).id, 3u);
  auto auth = interpret(R"({"id":4,"type":"auth","operate":"x"})");
  ASSERT_TRUE(std::holds_alternative<RequestError>(auth));
  EXPECT_EQ(std::get<RequestError>(auth).error.code, ErrorCode::bad_request);
}

}  // namespace
}  // namespace ops::core
