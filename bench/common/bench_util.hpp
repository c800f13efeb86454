// Helpers shared by the load generators (opsbench, grpc_bench): command-line flags,
// latency percentiles, CPU seconds and RSS of a process from /proc, and one JSON line
// per run for scripts/bench to aggregate. Header-only; no dependency beyond the
// standard library and POSIX. Not thread-safe unless a function says so.
#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace ops::bench {

using Clock = std::chrono::steady_clock;

// --- flags: "--name value" and "--flag"; positional words kept in order ---
class Flags {
 public:
  Flags(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) == 0) {
        std::string name = a.substr(2);
        auto eq = name.find('=');
        if (eq != std::string::npos) {
          values_[name.substr(0, eq)] = name.substr(eq + 1);
        } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
          values_[name] = argv[++i];
        } else {
          values_[name] = "";
        }
      } else {
        positional_.push_back(a);
      }
    }
  }
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  std::string str(const std::string& name, const std::string& fallback = "") const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : it->second;
  }
  // Integers accept K, M, G suffixes (powers of 1024).
  std::uint64_t size(const std::string& name, std::uint64_t fallback) const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : parse_size(it->second);
  }
  double num(const std::string& name, double fallback) const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : std::stod(it->second);
  }
  const std::vector<std::string>& positional() const { return positional_; }

  static std::uint64_t parse_size(const std::string& text) {
    std::size_t used = 0;
    double v = std::stod(text, &used);
    std::string suffix = text.substr(used);
    std::uint64_t mul = 1;
    if (suffix == "K" || suffix == "k" || suffix == "KiB") mul = 1024;
    if (suffix == "M" || suffix == "m" || suffix == "MiB") mul = 1024 * 1024;
    if (suffix == "G" || suffix == "g" || suffix == "GiB") mul = 1024ull * 1024 * 1024;
    return static_cast<std::uint64_t>(v * static_cast<double>(mul));
  }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// --- latencies (nanoseconds) ---
struct Percentiles {
  double p50_us = 0, p99_us = 0, max_us = 0, mean_us = 0;
};

inline Percentiles percentiles(std::vector<std::uint64_t>& ns) {
  Percentiles p;
  if (ns.empty()) return p;
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) {
    std::size_t i = static_cast<std::size_t>(q * static_cast<double>(ns.size() - 1) + 0.5);
    return static_cast<double>(ns[std::min(i, ns.size() - 1)]) / 1000.0;
  };
  p.p50_us = at(0.50);
  p.p99_us = at(0.99);
  p.max_us = static_cast<double>(ns.back()) / 1000.0;
  long double sum = 0;
  for (auto v : ns) sum += v;
  p.mean_us = static_cast<double>(sum / ns.size() / 1000.0);
  return p;
}

// --- /proc ---
// utime + stime of one process, and of its children already reaped (cutime + cstime), in
// clock ticks.
inline std::optional<unsigned long long> own_cpu_ticks(long pid, bool reaped_children) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  auto close = line.rfind(')');  // the command name may contain spaces
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  // After ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
  // utime(14) stime(15) cutime(16) cstime(17).
  unsigned long long ticks = 0;
  for (int i = 3; i <= 17 && rest >> field; ++i) {
    if (i == 14 || i == 15 || (reaped_children && (i == 16 || i == 17)))
      ticks += std::stoull(field);
  }
  return ticks;
}

// The CPU seconds of a server process and of its worker processes (isolated plugins):
// its own utime + stime, its reaped workers', and its live workers' (children listed in
// /proc/<pid>/task/*/children). Clock-tick resolution: 10 ms.
inline std::optional<double> process_cpu_seconds(long pid) {
  auto ticks = own_cpu_ticks(pid, true);
  if (!ticks) return std::nullopt;
  std::error_code ec;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream children(task.path() / "children");
    long child = 0;
    while (children >> child) *ticks += own_cpu_ticks(child, false).value_or(0);
  }
  return static_cast<double>(*ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// This process's own CPU (all threads), microsecond resolution.
inline double self_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

// A "VmRSS:"-style field of /proc/<pid>/status, in KiB.
inline std::optional<std::uint64_t> status_kib(long pid, const std::string& key = "VmRSS") {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) {
      return std::stoull(line.substr(key.size() + 1));
    }
  }
  return std::nullopt;
}

// Samples a process's RSS every `period` on its own thread and keeps the maximum.
class RssSampler {
 public:
  RssSampler(long pid, std::chrono::milliseconds period = std::chrono::milliseconds(5))
      : pid_(pid) {
    if (pid_ <= 0) return;
    start_kib_ = status_kib(pid_).value_or(0);
    max_kib_ = start_kib_;
    thread_ = std::thread([this, period] {
      while (!stop_.load()) {
        if (auto v = status_kib(pid_)) {
          std::uint64_t cur = max_kib_.load();
          while (*v > cur && !max_kib_.compare_exchange_weak(cur, *v)) {
          }
        }
        std::this_thread::sleep_for(period);
      }
    });
  }
  ~RssSampler() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::uint64_t start_kib() const { return start_kib_; }
  std::uint64_t max_kib() const { return max_kib_.load(); }

 private:
  long pid_;
  std::uint64_t start_kib_ = 0;
  std::atomic<std::uint64_t> max_kib_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// CPU of the server (if a pid is given) and of this process over a measured window.
class CpuWindow {
 public:
  explicit CpuWindow(long server_pid) : pid_(server_pid) {}
  void start() {
    self0_ = self_cpu_seconds();
    if (pid_ > 0) server0_ = process_cpu_seconds(pid_).value_or(0);
    t0_ = Clock::now();
  }
  void stop() {
    wall_ = std::chrono::duration<double>(Clock::now() - t0_).count();
    self_ = self_cpu_seconds() - self0_;
    if (pid_ > 0) server_ = process_cpu_seconds(pid_).value_or(0) - server0_;
  }
  double wall() const { return wall_; }
  double self() const { return self_; }
  double server() const { return server_; }
  bool has_server() const { return pid_ > 0; }

 private:
  long pid_;
  Clock::time_point t0_;
  double self0_ = 0, server0_ = 0;
  double wall_ = 0, self_ = 0, server_ = 0;
};

// --- one JSON object on one line ---
class JsonLine {
 public:
  JsonLine& add(const std::string& key, const std::string& value) {
    std::string esc;
    for (char c : value) {
      if (c == '"' || c == '\\') esc += '\\';
      if (static_cast<unsigned char>(c) < 0x20) continue;
      esc += c;
    }
    items_.push_back("\"" + key + "\":\"" + esc + "\"");
    return *this;
  }
  JsonLine& add(const std::string& key, const char* value) { return add(key, std::string(value)); }
  JsonLine& add(const std::string& key, double value) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", value);
    items_.push_back("\"" + key + "\":" + buf);
    return *this;
  }
  JsonLine& add(const std::string& key, std::uint64_t value) {
    items_.push_back("\"" + key + "\":" + std::to_string(value));
    return *this;
  }
  JsonLine& add(const std::string& key, int value) {
    return add(key, static_cast<std::uint64_t>(value));
  }
  std::string str() const {
    std::string out = "{";
    for (std::size_t i = 0; i < items_.size(); ++i) out += (i ? "," : "") + items_[i];
    return out + "}";
  }

 private:
  std::vector<std::string> items_;
};

// Adds the CPU figures of a window for `ops` operations (or bytes, for bulk modes).
inline void add_cpu(JsonLine& j, const CpuWindow& w, double ops, const char* per_name) {
  j.add("wall_s", w.wall());
  j.add("client_cpu_s", w.self());
  if (ops > 0) j.add(std::string("client_cpu_us_per_") + per_name, w.self() * 1e6 / ops);
  if (w.has_server()) {
    j.add("server_cpu_s", w.server());
    if (ops > 0) j.add(std::string("server_cpu_us_per_") + per_name, w.server() * 1e6 / ops);
  }
}

// New connections per second: `threads` threads each open and close connections with
// `connect_once(thread, n)` (n counts that thread's connections) as fast as they can;
// measured for `duration` seconds after `warmup`, with the server's CPU over the window.
// Adds mode, threads, ops, rate, percentiles and CPU per connection to `j` and returns the
// human line's figures in the same order as both tools print them.
struct HandshakeRun {
  std::uint64_t total = 0;
  double rate = 0;
  Percentiles p;
  double server_us_per_conn = 0;
  double client_us_per_conn = 0;
};
template <class ConnectOnce>
HandshakeRun measure_handshakes(std::size_t threads, double warmup, double duration,
                                long server_pid, JsonLine& j, ConnectOnce connect_once) {
  std::atomic<bool> stop{false};
  std::atomic<bool> measuring{false};
  std::vector<std::vector<std::uint64_t>> latencies(threads);
  std::vector<std::uint64_t> counts(threads, 0);
  std::vector<std::thread> workers;
  for (std::size_t t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      latencies[t].reserve(1 << 18);
      for (std::uint64_t n = 0; !stop.load(std::memory_order_relaxed); ++n) {
        auto t0 = Clock::now();
        connect_once(t, n);  // opens and closes one connection
        auto t1 = Clock::now();
        if (measuring.load(std::memory_order_relaxed)) {
          latencies[t].push_back(static_cast<std::uint64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()));
          ++counts[t];
        }
      }
    });
  }
  CpuWindow window(server_pid);
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
  window.start();
  measuring = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(duration));
  measuring = false;
  window.stop();
  stop = true;
  for (auto& w : workers) w.join();
  std::vector<std::uint64_t> all;
  HandshakeRun r;
  for (std::size_t t = 0; t < threads; ++t) {
    r.total += counts[t];
    all.insert(all.end(), latencies[t].begin(), latencies[t].end());
  }
  r.p = percentiles(all);
  r.rate = static_cast<double>(r.total) / window.wall();
  const double conns = std::max<double>(1, static_cast<double>(r.total));
  r.server_us_per_conn = window.server() * 1e6 / conns;
  r.client_us_per_conn = window.self() * 1e6 / conns;
  j.add("mode", "handshakes")
      .add("threads", static_cast<std::uint64_t>(threads))
      .add("ops", r.total)
      .add("rate", r.rate)
      .add("p50_us", r.p.p50_us)
      .add("p99_us", r.p.p99_us);
  add_cpu(j, window, static_cast<double>(r.total), "conn");
  return r;
}

// Splits `total` items over `parts` as evenly as possible; part `i` gets the result.
inline std::size_t share(std::size_t total, std::size_t parts, std::size_t i) {
  return total / parts + (i < total % parts ? 1 : 0);
}

// Deterministic pseudo-random bytes (xorshift), so payloads do not compress or dedupe.
inline void fill_pattern(char* data, std::size_t size, std::uint64_t seed) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(data + i, &x, 8);
  }
  for (; i < size; ++i) data[i] = static_cast<char>(i * 131u + seed);
}

}  // namespace ops::bench
