// The server's Prometheus metrics (prometheus-cpp): request counts, durations and payload
// bytes per operation, handshakes, plugin loads, defender bans, and gauges sampled at
// scrape time (connections, handler threads, resumable uploads). docs/OPERATING.md lists
// every series.
//
// Counting is always on and cheap: a request costs one lookup of its operation in a
// per-thread table (no lock, no string built) and a few atomic adds; the per-operation
// series are created once (prometheus::Family::Add) and cached. Operation labels are only
// ever the names of enabled operations, "describe", or "unknown": a name a client makes up
// never becomes a label value, so clients cannot grow the series without bound.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "opserver/error.hpp"

namespace ops::core {

// The label for requests whose operation is not enabled (or could not be read).
inline constexpr std::string_view kUnknownOperation = "unknown";

enum class HandshakeResult { ok, auth_failed, transport_error, abandoned };

// Values read from the server when /metrics is scraped, not counted as they change.
struct ScrapeValues {
  std::size_t connections_open = 0;
  std::size_t connections_unauthenticated = 0;
  unsigned handler_threads = 0;
  unsigned handler_threads_busy = 0;
  std::size_t handler_queue_length = 0;
  std::size_t resumable_uploads_open = 0;
  std::size_t defender_banned_addresses = 0;
  // Operations that run in worker processes (docs/PLUGINS.md, "Isolated plugins").
  struct Isolated {
    std::string operation;
    bool up = true;
    unsigned workers = 0;
    std::uint64_t starts = 0, start_failures = 0, crashes = 0;
  };
  std::vector<Isolated> isolated;
  std::size_t operations_unhealthy = 0;  // by their health hooks, as last checked
};

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // One finished request. `operation` must be an enabled operation's name, "describe" or
  // kUnknownOperation (see label_for); `code` is nullopt for ok.
  void on_request(std::string_view operation, std::optional<ErrorCode> code, std::uint64_t bytes_in,
                  std::uint64_t bytes_out, double seconds);
  void on_handshake(HandshakeResult result);
  // The plugins loaded at start (initial = true) or by a configuration reload.
  void on_plugin_load(bool initial, bool ok);
  void on_reload(bool ok) { on_plugin_load(false, ok); }
  void on_connection_refused_limit() { refused_limit_->Increment(); }
  void on_connection_refused_banned() { refused_banned_->Increment(); }
  void on_defender_ban() { bans_->Increment(); }
  void on_audit_dropped() { audit_dropped_->Increment(); }

  // Called at every scrape to fill the sampled gauges (set once by the server).
  void set_sampler(std::function<void(ScrapeValues&)> sampler);
  // The Prometheus text exposition of every series (version 0.0.4).
  std::string scrape();

 private:
  struct PerOperation;
  PerOperation& per_operation(std::string_view name);
  prometheus::Counter& requests(PerOperation& op, std::optional<ErrorCode> code);

  const std::uint64_t serial_;  // tells this instance's entries in the per-thread caches apart
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_total_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Family<prometheus::Counter>& bytes_in_;
  prometheus::Family<prometheus::Counter>& bytes_out_;
  prometheus::Family<prometheus::Counter>& handshakes_;
  prometheus::Family<prometheus::Counter>& plugin_loads_;
  prometheus::Family<prometheus::Counter>& refused_;
  prometheus::Counter* refused_limit_;
  prometheus::Counter* refused_banned_;
  prometheus::Counter* bans_;
  prometheus::Counter* audit_dropped_;
  std::array<prometheus::Counter*, 4> handshake_by_result_{};
  prometheus::Gauge* connections_open_;
  prometheus::Gauge* connections_unauthenticated_;
  prometheus::Gauge* handler_threads_;
  prometheus::Gauge* handler_threads_busy_;
  prometheus::Gauge* handler_queue_;
  prometheus::Gauge* uploads_open_;
  prometheus::Gauge* banned_addresses_;
  prometheus::Family<prometheus::Gauge>& isolated_up_;
  prometheus::Family<prometheus::Gauge>& isolated_workers_;
  prometheus::Family<prometheus::Gauge>& isolated_events_;
  prometheus::Gauge* operations_unhealthy_;

  std::mutex mutex_;  // per_operation's slow path, the sampler, scrape
  std::unordered_map<std::string, std::unique_ptr<PerOperation>> operations_;
  std::function<void(ScrapeValues&)> sampler_;
};

}  // namespace ops::core
