// Unit tests of the issue-15 pieces without a server: CIDRs, the defender's scoring, bans,
// doubling and memory bound, the metrics' operation labels, the audit log's lines.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "config/operating_config.hpp"
#include "metrics/audit_log.hpp"
#include "metrics/metrics.hpp"
#include "net/defender.hpp"

namespace ops::core {
namespace {

using namespace std::chrono_literals;

Defender::Address addr(const char* text) {
  return *address_bytes(text);
}

TEST(Cidr, MatchesV4AndV6Ranges) {
  auto v4 = parse_cidr("10.1.0.0/16");
  ASSERT_TRUE(v4);
  EXPECT_TRUE(v4->contains(addr("10.1.2.3")));
  EXPECT_FALSE(v4->contains(addr("10.2.0.1")));
  auto one = parse_cidr("127.0.0.2");
  ASSERT_TRUE(one);
  EXPECT_TRUE(one->contains(addr("127.0.0.2")));
  EXPECT_FALSE(one->contains(addr("127.0.0.1")));
  auto v6 = parse_cidr("2001:db8::/32");
  ASSERT_TRUE(v6);
  EXPECT_TRUE(v6->contains(addr("2001:db8:1::5")));
  EXPECT_FALSE(v6->contains(addr("2001:db9::1")));
  EXPECT_FALSE(v6->contains(addr("10.1.2.3")));
  EXPECT_FALSE(parse_cidr("10.0.0.0/33"));
  EXPECT_FALSE(parse_cidr("10.0.0.0/"));
  EXPECT_FALSE(parse_cidr("nope"));
}

TEST(AdminListen, PortAloneMeansLoopback) {
  auto port_only = parse_admin_listen("9100");
  ASSERT_TRUE(port_only);
  EXPECT_EQ(port_only->host, "127.0.0.1");
  EXPECT_EQ(port_only->port, 9100);
  auto both = parse_admin_listen("[::1]:9101");
  ASSERT_TRUE(both);
  EXPECT_EQ(both->host, "::1");
  EXPECT_EQ(both->port, 9101);
  EXPECT_FALSE(parse_admin_listen("http"));
  EXPECT_FALSE(parse_admin_listen("70000"));
}

TEST(Cidr, PeerTextsGiveTheirAddress) {
  EXPECT_EQ(Defender::address_of_peer("127.0.0.2:4000"), addr("127.0.0.2"));
  EXPECT_EQ(Defender::address_of_peer("::1:4000"), addr("::1"));
  EXPECT_EQ(Defender::address_of_peer("[2001:db8::1]:4000"), addr("2001:db8::1"));
  EXPECT_FALSE(Defender::address_of_peer("?"));
}

DefenderSettings settings(unsigned threshold) {
  DefenderSettings s;
  s.enabled = true;
  s.threshold = threshold;
  s.observation = 10s;
  s.ban_time = 60s;
  s.max_ban_time = 200s;
  return s;
}

TEST(Defender, BansAfterThresholdWithinTheWindowOnly) {
  Defender d(settings(3), nullptr);
  const auto t0 = Defender::Clock::now();
  const auto a = addr("192.0.2.1");
  d.on_failure(a, t0);
  d.on_failure(a, t0 + 1s);
  EXPECT_FALSE(d.banned(a, t0 + 1s));
  // The window has passed: the count starts again.
  d.on_failure(a, t0 + 12s);
  EXPECT_FALSE(d.banned(a, t0 + 12s));
  d.on_failure(a, t0 + 13s);
  d.on_failure(a, t0 + 14s);
  EXPECT_TRUE(d.banned(a, t0 + 14s));
  EXPECT_FALSE(d.banned(addr("192.0.2.2"), t0 + 14s));
  EXPECT_EQ(d.banned_count(t0 + 14s), 1u);
  EXPECT_TRUE(d.banned(a, t0 + 14s + 59s));
  EXPECT_FALSE(d.banned(a, t0 + 14s + 61s));
}

TEST(Defender, RepeatBansDoubleUpToTheMaximum) {
  Defender d(settings(1), nullptr);
  auto t = Defender::Clock::now();
  const auto a = addr("192.0.2.1");
  const std::chrono::seconds expected[] = {60s, 120s, 200s, 200s};
  for (auto length : expected) {
    d.on_failure(a, t);
    EXPECT_TRUE(d.banned(a, t + length - 1s));
    EXPECT_FALSE(d.banned(a, t + length + 1s));
    t += length + 2s;
  }
}

TEST(Defender, AllowListAndDisabledNeverBan) {
  DefenderSettings s = settings(1);
  s.allow = {"192.0.2.0/24"};
  Defender d(s, nullptr);
  d.on_failure(addr("192.0.2.9"));
  EXPECT_FALSE(d.banned(addr("192.0.2.9")));
  d.on_failure(addr("198.51.100.1"));
  EXPECT_TRUE(d.banned(addr("198.51.100.1")));

  Defender off(DefenderSettings{}, nullptr);
  for (int i = 0; i < 100; ++i) off.on_failure(addr("198.51.100.1"));
  EXPECT_FALSE(off.banned(addr("198.51.100.1")));
}

TEST(Defender, RemembersAtMostMaxTrackedAddresses) {
  DefenderSettings s = settings(5);
  s.max_tracked = 100;
  Defender d(s, nullptr);
  for (int i = 0; i < 1000; ++i) {
    d.on_failure(addr(("10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256)).c_str()));
  }
  EXPECT_EQ(d.tracked(), 100u);
}

TEST(Defender, ReportsEachBanItStartsAndTakesBansFromElsewhere) {
  Defender d(settings(2), nullptr);
  std::vector<std::pair<std::chrono::seconds, unsigned>> reported;
  std::vector<Defender::Address> addresses;
  d.on_ban([&](const Defender::Address& a, std::chrono::seconds length, unsigned bans) {
    addresses.push_back(a);
    reported.emplace_back(length, bans);
  });
  auto t = Defender::Clock::now();
  d.on_failure(addr("192.0.2.1"), t);
  EXPECT_TRUE(reported.empty());
  d.on_failure(addr("192.0.2.1"), t);
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_EQ(addresses[0], addr("192.0.2.1"));
  EXPECT_EQ(reported[0], std::make_pair(60s, 1u));
  // Failures while banned start nothing.
  d.on_failure(addr("192.0.2.1"), t + 1s);
  EXPECT_EQ(reported.size(), 1u);

  // A ban from another node: applied, not reported back, never shortened, and its count
  // makes this node's next ban of the address longer.
  const auto b = addr("198.51.100.7");
  d.ban_from_elsewhere(b, 30'000ms, 1, t);
  EXPECT_TRUE(d.banned(b, t + 29s));
  EXPECT_FALSE(d.banned(b, t + 31s));
  d.ban_from_elsewhere(b, 5'000ms, 1, t);
  EXPECT_TRUE(d.banned(b, t + 29s));
  EXPECT_EQ(reported.size(), 1u);
  t += 40s;
  d.on_failure(b, t);
  d.on_failure(b, t);
  EXPECT_TRUE(d.banned(b, t + 119s));  // the second ban of b: doubled
  EXPECT_FALSE(d.banned(b, t + 121s));
  ASSERT_EQ(reported.size(), 2u);
  EXPECT_EQ(addresses[1], b);
  EXPECT_EQ(reported[1], std::make_pair(120s, 2u));

  // The allow list holds for bans from elsewhere too.
  DefenderSettings s = settings(1);
  s.allow = {"192.0.2.0/24"};
  Defender allowing(s, nullptr);
  allowing.ban_from_elsewhere(addr("192.0.2.9"), 30'000ms, 1, t);
  EXPECT_FALSE(allowing.banned(addr("192.0.2.9"), t + 1s));
}

TEST(Metrics, UnknownOperationsShareOneLabelAndSeriesAreCounted) {
  Metrics m;
  m.on_request("list", std::nullopt, 0, 10, 0.001);
  m.on_request("list", ErrorCode::not_found, 0, 0, 0.002);
  m.on_request(kUnknownOperation, ErrorCode::unknown_operation, 0, 0, 0.0001);
  m.on_handshake(HandshakeResult::auth_failed);
  m.on_reload(false);
  const std::string text = m.scrape();
  EXPECT_NE(text.find(R"(opserver_requests_total{code="ok",operation="list"} 1)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(opserver_requests_total{code="not_found",operation="list"} 1)"),
            std::string::npos);
  EXPECT_NE(text.find(R"({code="unknown_operation",operation="unknown"} 1)"), std::string::npos);
  EXPECT_NE(text.find(R"(opserver_payload_sent_bytes_total{operation="list"} 10)"),
            std::string::npos);
  EXPECT_NE(text.find(R"(opserver_request_duration_seconds_count{operation="list"} 2)"),
            std::string::npos);
  EXPECT_NE(text.find(R"(opserver_handshakes_total{result="auth_failed"} 1)"), std::string::npos);
  EXPECT_NE(text.find(R"(opserver_plugin_loads_total{kind="reload",result="failed"} 1)"),
            std::string::npos);
}

TEST(Metrics, TwoInstancesOnOneThreadKeepTheirOwnCounts) {
  Metrics a, b;
  a.on_request("list", std::nullopt, 0, 0, 0.001);
  b.on_request("list", std::nullopt, 0, 0, 0.001);
  a.on_request("list", std::nullopt, 0, 0, 0.001);
  EXPECT_NE(a.scrape().find(R"(opserver_requests_total{code="ok",operation="list"} 2)"),
            std::string::npos);
  EXPECT_NE(b.scrape().find(R"(opserver_requests_total{code="ok",operation="list"} 1)"),
            std::string::npos);
}

TEST(AuditLog, LinesAreEscapedJsonAndAFullQueueDrops) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("ops-audit-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = dir / "audit.log";
  {
    auto log = AuditLog::open(path, nullptr);
    ASSERT_TRUE(log);
    rapidjson::Document args;
    args.Parse(R"({"path":"a\"b\n\u0001c","key":"secret-key"})");
    const Error error{ErrorCode::not_found, "x"};
    RequestRecord record{"download", "download", 7, &error, 1, 2, &args};
    (*log)->request(3, "127.0.0.1:5", "alice", record, 1500us);
    (*log)->failed_login(4, "127.0.0.1:6", "bob\"");
  }
  std::ifstream in(path);
  std::string line;
  std::vector<rapidjson::Document> lines;
  while (std::getline(in, line)) {
    rapidjson::Document d;
    d.Parse(line.c_str());
    ASSERT_FALSE(d.HasParseError()) << line;
    lines.push_back(std::move(d));
  }
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_STREQ(lines[0]["path"].GetString(),
               "a\"b\n\x01"
               "c");
  EXPECT_STREQ(lines[0]["code"].GetString(), "not_found");
  EXPECT_EQ(lines[0]["id"].GetUint64(), 7u);
  EXPECT_DOUBLE_EQ(lines[0]["duration_ms"].GetDouble(), 1.5);
  EXPECT_FALSE(lines[0].HasMember("key"));
  EXPECT_STREQ(lines[1]["user"].GetString(), "bob\"");
  EXPECT_STREQ(lines[1]["event"].GetString(), "login_failed");

  // A queue of one, filled faster than any disk: some lines are dropped, none block.
  {
    auto log = AuditLog::open(path, nullptr, 1);
    ASSERT_TRUE(log);
    for (int i = 0; i < 10000; ++i) (*log)->failed_login(1, "p", "u");
    EXPECT_GT((*log)->dropped(), 0u);
  }
  std::filesystem::remove_all(dir);
}

TEST(AuditLog, TimesAreRfc3339UtcWithMilliseconds) {
  const auto t = std::chrono::system_clock::time_point(std::chrono::milliseconds(1764751157123));
  EXPECT_EQ(rfc3339_utc_ms(t), "2025-12-03T08:39:17.123Z");
}

}  // namespace
}  // namespace ops::core
