// ops_auth_timing: authentication under attack (reliability.md cases 7 and 15; run by
// scripts/soak --auth).
//
// Part 1, timing: N attempts with an unknown user and N with a known user and a wrong
// proof, interleaved in random order, each on its own connection. The time from sending
// the auth frame to receiving the auth_failed frame is compared: difference of medians
// and the two-sample Kolmogorov-Smirnov statistic with its p-value. The reply bytes must
// be identical. Thresholds (catalogue, a guess): |Δmedian| < 50 µs and p > 0.01.
//
// Part 2, flood: F failed logins (default 10,000) paced evenly over S seconds (default 30,
// so well within "a minute") from several threads, alternately unknown user and wrong
// proof, while a healthy client loops describe + a 1 MiB upload and download on its own
// authenticated connection. Its p50/p99 latency is compared with a baseline run of the
// same length without the flood (target: the 1 MiB round trip's p99 under 2x the
// baseline; describe's is reported too), and the server log's growth per failed login.
#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "opserver/client.hpp"
#include "tool_util.hpp"

namespace {

using namespace ops::tools;

int usage() {
  std::fprintf(stderr,
               "usage: ops_auth_timing --server BIN --plugins DIR [--attempts N] [--flood N] "
               "[--flood-threads N] [--flood-seconds S]\n");
  return 2;
}

// One failed login; returns the microseconds from sending auth to the reply, or -1.
double failed_login(std::uint16_t port, const std::string& user, const std::string& key,
                    std::string* reply_out) {
  int fd = tcp_connect(port);
  if (fd < 0) return -1;
  auto challenge = read_frame(fd);
  auto nonce = challenge ? nonce_of(*challenge) : std::nullopt;
  if (!nonce) {
    ::close(fd);
    return -1;
  }
  std::string auth = auth_frame(user, key, *nonce);
  const auto t0 = Clock::now();
  if (!send_all(fd, auth)) {
    ::close(fd);
    return -1;
  }
  auto reply = read_frame(fd);
  const auto t1 = Clock::now();
  ::close(fd);
  if (!reply) return -1;
  if (reply_out) *reply_out = *reply;
  return std::chrono::duration<double, std::micro>(t1 - t0).count();
}

struct Latencies {
  std::vector<double> describe_ms, roundtrip_ms;
};

// The healthy client: describe, then upload and download 1 MiB, until `stop`.
Latencies healthy_loop(std::uint16_t port, const std::string& key, std::atomic<bool>& stop) {
  Latencies out;
  ops::client::Options o;
  o.port = port;
  o.user = "healthy";
  o.key = key;
  auto c = ops::client::Client::connect(o);
  if (!c) return out;
  std::string body(1u << 20, 'h');
  std::string got;
  while (!stop.load()) {
    auto t0 = Clock::now();
    auto d = (*c)->call("describe");
    auto t1 = Clock::now();
    auto u = (*c)->call("upload", R"({"path":"h.bin","overwrite":true})", body);
    auto g = (*c)->call_collect("download", R"({"path":"h.bin"})", got);
    auto t2 = Clock::now();
    if (!d || !u || !g || !d->ok || !u->ok || !g->ok || got != body) {
      std::fprintf(stderr, "auth_timing: the healthy client failed\n");
      break;
    }
    out.describe_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    out.roundtrip_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  fs::path server_bin, plugin_dir;
  int attempts = 5000, flood = 10000, flood_threads = 4, flood_seconds = 30;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--server")
      server_bin = next();
    else if (k == "--plugins")
      plugin_dir = next();
    else if (k == "--attempts")
      attempts = std::stoi(next());
    else if (k == "--flood")
      flood = std::stoi(next());
    else if (k == "--flood-threads")
      flood_threads = std::stoi(next());
    else
      return usage();
  }
  if (server_bin.empty() || plugin_dir.empty()) return usage();

  ServerRun server;
  server.server_bin = server_bin;
  server.dir = make_work_dir("ops-authtiming");
  server.extra_settings = R"("io_threads": 2, "max_unauthenticated": 1024)";
  server.write_config(plugin_dir);
  server.start();
  std::string alice_key, healthy_key;
  {
    ops::client::Options o;
    o.port = server.port;
    o.user = "admin";
    o.key = server.admin_key();
    auto admin = ops::client::Client::connect(o);
    if (!admin) return 1;
    for (auto [name, out] : {std::pair{"alice", &alice_key}, std::pair{"healthy", &healthy_key}}) {
      auto r = (*admin)->call("register", std::string(R"({"user":")") + name + "\"}");
      if (!r || !r->ok) return 1;
      *out = r->result_json.substr(r->result_json.find("\"key\":\"") + 7, 64);
    }
  }
  const std::string wrong_key = std::string(64, '0');

  // --- part 1: timing -----------------------------------------------------------------
  std::vector<double> unknown, wrong;
  std::string reply_unknown, reply_wrong;
  std::mt19937 rng(12345);
  // Warm-up: the first connections pay for page faults and thread start-up.
  for (int i = 0; i < 200; ++i) failed_login(server.port, "alice", wrong_key, nullptr);
  int failures = 0;
  for (int i = 0; i < attempts; ++i) {
    const bool unknown_first = rng() & 1;
    for (int k = 0; k < 2; ++k) {
      const bool do_unknown = (k == 0) == unknown_first;
      std::string reply;
      double us = do_unknown ? failed_login(server.port, "nobody" + std::to_string(rng() % 100000),
                                            wrong_key, &reply)
                             : failed_login(server.port, "alice", wrong_key, &reply);
      if (us < 0) {
        ++failures;
        continue;
      }
      (do_unknown ? unknown : wrong).push_back(us);
      (do_unknown ? reply_unknown : reply_wrong) = reply;
    }
  }
  const double med_u = quantile(unknown, 0.5), med_w = quantile(wrong, 0.5);
  const KsResult ks = ks_two_sample(unknown, wrong);
  const bool identical = reply_unknown == reply_wrong && !reply_unknown.empty();
  std::printf(
      "auth timing: %zu unknown-user and %zu wrong-proof failures (interleaved, %d lost "
      "connections)\n"
      "  median %.1f us vs %.1f us: delta %.1f us; p10 %.1f/%.1f, p90 %.1f/%.1f\n"
      "  two-sample KS: D = %.4f, p = %.4g\n"
      "  reply bytes identical: %s\n",
      unknown.size(), wrong.size(), failures, med_u, med_w, med_u - med_w, quantile(unknown, 0.1),
      quantile(wrong, 0.1), quantile(unknown, 0.9), quantile(wrong, 0.9), ks.d, ks.p,
      identical ? "yes" : "NO");
  const bool timing_ok = std::fabs(med_u - med_w) < 50.0 && ks.p > 0.01 && identical;

  // --- part 2: flood ------------------------------------------------------------------
  // Baseline: the healthy client alone for as long as the flood will take (measured first
  // with a short probe of the flood rate).
  const std::uintmax_t log_before_baseline = fs::file_size(server.log_path());
  std::atomic<bool> stop{false};
  Latencies base;
  std::thread baseline([&] { base = healthy_loop(server.port, healthy_key, stop); });
  std::this_thread::sleep_for(std::chrono::seconds(flood_seconds));
  stop = true;
  baseline.join();
  const std::uintmax_t log_before = fs::file_size(server.log_path());

  stop = false;
  Latencies under;
  std::thread healthy([&] { under = healthy_loop(server.port, healthy_key, stop); });
  std::atomic<int> done{0}, flood_failed{0};
  const auto f0 = Clock::now();
  std::vector<std::thread> attackers;
  for (int t = 0; t < flood_threads; ++t) {
    attackers.emplace_back([&, t] {
      // Paced: attempt i is due at f0 + i * flood_seconds / flood.
      const auto step = std::chrono::duration<double>(flood_seconds) / flood;
      for (int i = t; i < flood; i += flood_threads) {
        std::this_thread::sleep_until(
            f0 + std::chrono::duration_cast<Clock::duration>(step * static_cast<double>(i)));
        if (Clock::now() - f0 > std::chrono::seconds(60)) break;
        const bool unknown_user = i % 2;
        double us =
            failed_login(server.port, unknown_user ? "mallory" : "alice", wrong_key, nullptr);
        if (us < 0) flood_failed.fetch_add(1);
        done.fetch_add(1);
      }
    });
  }
  for (auto& th : attackers) th.join();
  const double flood_s = std::chrono::duration<double>(Clock::now() - f0).count();
  stop = true;
  healthy.join();
  const std::uintmax_t log_after = fs::file_size(server.log_path());
  // The log lines the flood caused: those about connections that never authenticated.
  std::size_t auth_lines = 0, auth_bytes = 0;
  {
    std::string text = slurp(server.log_path()).substr(log_before);
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      if (line.find("auth_failed") != std::string::npos ||
          line.find("before authenticating") != std::string::npos) {
        ++auth_lines;
        auth_bytes += line.size() + 1;
      }
    }
  }

  const double p99_base = quantile(base.roundtrip_ms, 0.99);
  const double p99_under = quantile(under.roundtrip_ms, 0.99);
  const double d99_base = quantile(base.describe_ms, 0.99);
  const double d99_under = quantile(under.describe_ms, 0.99);
  std::printf(
      "auth flood: %d failed logins in %.1f s (%.0f/s, %d connections refused or dropped)\n"
      "  healthy 1 MiB upload+download: p50 %.2f ms, p99 %.2f ms (baseline p50 %.2f, p99 %.2f; "
      "p99 ratio %.2f)\n"
      "  healthy describe: p50 %.3f ms, p99 %.3f ms (baseline p50 %.3f, p99 %.3f; p99 ratio "
      "%.2f)\n"
      "  server log: +%ju bytes during the flood, of which %zu lines and %zu bytes about "
      "failed logins (%.1f bytes per failed login; the healthy client's request lines are the "
      "rest; baseline run +%ju bytes)\n",
      done.load(), flood_s, done.load() / flood_s, flood_failed.load(),
      quantile(under.roundtrip_ms, 0.5), p99_under, quantile(base.roundtrip_ms, 0.5), p99_base,
      p99_under / p99_base, quantile(under.describe_ms, 0.5), d99_under,
      quantile(base.describe_ms, 0.5), d99_base, d99_under / d99_base, log_after - log_before,
      auth_lines, auth_bytes, static_cast<double>(auth_bytes) / std::max(1, done.load()),
      log_before - log_before_baseline);
  const bool flood_ok = done.load() >= flood && flood_s <= 60.0 && p99_under < 2 * p99_base;
  server.stop();
  std::printf("auth: timing %s, flood %s\n", timing_ok ? "PASS" : "FAIL",
              flood_ok ? "PASS" : "FAIL");
  std::error_code ec;
  fs::remove_all(server.dir, ec);
  return timing_ok && flood_ok ? 0 : 1;
}
