#include "metrics/metrics.hpp"

#include <prometheus/text_serializer.h>

#include <sstream>

namespace ops::core {
namespace prom = prometheus;

namespace {

std::atomic<std::uint64_t> next_serial{1};

// Request durations from sub-millisecond calls (describe, stat) to long transfers.
const prom::Histogram::BucketBoundaries kDurationBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};

constexpr std::string_view kHandshakeResults[] = {"ok", "auth_failed", "transport_error",
                                                  "abandoned"};

// Heterogeneous lookup: the per-thread table is searched with a string_view, no string built.
struct NameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

}  // namespace

struct Metrics::PerOperation {
  std::string name;
  prom::Histogram* duration = nullptr;
  prom::Counter* bytes_in = nullptr;
  prom::Counter* bytes_out = nullptr;
  // requests_total by code: [0] ok, [n] the ErrorCode whose ABI value is n (1..15). Made on
  // first use, so only codes that happened show up.
  std::array<std::atomic<prom::Counter*>, 16> by_code{};
};

Metrics::Metrics()
    : serial_(next_serial.fetch_add(1)),
      registry_(std::make_shared<prom::Registry>()),
      requests_total_(prom::BuildCounter()
                          .Name("opserver_requests_total")
                          .Help("Requests answered, by operation and OPS/1 result code")
                          .Register(*registry_)),
      duration_(prom::BuildHistogram()
                    .Name("opserver_request_duration_seconds")
                    .Help("Time from a request's header being read to its end, by operation")
                    .Register(*registry_)),
      bytes_in_(prom::BuildCounter()
                    .Name("opserver_payload_received_bytes_total")
                    .Help("Request payload bytes read by operations, by operation")
                    .Register(*registry_)),
      bytes_out_(prom::BuildCounter()
                     .Name("opserver_payload_sent_bytes_total")
                     .Help("Response payload bytes written by operations, by operation")
                     .Register(*registry_)),
      handshakes_(prom::BuildCounter()
                      .Name("opserver_handshakes_total")
                      .Help("Connection handshakes by result (ok, auth_failed, "
                            "transport_error: PROXY header or TLS, abandoned: closed or "
                            "timed out before the auth frame)")
                      .Register(*registry_)),
      plugin_loads_(prom::BuildCounter()
                        .Name("opserver_plugin_loads_total")
                        .Help("Plugin set loads: kind start or reload, result ok or failed")
                        .Register(*registry_)),
      refused_(prom::BuildCounter()
                   .Name("opserver_connections_refused_total")
                   .Help("Connections closed at accept: reason limit (max_connections, "
                         "max_unauthenticated) or banned (defender)")
                   .Register(*registry_)),
      isolated_up_(prom::BuildGauge()
                       .Name("opserver_isolated_operation_up")
                       .Help("1 while an isolated operation serves, 0 once it is marked down "
                             "(its worker failed to start again and again; a reload retries)")
                       .Register(*registry_)),
      isolated_workers_(prom::BuildGauge()
                            .Name("opserver_isolated_workers")
                            .Help("Worker processes of an isolated operation alive now")
                            .Register(*registry_)),
      isolated_events_(prom::BuildGauge()
                           .Name("opserver_isolated_worker_events")
                           .Help("Worker processes of an isolated operation since it was last "
                                 "loaded, by event: started, start_failed, crashed (failed "
                                 "during a call: crash, exit, hang, broken protocol)")
                           .Register(*registry_)) {
  refused_limit_ = &refused_.Add({{"reason", "limit"}});
  refused_banned_ = &refused_.Add({{"reason", "banned"}});
  bans_ = &prom::BuildCounter()
               .Name("opserver_defender_bans_total")
               .Help("Source addresses banned by the defender after failed handshakes")
               .Register(*registry_)
               .Add({});
  audit_dropped_ = &prom::BuildCounter()
                        .Name("opserver_audit_dropped_total")
                        .Help("Audit log lines dropped because the writer's queue was full")
                        .Register(*registry_)
                        .Add({});
  for (std::size_t i = 0; i < handshake_by_result_.size(); ++i) {
    handshake_by_result_[i] = &handshakes_.Add({{"result", std::string(kHandshakeResults[i])}});
  }
  auto gauge = [this](const char* name, const char* help) {
    return &prom::BuildGauge().Name(name).Help(help).Register(*registry_).Add({});
  };
  connections_open_ = gauge("opserver_connections_open", "Connections open now");
  connections_unauthenticated_ = gauge("opserver_connections_unauthenticated",
                                       "Connections open now that have not authenticated yet");
  handler_threads_ = gauge("opserver_handler_threads", "Handler threads running now");
  handler_threads_busy_ =
      gauge("opserver_handler_threads_busy", "Handler threads running a plugin call now");
  handler_queue_ =
      gauge("opserver_handler_queue_length", "Plugin calls waiting for a handler thread now");
  uploads_open_ = gauge("opserver_resumable_uploads_open",
                        "Resumable uploads open now (their metadata files in the scratch area)");
  banned_addresses_ =
      gauge("opserver_defender_banned_addresses", "Source addresses the defender bans now");
  operations_unhealthy_ =
      gauge("opserver_operations_unhealthy",
            "Enabled operations whose health hook reported them unhealthy at the last check");
  plugin_loads_.Add({{"kind", "start"}, {"result", "ok"}});
}

Metrics::~Metrics() = default;

Metrics::PerOperation& Metrics::per_operation(std::string_view name) {
  // Per I/O thread, per Metrics instance: after the first request of an operation on a
  // thread, finding its series takes no lock.
  thread_local struct {
    std::uint64_t owner = 0;
    std::unordered_map<std::string, PerOperation*, NameHash, std::equal_to<>> table;
  } cache;
  if (cache.owner != serial_) {
    cache.table.clear();
    cache.owner = serial_;
  }
  if (auto it = cache.table.find(name); it != cache.table.end()) return *it->second;

  std::lock_guard lock(mutex_);
  auto& slot = operations_[std::string(name)];
  if (!slot) {
    slot = std::make_unique<PerOperation>();
    slot->name = std::string(name);
    const prom::Labels labels{{"operation", slot->name}};
    slot->duration = &duration_.Add(labels, kDurationBuckets);
    slot->bytes_in = &bytes_in_.Add(labels);
    slot->bytes_out = &bytes_out_.Add(labels);
  }
  cache.table.emplace(slot->name, slot.get());
  return *slot;
}

prom::Counter& Metrics::requests(PerOperation& op, std::optional<ErrorCode> code) {
  const std::size_t index = code ? static_cast<std::size_t>(*code) : 0;
  std::atomic<prom::Counter*>& slot = op.by_code[index < op.by_code.size() ? index : 0];
  if (prom::Counter* counter = slot.load(std::memory_order_acquire)) return *counter;
  // Family::Add returns the same series for the same labels, so a race here is harmless.
  prom::Counter& counter = requests_total_.Add(
      {{"operation", op.name}, {"code", std::string(code ? wire_name(*code) : "ok")}});
  slot.store(&counter, std::memory_order_release);
  return counter;
}

void Metrics::on_request(std::string_view operation, std::optional<ErrorCode> code,
                         std::uint64_t bytes_in, std::uint64_t bytes_out, double seconds) {
  PerOperation& op = per_operation(operation);
  requests(op, code).Increment();
  op.duration->Observe(seconds);
  if (bytes_in) op.bytes_in->Increment(static_cast<double>(bytes_in));
  if (bytes_out) op.bytes_out->Increment(static_cast<double>(bytes_out));
}

void Metrics::on_handshake(HandshakeResult result) {
  handshake_by_result_[static_cast<std::size_t>(result)]->Increment();
}

void Metrics::on_plugin_load(bool initial, bool ok) {
  plugin_loads_.Add({{"kind", initial ? "start" : "reload"}, {"result", ok ? "ok" : "failed"}})
      .Increment();
}

void Metrics::set_sampler(std::function<void(ScrapeValues&)> sampler) {
  std::lock_guard lock(mutex_);
  sampler_ = std::move(sampler);
}

std::string Metrics::scrape() {
  std::lock_guard lock(mutex_);
  if (sampler_) {
    ScrapeValues v;
    sampler_(v);
    connections_open_->Set(static_cast<double>(v.connections_open));
    connections_unauthenticated_->Set(static_cast<double>(v.connections_unauthenticated));
    handler_threads_->Set(v.handler_threads);
    handler_threads_busy_->Set(v.handler_threads_busy);
    handler_queue_->Set(static_cast<double>(v.handler_queue_length));
    uploads_open_->Set(static_cast<double>(v.resumable_uploads_open));
    banned_addresses_->Set(static_cast<double>(v.defender_banned_addresses));
    for (const ScrapeValues::Isolated& op : v.isolated) {
      const prom::Labels labels{{"operation", op.operation}};
      isolated_up_.Add(labels).Set(op.up ? 1 : 0);
      isolated_workers_.Add(labels).Set(op.workers);
      auto event = [&](const char* name, std::uint64_t n) {
        isolated_events_.Add({{"operation", op.operation}, {"event", name}})
            .Set(static_cast<double>(n));
      };
      event("started", op.starts);
      event("start_failed", op.start_failures);
      event("crashed", op.crashes);
    }
    operations_unhealthy_->Set(static_cast<double>(v.operations_unhealthy));
  }
  std::ostringstream out;
  prom::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace ops::core
