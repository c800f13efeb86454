// ops_resources: memory and descriptors per connection (reliability.md cases 75 and 76;
// run by scripts/resources).
//
// Starts the server with max_unauthenticated and RLIMIT_NOFILE raised, then, for each of
// --cycles rounds (default 4):
//  1. opens N idle connections that never authenticate (each has read its challenge, so
//     the server holds its session) and records the server's RSS and descriptors, while a
//     healthy client authenticates and round-trips (its latency is reported);
//  2. closes them and records how far RSS and descriptors come back;
//  3. the same with N connections that authenticate and then stay idle;
//  4. closes them and records again.
// Bytes per connection = (RSS with N open - RSS before) / N.
#include <string>
#include <thread>
#include <vector>

#include "opserver/client.hpp"
#include "tool_util.hpp"

namespace {

using namespace ops::tools;

struct Snapshot {
  std::uint64_t rss = 0, peak = 0;
  std::size_t fds = 0;
};

Snapshot snap(const ServerRun& s) {
  return Snapshot{s.rss(), s.peak_rss(), s.fds()};
}

// Waits until the server's descriptor count satisfies `done`, up to `limit`.
template <class Pred>
bool wait_fds(const ServerRun& s, Pred done, std::chrono::seconds limit) {
  const auto until = Clock::now() + limit;
  while (Clock::now() < until) {
    if (done(s.fds())) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done(s.fds());
}

double healthy_ms(std::uint16_t port, const std::string& key) {
  const auto t0 = Clock::now();
  ops::client::Options o;
  o.port = port;
  o.user = "admin";
  o.key = key;
  auto c = ops::client::Client::connect(o);
  if (!c) return -1;
  std::string body(1024, 'x'), got;
  auto u = (*c)->call("upload", R"({"path":"probe.bin","overwrite":true})", body);
  auto d = (*c)->call_collect("download", R"({"path":"probe.bin"})", got);
  if (!u || !d || !u->ok || !d->ok || got != body) return -1;
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void print(const char* what, const Snapshot& s, const Snapshot& base, int n) {
  std::printf("  %-34s RSS %8.1f MiB (%+8.1f MiB, %6.0f B/conn)  peak %8.1f MiB  fds %6zu (%+zd)\n",
              what, s.rss / 1048576.0, (static_cast<double>(s.rss) - base.rss) / 1048576.0,
              n > 0 ? (static_cast<double>(s.rss) - base.rss) / n : 0.0, s.peak / 1048576.0, s.fds,
              static_cast<std::ptrdiff_t>(s.fds) - static_cast<std::ptrdiff_t>(base.fds));
}

int usage() {
  std::fprintf(stderr,
               "usage: ops_resources --server BIN --plugins DIR [--connections N] [--cycles N]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  fs::path server_bin, plugin_dir;
  int n = 10000;
  int cycles = 4;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--server")
      server_bin = next();
    else if (k == "--plugins")
      plugin_dir = next();
    else if (k == "--connections")
      n = std::stoi(next());
    else if (k == "--cycles")
      cycles = std::stoi(next());
    else
      return usage();
  }
  if (server_bin.empty() || plugin_dir.empty()) return usage();
  const rlim_t mine = raise_nofile(static_cast<rlim_t>(n) + 1000);
  if (mine < static_cast<rlim_t>(n) + 100) {
    std::fprintf(stderr, "resources: RLIMIT_NOFILE is %ju; %d connections need more (ulimit -n)\n",
                 static_cast<std::uintmax_t>(mine), n);
    return 2;
  }

  ServerRun server;
  server.server_bin = server_bin;
  server.dir = make_work_dir("ops-resources");
  server.nofile = mine;
  server.extra_settings = "\"io_threads\": 2, \"max_unauthenticated\": " + std::to_string(n + 100) +
                          ", \"handshake_timeout_ms\": 600000, \"idle_timeout_ms\": 600000";
  server.write_config(plugin_dir);
  server.start();
  const std::string key = server.admin_key();
  // Warm up: a few logins and transfers, so the baseline includes what every server has.
  for (int i = 0; i < 20; ++i) healthy_ms(server.port, key);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const Snapshot base = snap(server);
  std::printf("resources: %d connections per phase; server RLIMIT_NOFILE %ju\n", n,
              static_cast<std::uintmax_t>(mine));
  print("baseline (idle server)", base, base, 0);

  bool ok = true;
  // Both phases, `cycles` times: RSS that stays flat from one cycle to the next after
  // the first is memory the allocator keeps for reuse; RSS that keeps climbing is a leak.
  std::vector<bool> phases;
  for (int i = 0; i < cycles; ++i) {
    phases.push_back(false);
    phases.push_back(true);
  }
  std::vector<std::uint64_t> after_cycle;
  for (std::size_t phase = 0; phase < phases.size(); ++phase) {
    const bool authenticated = phases[phase];
    if (phase % 2 == 0) std::printf("cycle %zu:\n", phase / 2 + 1);
    std::vector<int> fds;
    fds.reserve(static_cast<std::size_t>(n));
    const auto t0 = Clock::now();
    int failed = 0;
    for (int i = 0; i < n; ++i) {
      int fd = tcp_connect(server.port);
      if (fd < 0) {
        ++failed;
        continue;
      }
      auto challenge = read_frame(fd);
      if (!challenge) {
        ++failed;
        ::close(fd);
        continue;
      }
      if (authenticated) {
        auto nonce = nonce_of(*challenge);
        if (!nonce || !send_all(fd, auth_frame("admin", key, *nonce)) || !read_frame(fd)) {
          ++failed;
          ::close(fd);
          continue;
        }
      }
      fds.push_back(fd);
    }
    const double open_s = std::chrono::duration<double>(Clock::now() - t0).count();
    wait_fds(
        server, [&](std::size_t f) { return f >= base.fds + fds.size(); },
        std::chrono::seconds(10));
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const Snapshot held = snap(server);
    const double probe = healthy_ms(server.port, key);
    const char* kind = authenticated ? "authenticated idle" : "pre-auth idle";
    std::printf(
        "%s: %zu connections open in %.1f s (%d failed); healthy client login + 1 KiB "
        "round trip meanwhile: %.1f ms\n",
        kind, fds.size(), open_s, failed, probe);
    print((std::string("with ") + std::to_string(fds.size()) + " " + kind).c_str(), held, base,
          static_cast<int>(fds.size()));
    if (failed > 0 || probe < 0) ok = false;

    for (int fd : fds) ::close(fd);
    const bool back = wait_fds(
        server, [&](std::size_t f) { return f <= base.fds; }, std::chrono::seconds(30));
    // The server trims its heap on its housekeeping tick (every 2 s) once many
    // connections have closed: give it two ticks.
    std::this_thread::sleep_for(std::chrono::milliseconds(4500));
    const Snapshot after = snap(server);
    print("after they closed", after, base, 0);
    if (!back) {
      std::printf("  descriptors did not return to the baseline\n");
      ok = false;
    }
    const double rss_growth = (static_cast<double>(after.rss) - base.rss) / base.rss;
    std::printf("  RSS after close vs baseline: %+.1f%%\n", rss_growth * 100);
    if (phase % 2 == 1) after_cycle.push_back(after.rss);
  }
  if (after_cycle.size() >= 2) {
    // A leak grows by the same amount every cycle; fragmentation settles. So the verdict
    // compares the last two cycles.
    const double n = static_cast<double>(after_cycle.size());
    const double last = static_cast<double>(after_cycle.back());
    const double previous = static_cast<double>(after_cycle[after_cycle.size() - 2]);
    const double step = (last - previous) / previous;
    std::printf("RSS after each cycle:");
    for (std::uint64_t r : after_cycle) std::printf(" %.1f MiB", r / 1048576.0);
    std::printf(
        " (last cycle %+.1f%% over the one before, %+.1f%% over the first after %.0f "
        "cycles: %s)\n",
        step * 100, (last - after_cycle[0]) / after_cycle[0] * 100, n,
        step < 0.02 ? "settled, memory kept by the allocator for reuse" : "still growing");
    if (step >= 0.02) ok = false;
  }
  server.stop();
  std::error_code ec;
  fs::remove_all(server.dir, ec);
  std::printf("resources: %s\n", ok ? "done" : "FAILED");
  return ok ? 0 : 1;
}
