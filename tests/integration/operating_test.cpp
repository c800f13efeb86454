// Issue 15, running in production, against the real server: the admin listener (/metrics,
// /healthz, /readyz), the defender's bans per source address, and the audit log.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <rapidjson/document.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "connect_util.hpp"
#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "opserver/frame.hpp"
#include "opserver/proof.hpp"

namespace ops::test {
namespace {

using namespace std::chrono_literals;

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The admin listener's port, from "admin listening on HOST:PORT"; 0 if none is logged.
std::uint16_t admin_port(const ServerProcess& server) {
  static const std::regex kLine(R"(admin listening on [^ ]+:(\d+) )");
  std::smatch m;
  const std::string log = server.log();
  if (!std::regex_search(log, m, kLine)) return 0;
  return static_cast<std::uint16_t>(std::stoi(m[1]));
}

// Reads up to `n` bytes (fewer on close or after `timeout`).
std::string read_some(int fd, std::size_t n, std::chrono::milliseconds timeout) {
  std::string out;
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  while (out.size() < n) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        give_up - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[65536];
    const ssize_t got = ::recv(fd, buf, std::min(sizeof buf, n - out.size()), 0);
    if (got <= 0) break;
    out.append(buf, static_cast<std::size_t>(got));
  }
  return out;
}

// One frame's header text, or nullopt on close or timeout.
std::optional<std::string> read_frame_from(int fd) {
  std::string len = read_some(fd, 4, 5s);
  if (len.size() < 4) return std::nullopt;
  const std::uint32_t n = frame::decode_length(reinterpret_cast<const std::uint8_t*>(len.data()));
  std::string body = read_some(fd, n, 5s);
  if (body.size() < n) return std::nullopt;
  return body;
}

// A PROXY protocol v2 header saying the client is 192.0.2.<last>:51234.
std::string proxy_v2_header(std::uint8_t last) {
  const unsigned char h[] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
                             0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C, 192,  0,    2,    last,
                             127,  0,    0,    1,    0xC8, 0x22, 0x23, 0x28};
  return std::string(reinterpret_cast<const char*>(h), sizeof h);
}

// From `source` (after `preamble`, e.g. a PROXY header): reads the challenge and sends a
// login with a wrong proof. True if the server answered auth_failed; false if it closed
// without a challenge.
bool failed_login_from(const char* source, std::uint16_t port, const std::string& user,
                       const std::string& preamble = {}) {
  int fd = connect_from(source, port);
  if (fd < 0) return false;
  if (!preamble.empty()) ::send(fd, preamble.data(), preamble.size(), MSG_NOSIGNAL);
  auto challenge = read_frame_from(fd);
  if (!challenge) {
    ::close(fd);
    return false;
  }
  const std::string auth = R"({"type":"auth","mechanism":"hmac-sha256","user":")" + user +
                           R"(","cnonce":")" + std::string(64, 'a') + R"(","proof":")" +
                           std::string(64, 'b') + "\"}";
  const std::string bytes = frame::encode(auth);
  ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  auto answer = read_frame_from(fd);
  ::close(fd);
  return answer && answer->find("auth_failed") != std::string::npos;
}

struct HttpReply {
  int status = 0;
  std::string body;
};

// One HTTP/1.1 request on a fresh connection (Connection: close), read to the end.
HttpReply http(std::uint16_t port, const std::string& method, const std::string& path) {
  int fd = connect_from("127.0.0.1", port);
  if (fd < 0) return {};
  const std::string request =
      method + " " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  const std::string text = read_some(fd, 1 << 24, 5s);
  ::close(fd);
  HttpReply reply;
  if (text.rfind("HTTP/1.1 ", 0) != 0) return reply;
  reply.status = std::stoi(text.substr(9, 3));
  if (auto end = text.find("\r\n\r\n"); end != std::string::npos) reply.body = text.substr(end + 4);
  return reply;
}

// The Prometheus text format, read the simple way a test may: "name{labels} value" lines,
// keyed by the name and its labels sorted, e.g. opserver_requests_total{code="ok",operation="x"}.
std::map<std::string, double> parse_exposition(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream lines(text);
  std::string line;
  static const std::regex kLabel(R"re(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)")re");
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const std::size_t space = line.rfind(' ');
    std::string series = line.substr(0, space);
    const double value = std::stod(line.substr(space + 1));
    const std::size_t brace = series.find('{');
    if (brace != std::string::npos) {
      std::map<std::string, std::string> labels;
      const std::string inside = series.substr(brace + 1, series.size() - brace - 2);
      for (std::sregex_iterator it(inside.begin(), inside.end(), kLabel), end; it != end; ++it) {
        labels[(*it)[1]] = (*it)[2];
      }
      series = series.substr(0, brace) + "{";
      bool first = true;
      for (const auto& [k, v] : labels) {
        series += (first ? "" : ",") + k + "=\"" + v + "\"";
        first = false;
      }
      series += "}";
    }
    out[series] = value;
  }
  return out;
}

double value_of(const std::map<std::string, double>& m, const std::string& series) {
  auto it = m.find(series);
  return it == m.end() ? -1 : it->second;
}

// The standard operations, a file operation and upload_open (a resumable upload).
std::string operating_ops_json() {
  return R"({"plugin_dir": ")" + std::string(OPS_PLUGIN_DIR) + R"(", "operations": {
    "upload": {"allow": ["*"]}, "download": {"allow": ["*"]}, "list": {"allow": ["*"]},
    "register": {"allow": ["admin"]}, "move": {"allow": ["*"]},
    "upload_open": {"allow": ["*"]}}})";
}

// Scrapes until every one of `settled` has its value (gauges that follow the end of a
// request a moment later: a handler thread going idle, a closed session going away), up to
// 2 s; returns the last scrape.
std::map<std::string, double> scrape_settled(
    std::uint16_t port, const std::vector<std::pair<std::string, double>>& settled) {
  std::map<std::string, double> m;
  for (int i = 0; i < 100; ++i) {
    m = parse_exposition(http(port, "GET", "/metrics").body);
    bool all = true;
    for (const auto& [series, value] : settled) all = all && value_of(m, series) == value;
    if (all) break;
    std::this_thread::sleep_for(20ms);
  }
  return m;
}

ServerOptions with_admin(std::string extra = {}) {
  ServerOptions options;
  options.ops_json = operating_ops_json();
  options.settings = R"("admin_listen": "127.0.0.1:0", "worker_threads": 2)" + extra;
  return options;
}

TEST(Operating, AdminListenerIsOffByDefault) {
  ServerProcess server;
  EXPECT_EQ(admin_port(server), 0) << server.log();
  EXPECT_EQ(server.log().find("admin listening"), std::string::npos);
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
}

// The server refuses to start, naming the problem, for each bad setting.
TEST(Operating, BadOperatingSettingsAreRefusedAtStart) {
  ServerProcess running;
  const std::pair<std::string, std::string> cases[] = {
      {R"("defender": {"threshhold": 3})", R"(unknown setting "threshhold")"},
      {R"("defender": {"allow": ["10.0.0.0/33"]})", R"(each "allow" entry must be)"},
      {R"("defender": {"ban_time_s": 100, "max_ban_time_s": 50})", "at least ban_time_s"},
      {R"("defender": {"enabled": "yes"})", R"("enabled" must be true or false)"},
      {R"("admin_listen": "http")", "expected HOST:PORT or PORT"},
      {R"("admin_listen": "127.0.0.1:)" + std::to_string(running.port()) + R"(")",
       "cannot listen on admin_listen"},
      {R"("audit_log": "/nonexistent-dir/audit.log")", "cannot open the audit log"},
  };
  for (const auto& [settings, expected] : cases) {
    ServerOptions options;
    options.settings = settings;
    try {
      ServerProcess server(options);
      ADD_FAILURE() << "started with " << settings;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << settings << "\n"
                                                                         << e.what();
    }
  }
}

TEST(Operating, MetricsCountRequestsByOperationAndCode) {
  ServerProcess server(with_admin());
  const std::uint16_t port = admin_port(server);
  ASSERT_NE(port, 0) << server.log();
  EXPECT_TRUE(failed_login_from("127.0.0.1", server.port(), "admin"));
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  for (int i = 0; i < 3; ++i) EXPECT_OP_OK(call_op(*c, "describe", "{}"));
  EXPECT_OP_OK(upload(*c, "m.txt", std::string(100, 'x')));
  EXPECT_OP_OK(download(*c, "m.txt"));
  EXPECT_OP_ERR(download(*c, "missing.txt"), "not_found");
  // A made-up operation name must not become a label value.
  EXPECT_OP_ERR(call_op(*c, "made_up_op_xyz", "{}"), "unknown_operation");

  const HttpReply reply = http(port, "GET", "/metrics");
  ASSERT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body.find("made_up_op_xyz"), std::string::npos);
  const auto m = scrape_settled(
      port, {{"opserver_handler_threads_busy", 0}, {"opserver_connections_open", 1}});
  EXPECT_EQ(value_of(m, R"(opserver_requests_total{code="ok",operation="describe"})"), 3);
  EXPECT_EQ(value_of(m, R"(opserver_requests_total{code="ok",operation="upload"})"), 1);
  EXPECT_EQ(value_of(m, R"(opserver_requests_total{code="ok",operation="download"})"), 1);
  EXPECT_EQ(value_of(m, R"(opserver_requests_total{code="not_found",operation="download"})"), 1);
  EXPECT_EQ(value_of(m, R"(opserver_requests_total{code="unknown_operation",operation="unknown"})"),
            1);
  EXPECT_EQ(value_of(m, R"(opserver_request_duration_seconds_count{operation="describe"})"), 3);
  EXPECT_EQ(value_of(m, R"(opserver_request_duration_seconds_count{operation="download"})"), 2);
  EXPECT_EQ(
      value_of(m, R"(opserver_request_duration_seconds_bucket{le="+Inf",operation="describe"})"),
      3);
  EXPECT_EQ(value_of(m, R"(opserver_payload_received_bytes_total{operation="upload"})"), 100);
  EXPECT_EQ(value_of(m, R"(opserver_payload_sent_bytes_total{operation="download"})"), 100);
  EXPECT_EQ(value_of(m, R"(opserver_handshakes_total{result="ok"})"), 1);
  EXPECT_EQ(value_of(m, R"(opserver_handshakes_total{result="auth_failed"})"), 1);
  EXPECT_EQ(value_of(m, R"(opserver_plugin_loads_total{kind="start",result="ok"})"), 1);
  EXPECT_EQ(value_of(m, "opserver_connections_open"), 1);
  EXPECT_EQ(value_of(m, "opserver_connections_unauthenticated"), 0);
  EXPECT_GE(value_of(m, "opserver_handler_threads"), 2);
  EXPECT_EQ(value_of(m, "opserver_handler_threads_busy"), 0);
  EXPECT_EQ(value_of(m, "opserver_handler_queue_length"), 0);
  EXPECT_EQ(value_of(m, "opserver_resumable_uploads_open"), 0);
  EXPECT_EQ(value_of(m, "opserver_defender_bans_total"), 0);

  // An open resumable upload shows in its gauge.
  auto opened = call_op(*c, "upload_open", R"({"path":"r.bin","size":10})");
  EXPECT_OP_OK(opened);
  const auto after = parse_exposition(http(port, "GET", "/metrics").body);
  EXPECT_EQ(value_of(after, "opserver_resumable_uploads_open"), 1);
  EXPECT_EQ(value_of(after, R"(opserver_requests_total{code="ok",operation="upload_open"})"), 1);
}

TEST(Operating, HealthReadinessAndOtherPaths) {
  ServerOptions options = with_admin(R"(, "shutdown_grace_ms": 4000)");
  ServerProcess server(options);
  const std::uint16_t port = admin_port(server);
  ASSERT_NE(port, 0) << server.log();
  EXPECT_EQ(http(port, "GET", "/healthz").status, 200);
  EXPECT_EQ(http(port, "GET", "/readyz").status, 200);
  EXPECT_EQ(http(port, "GET", "/readyz").body, "ready\n");
  EXPECT_EQ(http(port, "GET", "/nothing-here").status, 404);
  EXPECT_EQ(http(port, "POST", "/metrics").status, 405);
  EXPECT_EQ(http(port, "HEAD", "/metrics").status, 200);

  // A request in flight keeps the server stopping for its grace period: not ready then,
  // while still alive.
  RawConnection raw(server.port());
  ASSERT_TRUE(raw.authenticate("admin", server.admin_key()));
  ASSERT_TRUE(raw.send(frame_of(request_json(1, "upload", R"({"path":"slow.bin"})", 1000)) +
                       std::string(10, 'x')));
  std::this_thread::sleep_for(200ms);
  ::kill(server.pid(), SIGTERM);
  int status = 0;
  for (int i = 0; i < 100 && status != 503; ++i) {
    status = http(port, "GET", "/readyz").status;
    if (status != 503) std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(status, 503);
  EXPECT_EQ(http(port, "GET", "/healthz").status, 200);
  server.stop();
}

TEST(Operating, DefenderBansAnAddressAfterFailedLoginsAndOthersGoOn) {
  ServerProcess server(with_admin(
      R"(, "defender": {"enabled": true, "threshold": 3, "observation_s": 60, "ban_time_s": 60})"));
  const std::uint16_t port = admin_port(server);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(failed_login_from("127.0.0.2", server.port(), "admin")) << "attempt " << i;
  }
  // Banned: closed at accept, no challenge.
  EXPECT_FALSE(failed_login_from("127.0.0.2", server.port(), "admin"));
  int fd = connect_from("127.0.0.2", server.port());
  ASSERT_GE(fd, 0);
  EXPECT_FALSE(read_frame_from(fd).has_value());
  ::close(fd);
  // Another address is not affected.
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  EXPECT_OP_OK(call_op(*c, "describe", "{}"));

  const auto m = parse_exposition(http(port, "GET", "/metrics").body);
  EXPECT_EQ(value_of(m, "opserver_defender_bans_total"), 1);
  EXPECT_EQ(value_of(m, "opserver_defender_banned_addresses"), 1);
  EXPECT_EQ(value_of(m, R"(opserver_connections_refused_total{reason="banned"})"), 2);
  EXPECT_NE(server.log().find("defender: 127.0.0.2 banned"), std::string::npos) << server.log();
}

TEST(Operating, DefenderBansTheAddressAPROXYHeaderNames) {
  ServerProcess server(
      with_admin(R"(, "proxy_protocol": true, "defender": {"enabled": true, "threshold": 2})"));
  // Every connection comes from the balancer (127.0.0.1); the header names the client.
  EXPECT_TRUE(failed_login_from("127.0.0.1", server.port(), "admin", proxy_v2_header(7)));
  EXPECT_TRUE(failed_login_from("127.0.0.1", server.port(), "admin", proxy_v2_header(7)));
  // 192.0.2.7 is banned: closed after its header, before the challenge.
  EXPECT_FALSE(failed_login_from("127.0.0.1", server.port(), "admin", proxy_v2_header(7)));
  // Another client behind the same balancer still gets in as far as the challenge.
  EXPECT_TRUE(failed_login_from("127.0.0.1", server.port(), "admin", proxy_v2_header(8)));
  const auto m = parse_exposition(http(admin_port(server), "GET", "/metrics").body);
  EXPECT_EQ(value_of(m, "opserver_defender_bans_total"), 1);
  EXPECT_EQ(value_of(m, R"(opserver_connections_refused_total{reason="banned"})"), 1);
  EXPECT_NE(server.log().find("defender: 192.0.2.7 banned"), std::string::npos) << server.log();
}

TEST(Operating, DefenderNeverBansTheAllowList) {
  ServerProcess server(
      with_admin(R"(, "defender": {"enabled": true, "threshold": 2, "allow": ["127.0.0.0/30"]})"));
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(failed_login_from("127.0.0.2", server.port(), "admin")) << "attempt " << i;
  }
  const auto m = parse_exposition(http(admin_port(server), "GET", "/metrics").body);
  EXPECT_EQ(value_of(m, "opserver_defender_bans_total"), 0);
}

TEST(Operating, DefenderIsOffByDefault) {
  ServerProcess server(with_admin());
  for (int i = 0; i < 12; ++i) {
    EXPECT_TRUE(failed_login_from("127.0.0.2", server.port(), "admin")) << "attempt " << i;
  }
}

std::vector<rapidjson::Document> audit_lines(const fs::path& path) {
  std::vector<rapidjson::Document> out;
  std::istringstream lines(slurp(path));
  std::string line;
  while (std::getline(lines, line)) {
    rapidjson::Document d;
    d.Parse(line.c_str(), line.size());
    EXPECT_FALSE(d.HasParseError()) << line;
    EXPECT_TRUE(d.IsObject()) << line;
    if (!d.HasParseError() && d.IsObject()) out.push_back(std::move(d));
  }
  return out;
}

// Waits until the file has at least `n` lines.
std::vector<rapidjson::Document> wait_for_lines(const fs::path& path, std::size_t n) {
  for (int i = 0; i < 250; ++i) {
    auto lines = audit_lines(path);
    if (lines.size() >= n) return lines;
    std::this_thread::sleep_for(20ms);
  }
  return audit_lines(path);
}

std::string str(const rapidjson::Value& v, const char* name) {
  auto it = v.FindMember(name);
  return it != v.MemberEnd() && it->value.IsString() ? it->value.GetString() : "<absent>";
}

TEST(Operating, AuditLogHasOneLinePerRequestAndFailedLogins) {
  TempDir dir;
  const fs::path log = dir.path() / "audit.log";
  ServerOptions options;
  options.ops_json = operating_ops_json();
  options.args = {"--audit-log", log.string()};
  ServerProcess server(options);
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  const std::string odd = "caf\xC3\xA9 \"quoted\" \\ name.txt";
  EXPECT_OP_OK(upload(*c, odd, "hello"));
  EXPECT_OP_OK(download(*c, odd, R"(,"sha256":true)"));
  EXPECT_OP_OK(call_op(*c, "move", jobj({{"from", jstr(odd)}, {"to", jstr("b.txt")}})));
  EXPECT_OP_ERR(call_op(*c, "made_up_op", "{}"), "unknown_operation");
  EXPECT_TRUE(failed_login_from("127.0.0.1", server.port(), "mallory"));

  auto lines = wait_for_lines(log, 5);
  ASSERT_EQ(lines.size(), 5u) << slurp(log);
  std::vector<const rapidjson::Document*> requests;
  const rapidjson::Document* failed = nullptr;
  for (const auto& line : lines) {
    if (str(line, "event") == "request") requests.push_back(&line);
    if (str(line, "event") == "login_failed") failed = &line;
  }
  ASSERT_EQ(requests.size(), 4u);
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(str(*failed, "user"), "mallory");
  EXPECT_EQ(str(*failed, "peer").rfind("127.0.0.1:", 0), 0u);

  const auto& up = *requests[0];
  static const std::regex kTime(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)");
  EXPECT_TRUE(std::regex_match(str(up, "time"), kTime)) << str(up, "time");
  EXPECT_EQ(str(up, "user"), "admin");
  EXPECT_EQ(str(up, "operation"), "upload");
  EXPECT_EQ(str(up, "code"), "ok");
  EXPECT_EQ(str(up, "path"), odd);
  EXPECT_EQ(up["bytes_in"].GetUint64(), 5u);
  EXPECT_EQ(str(up, "sha256"), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
  EXPECT_EQ(up["bytes_out"].GetUint64(), 0u);
  EXPECT_TRUE(up["id"].IsUint64());
  EXPECT_TRUE(up["connection"].IsUint64());
  EXPECT_TRUE(up["duration_ms"].IsNumber());
  const auto& down = *requests[1];
  EXPECT_EQ(str(down, "operation"), "download");
  EXPECT_EQ(down["bytes_out"].GetUint64(), 5u);
  // sha256("hello")
  EXPECT_EQ(str(down, "sha256"),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
  EXPECT_EQ(down["connection"].GetUint64(), up["connection"].GetUint64());
  const auto& move = *requests[2];
  EXPECT_EQ(str(move, "from"), odd);
  EXPECT_EQ(str(move, "to"), "b.txt");
  EXPECT_EQ(str(*requests[3], "code"), "unknown_operation");
  EXPECT_EQ(str(*requests[3], "operation"), "made_up_op");

  // Keys and proofs never reach the file.
  const std::string text = slurp(log);
  EXPECT_EQ(text.find(server.admin_key()), std::string::npos);
  EXPECT_EQ(text.find("proof"), std::string::npos);
  EXPECT_EQ(text.find(std::string(64, 'b')), std::string::npos);
  EXPECT_EQ(text.find("cnonce"), std::string::npos);
}

TEST(Operating, AuditLogIsReopenedOnSigusr1) {
  TempDir dir;
  const fs::path log = dir.path() / "audit.log";
  ServerOptions options;
  options.settings = "\"audit_log\": \"" + log.string() + "\"";
  ServerProcess server(options);
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  EXPECT_OP_OK(call_op(*c, "describe", "{}"));
  ASSERT_EQ(wait_for_lines(log, 1).size(), 1u);
  fs::rename(log, dir.path() / "audit.log.1");  // what logrotate does
  ::kill(server.pid(), SIGUSR1);
  // The reopen is asynchronous: wait for the server to say it, then log more.
  for (int i = 0; i < 100 && server.log().find("reopening the audit log") == std::string::npos;
       ++i) {
    std::this_thread::sleep_for(20ms);
  }
  std::this_thread::sleep_for(100ms);
  EXPECT_OP_OK(call_op(*c, "describe", "{}"));
  EXPECT_OP_OK(call_op(*c, "describe", "{}"));
  EXPECT_EQ(wait_for_lines(log, 2).size(), 2u);
  EXPECT_EQ(audit_lines(dir.path() / "audit.log.1").size(), 1u);
  EXPECT_TRUE(server.running());
}

}  // namespace
}  // namespace ops::test
