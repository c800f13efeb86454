#include "net/server.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstring>
#include <thread>
#include <vector>

#include "auth/handshake.hpp"
#include "auth/user_services.hpp"
#include "auth/user_store.hpp"
#include "auth/user_store_factory.hpp"
#include "dispatch/handler_pool.hpp"
#include "dispatch/registry.hpp"
#include "isolation/supervisor.hpp"
#include "metrics/admin_server.hpp"
#include "metrics/audit_log.hpp"
#include "metrics/metrics.hpp"
#include "metrics/operation_health.hpp"
#include "net/await_tuple.hpp"
#include "net/defender.hpp"
#include "net/pg_ban_sync.hpp"
#include "net/pid_file.hpp"
#include "net/reload.hpp"
#include "net/sd_notify.hpp"
#include "net/server_context.hpp"
#include "net/session.hpp"
#include "net/tcp_transport.hpp"
#include "net/tls_listener.hpp"
#include "opserver/fd.hpp"
#include "plugin_host/lifecycle.hpp"
#include "plugin_host/plugin_loader.hpp"
#include "quota/usage_ledger_factory.hpp"
#include "storage/node_scratch.hpp"
#include "tls/server_context.hpp"

namespace ops::core {
namespace asio = boost::asio;
namespace fs = std::filesystem;
using asio::ip::tcp;

namespace {
// Runs the plugins' shutdown hooks (plugin_host/lifecycle.hpp) when Server::create fails
// after their init hooks ran; before the Impl, and the libraries with it, go.
struct PluginShutdownOnFailure {
  std::chrono::milliseconds grace;
  bool started = false;
  ~PluginShutdownOnFailure() {
    if (!started) (void)OpLifecycle::shutdown_all(grace);
  }
};

constexpr const char* kScratchName = ".ops-tmp";
// How often the server reports throttled log lines and considers trimming the heap.
constexpr std::chrono::seconds kHousekeepingTick{2};
// Connections that must have closed since the last tick before the heap is trimmed.
constexpr std::size_t kTrimAfterClosing = 1000;
// A handler thread beyond worker_threads ends after this long without work.
constexpr std::chrono::milliseconds kHandlerLinger{30000};

Error startup_error(const std::string& message) {
  return Error{ErrorCode::internal, message};
}

// Resumable uploads open now: their metadata files (*.meta) in <scratch>/uploads and its
// subdirectories, one level down. Read at scrape time only.
std::size_t count_open_uploads(int scratch_fd) {
  std::size_t count = 0;
  auto count_in = [&count](int dir_fd, const char* name, int depth, auto& self) -> void {
    int fd = ::openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return;
    DIR* dir = ::fdopendir(fd);
    if (dir == nullptr) {
      ::close(fd);
      return;
    }
    while (dirent* entry = ::readdir(dir)) {
      std::string_view n = entry->d_name;
      if (n == "." || n == "..") continue;
      if (entry->d_type == DT_DIR && depth > 0) {
        self(::dirfd(dir), entry->d_name, depth - 1, self);
      } else if (n.size() > 5 && n.ends_with(".meta")) {
        ++count;
      }
    }
    ::closedir(dir);
  };
  count_in(scratch_fd, "uploads", 1, count_in);
  return count;
}

bool is_inside(const fs::path& inner, const fs::path& outer) {
  std::error_code ec;
  fs::path a = fs::weakly_canonical(inner, ec);
  fs::path b = fs::weakly_canonical(outer, ec);
  auto [end, _] = std::mismatch(b.begin(), b.end(), a.begin(), a.end());
  return end == b.end();
}

// The CPUs this process may run on (taskset, cgroup cpusets), not every CPU of the
// machine: two I/O threads sharing one core only hand completions to each other.
unsigned usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) {
    return static_cast<unsigned>(CPU_COUNT(&set));
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

Result<tcp::endpoint> resolve_listen(asio::io_context& io, const Config& config) {
  boost::system::error_code ec;
  auto address = asio::ip::make_address(config.listen_host, ec);
  if (!ec) return tcp::endpoint(address, config.listen_port);
  tcp::resolver resolver(io);
  auto results = resolver.resolve(config.listen_host, std::to_string(config.listen_port),
                                  tcp::resolver::passive, ec);
  if (ec || results.empty()) {
    return startup_error("cannot resolve listen address " + config.listen_host + ": " +
                         ec.message());
  }
  return results.begin()->endpoint();
}

}  // namespace

struct Server::Impl {
  Config config;
  // Declared early so they are closed last, after everything that uses them.
  Fd storage_dir;  // the storage root, opened once
  Fd scratch_dir;  // <storage>/.ops-tmp
  // <storage>/.ops-tmp/node-<id>: this server's temporaries (storage/node_scratch.hpp).
  std::unique_ptr<NodeScratch> node_scratch;
  std::unique_ptr<UserStore> users;
  std::unique_ptr<Authenticator> authenticator;
  std::unique_ptr<SnapshotStore> snapshots;
  asio::io_context io;
  HandlerPool workers;
  // Accepting runs on its own thread and io_context. Besides keeping accept() off the
  // session threads, this puts the per-socket state Asio allocates at accept (and pools
  // for ever) in that thread's malloc arena, apart from the sessions' memory: so once
  // thousands of connections close, their memory is whole free pages that the heap
  // trim hands back, instead of pages each pinned by a pooled 168-byte object.
  asio::io_context accept_io{1};
  tcp::acceptor acceptor{accept_io};
  std::optional<TlsListener> tls;  // §8: the TLS listener, when configured
  asio::signal_set signals{io, SIGINT, SIGTERM};
  // SIGHUP: a reload (net/reload.hpp) on the reload thread, off the I/O threads; without
  // a config loader (in-process servers), only a log line instead of the default death.
  asio::signal_set hangups{io, SIGHUP};
  void wait_for_hangup() {
    hangups.async_wait([this](const boost::system::error_code& ec, int) {
      if (ec) return;
      if (reloader) {
        spdlog::info("SIGHUP: reloading the configuration");
        reloader->request();
      } else {
        spdlog::warn("SIGHUP: reload is not enabled; the running configuration stays in force");
      }
      wait_for_hangup();
    });
  }
  // Reload: what the server loaded at start (handed to the Reloader at run()), how to read
  // the configuration again, the hooks, and the TLS context new connections get.
  std::vector<LoadedOperation> plugins;
  std::function<Result<Config>()> config_loader;
  ReloadHooks reload_hooks;
  std::unique_ptr<Reloader> reloader;
  std::atomic<std::shared_ptr<asio::ssl::context>> tls_context;
  bool pid_file_written = false;
  std::unique_ptr<UserServices> services;
  std::unique_ptr<ServerContext> context;
  // Issue 15: metrics (always counted), the admin listener (when configured, on accept_io),
  // the defender, the audit log (when configured; SIGUSR1 reopens it).
  Metrics metrics;
  std::unique_ptr<AdminServer> admin;
  std::unique_ptr<Defender> defender;
  std::unique_ptr<AuditLog> audit;
  std::unique_ptr<PgBanSync> ban_sync;  // with the PostgreSQL store: bans shared (issue 17)
  std::atomic<bool> ready{false};       // plugins loaded and listeners bound, accepting
  // The operations' health hooks, asked for /readyz and the metrics (on the handler pool).
  std::unique_ptr<OperationHealth> health;
  asio::signal_set reopen_signal{io, SIGUSR1};
  void wait_for_reopen() {
    reopen_signal.async_wait([this](const boost::system::error_code& ec, int) {
      if (ec) return;
      if (audit) {
        spdlog::info("SIGUSR1: reopening the audit log");
        audit->reopen();
      }
      wait_for_reopen();
    });
  }

  explicit Impl(Config c)
      : config(std::move(c)),
        workers(config.worker_threads, config.max_worker_threads, kHandlerLinger) {}
  ~Impl() {
    reloader.reset();
    if (pid_file_written) remove_pid_file(config.pid_file);
  }

  // One loop per listener; `tls` chooses the transport made for each accepted socket.
  asio::awaitable<void> accept_loop(tcp::acceptor& from, bool tls);
  // The defender's verdict at accept, for listeners whose peer is the client itself.
  bool refuse_banned(const tcp::socket::native_handle_type fd, bool behind_proxy);
  asio::awaitable<void> housekeeping();
  asio::awaitable<void> stop_sequence();
  std::vector<std::shared_ptr<Session>> live_sessions();
};

std::vector<std::shared_ptr<Session>> Server::Impl::live_sessions() {
  std::vector<std::shared_ptr<Session>> out;
  std::lock_guard lock(context->sessions_mutex);
  for (auto& [raw, weak] : context->sessions) {
    if (auto s = weak.lock()) out.push_back(std::move(s));
  }
  return out;
}

bool Server::Impl::refuse_banned(const tcp::socket::native_handle_type fd, bool behind_proxy) {
  // Behind a PROXY header the peer is the balancer: the session checks the client's
  // address after the header instead (Session::handshake).
  if (behind_proxy || !defender || !defender->enabled()) return false;
  sockaddr_storage peer{};
  socklen_t length = sizeof peer;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) != 0) return false;
  Defender::Address address{};
  if (peer.ss_family == AF_INET) {
    // IPv4 as its IPv4-mapped IPv6 form, as the defender keeps it.
    address[10] = address[11] = 0xFF;
    std::memcpy(&address[12], &reinterpret_cast<const sockaddr_in&>(peer).sin_addr, 4);
  } else if (peer.ss_family == AF_INET6) {
    std::memcpy(address.data(), &reinterpret_cast<const sockaddr_in6&>(peer).sin6_addr, 16);
  } else {
    return false;
  }
  return defender->banned(address);
}

asio::awaitable<void> Server::Impl::accept_loop(tcp::acceptor& from, bool use_tls) {
  asio::steady_timer pause(accept_io);
  const bool behind_proxy = use_tls ? tls->settings.proxy_protocol : config.proxy_protocol;
  for (;;) {
    auto [ec, socket] = co_await from.async_accept(asio::make_strand(io), kAwaitTuple);
    if (context->stopping) co_return;
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      // EMFILE/ENFILE and friends: the connection waits in the backlog. Pause rather than
      // spin on an accept that cannot succeed until a descriptor frees up.
      spdlog::warn("accept failed: {}; pausing 100 ms", ec.message());
      pause.expires_after(std::chrono::milliseconds(100));
      co_await pause.async_wait(kAwaitTuple);
      continue;
    }
    if (refuse_banned(socket.native_handle(), behind_proxy)) {
      // Banned: closed before any work, no session, no TLS handshake.
      boost::system::error_code ignored;
      socket.close(ignored);
      metrics.on_connection_refused_banned();
      continue;
    }
    const auto snapshot = context->snapshots.current();
    const RuntimeSettings& settings = snapshot->settings;
    if (context->unauthenticated.load() >= settings.max_unauthenticated ||
        context->connections.load() >= settings.max_connections) {
      // §7: beyond the cap, closed at once.
      boost::system::error_code ignored;
      socket.close(ignored);
      metrics.on_connection_refused_limit();
      if (context->refused_log.admit()) {
        spdlog::warn(
            "connection refused: too many {} connections",
            context->connections.load() >= settings.max_connections ? "open" : "unauthenticated");
      }
      continue;
    }
    // Counted here, not when the session starts, so the caps above stay exact under a
    // burst (a connection still in its TLS handshake counts as unauthenticated, §8); the
    // session gives both back when it ends. It is created on its own strand, so its
    // memory comes from a session thread's arena (see accept_io).
    context->connections.fetch_add(1);
    context->unauthenticated.fetch_add(1);
    auto executor = socket.get_executor();
    asio::post(executor, [this, use_tls, socket = std::move(socket)]() mutable {
      std::unique_ptr<Transport> transport =
          use_tls ? make_tls_transport(std::move(socket), *tls, tls_context.load())
                  : std::make_unique<TcpTransport>(std::move(socket), config.proxy_protocol);
      std::make_shared<Session>(*context, std::move(transport))->start();
    });
  }
}

void Server::stop() {
  Impl& s = *impl_;
  asio::post(s.io, [&s] { asio::co_spawn(s.io, s.stop_sequence(), asio::detached); });
}

std::optional<MemoryPeer> Server::connect_in_memory() {
  Impl& s = *impl_;
  const auto snapshot = s.context->snapshots.current();
  if (s.context->stopping ||
      s.context->unauthenticated.load() >= snapshot->settings.max_unauthenticated ||
      s.context->connections.load() >= snapshot->settings.max_connections) {
    return std::nullopt;
  }
  s.context->connections.fetch_add(1);
  s.context->unauthenticated.fetch_add(1);
  auto [transport, peer] = make_memory_pipe(asio::make_strand(s.io));
  auto executor = transport->executor();
  asio::post(executor, [&s, transport = std::move(transport)]() mutable {
    std::make_shared<Session>(*s.context, std::move(transport))->start();
  });
  return std::move(peer);
}

asio::awaitable<void> Server::Impl::housekeeping() {
  asio::steady_timer tick(io);
  for (;;) {
    tick.expires_after(kHousekeepingTick);
    if (auto [ec] = co_await tick.async_wait(kAwaitTuple); ec || context->stopping) co_return;
    context->preauth_log.report();
    context->refused_log.report();
    // glibc keeps what thousands of closed connections freed for reuse, so the RSS
    // would stay at its peak for ever; once many have gone, hand it back to the system
    // (on a handler thread: trimming takes milliseconds).
    const std::size_t open = context->connections.load();
    const std::size_t peak = context->connections_peak.exchange(open);
    if (peak >= open + kTrimAfterClosing || (open == 0 && peak >= kTrimAfterClosing / 10)) {
      workers.submit([] { ::malloc_trim(0); });
    }
  }
}

asio::awaitable<void> Server::Impl::stop_sequence() {
  context->stopping = true;
  notify_stopping();
  asio::post(accept_io, [this] {
    boost::system::error_code ignored;
    acceptor.close(ignored);
    if (tls) tls->acceptor->close(ignored);
  });
  for (auto& session : live_sessions()) session->request_stop();

  asio::steady_timer tick(io);
  auto give_up = std::chrono::steady_clock::now() + config.shutdown_grace;
  while (context->connections.load() > 0 && std::chrono::steady_clock::now() < give_up) {
    tick.expires_after(std::chrono::milliseconds(20));
    co_await tick.async_wait(kAwaitTuple);
  }
  if (context->connections.load() > 0) {
    spdlog::warn("grace period over: closing {} connection(s)", context->connections.load());
    for (auto& session : live_sessions()) session->force_close();
    auto hard = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (context->connections.load() > 0 && std::chrono::steady_clock::now() < hard) {
      tick.expires_after(std::chrono::milliseconds(20));
      co_await tick.async_wait(kAwaitTuple);
    }
  }
  io.stop();
}

Result<std::unique_ptr<Server>> Server::create(Config config) {
  auto impl = std::make_unique<Impl>(std::move(config));
  Config& cfg = impl->config;
  // A start that fails once plugins' init hooks ran gives their shutdown hooks the grace
  // period before the process exits (docs/PLUGINS.md, Lifecycle hooks).
  PluginShutdownOnFailure shutdown_on_failure{cfg.shutdown_grace};

  // Plugins and the listener first: a start that fails on them changes nothing on disk.
  auto loaded = load_plugins(cfg.plugin_dir, isolated_plugin_files(cfg));
  if (!loaded) return loaded.error();
  impl->plugins = *loaded;  // a reload reuses the ones whose file has not changed
  auto registry = Registry::build(cfg, std::move(*loaded));
  if (!registry) return registry.error();
  impl->metrics.on_plugin_load(true, true);
  auto first = std::make_shared<Snapshot>();
  first->settings = cfg;  // the RuntimeSettings part
  first->registry = std::shared_ptr<const Registry>(std::move(*registry));
  first->generation = 1;
  impl->snapshots = std::make_unique<SnapshotStore>(std::move(first));
  impl->health = std::make_unique<OperationHealth>(
      *impl->snapshots,
      [raw = impl.get()](std::function<void()> job) { raw->workers.submit(std::move(job)); });

  auto endpoint = resolve_listen(impl->io, cfg);
  if (!endpoint) return endpoint.error();
  boost::system::error_code bec;
  impl->acceptor.open(endpoint->protocol(), bec);
  if (!bec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), bec);
  if (!bec) impl->acceptor.bind(*endpoint, bec);
  if (!bec) impl->acceptor.listen(asio::socket_base::max_listen_connections, bec);
  if (!bec) {
    // Accepted sockets inherit the receive timestamps (§12 counts a deadline from a
    // header's arrival; TcpTransport reads them). Set once here, the kernel's timestamp
    // switch stays on while the listener lives instead of flipping per connection.
    int one = 1;
    ::setsockopt(impl->acceptor.native_handle(), SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
  }
  if (bec) {
    return startup_error("cannot listen on " + cfg.listen_host + ":" +
                         std::to_string(cfg.listen_port) + ": " + bec.message());
  }
  if (cfg.tls) {
    auto listener = open_tls_listener(impl->accept_io, *cfg.tls);
    if (!listener) return listener.error();
    impl->tls = std::move(*listener);
    impl->tls_context.store(impl->tls->context);
  }
  if (cfg.admin_listen) {
    Impl* raw = impl.get();
    auto admin = AdminServer::open(
        impl->accept_io, cfg.admin_listen->host, cfg.admin_listen->port, impl->metrics,
        [raw] { return raw->ready.load() && !(raw->context && raw->context->stopping.load()); });
    if (!admin) return admin.error();
    impl->admin = std::move(*admin);
    impl->admin->set_unhealthy([raw] { return raw->health->unhealthy(); });
  }
  if (cfg.audit_log) {
    auto audit = AuditLog::open(*cfg.audit_log, &impl->metrics);
    if (!audit) return audit.error();
    impl->audit = std::move(*audit);
  }
  impl->defender = std::make_unique<Defender>(cfg.defender, &impl->metrics);

  // Storage and state: created if missing; the key store never inside the storage root.
  std::error_code ec;
  fs::create_directories(cfg.storage_dir, ec);
  if (ec)
    return startup_error("cannot create storage directory " + cfg.storage_dir.string() + ": " +
                         ec.message());
  if (is_inside(cfg.state_dir, cfg.storage_dir)) {
    return startup_error("the state directory " + cfg.state_dir.string() +
                         " must not be inside the storage directory " + cfg.storage_dir.string());
  }
  impl->storage_dir.reset(::open(cfg.storage_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  const int storage_fd = impl->storage_dir.get();
  if (storage_fd < 0 || ::faccessat(storage_fd, ".", W_OK, 0) != 0) {
    return startup_error("storage directory " + cfg.storage_dir.string() +
                         " is not a writable directory");
  }
  if (::mkdirat(storage_fd, kScratchName, 0700) != 0 && errno != EEXIST) {
    return startup_error("cannot create " + (cfg.storage_dir / kScratchName).string() + ": " +
                         std::strerror(errno));
  }
  impl->scratch_dir.reset(
      ::openat(storage_fd, kScratchName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  const int scratch_fd = impl->scratch_dir.get();
  if (scratch_fd < 0) {
    return startup_error("cannot open " + (cfg.storage_dir / kScratchName).string());
  }
  // This server's own part of the scratch area, shared with the other servers (nodes) that
  // use this storage directory: opening it removes this node's crash leftovers only.
  {
    const std::string node_id = cfg.node_id.empty() ? default_node_id(cfg.state_dir) : cfg.node_id;
    auto node = NodeScratch::open(scratch_fd, node_id);
    if (!node) return std::move(node).error();
    impl->node_scratch = std::move(*node);
    spdlog::info("node id {} (temporaries in {}/{})", node_id, kScratchName,
                 impl->node_scratch->dir_name());
  }
  const int node_scratch_fd = impl->node_scratch->fd();

  auto users = make_user_store(cfg);  // "user_store" in server.json (issue 17)
  if (!users) return std::move(users).error();
  impl->users = std::move(*users);
  std::optional<fs::path> admin_key;
  if (Status st = impl->users->open(true, &admin_key); !st) return st.error();
  if (admin_key) {
    spdlog::warn("created user admin; its key is in {} (mode 0600)", admin_key->string());
  }
  impl->authenticator = std::make_unique<Authenticator>(*impl->users, kServerVersion);

  impl->context = std::unique_ptr<ServerContext>(
      new ServerContext{impl->config, *impl->snapshots, *impl->users, *impl->authenticator,
                        impl->workers, storage_fd, scratch_fd});
  // Usage and reservations, and the defender's bans: shared through PostgreSQL when the
  // user store is (issue 17), else this process's own.
  auto ledger = make_usage_ledger(cfg, storage_fd);
  if (!ledger) return std::move(ledger).error();
  auto ban_sync = make_ban_sync(cfg, *impl->defender);
  if (!ban_sync) return std::move(ban_sync).error();
  impl->ban_sync = std::move(*ban_sync);
  impl->context->node_scratch_fd = node_scratch_fd;
  impl->services = std::make_unique<UserServices>(
      *impl->users, storage_fd, node_scratch_fd,
      UserDefaults{cfg.default_quota_bytes, cfg.default_quota_files,
                   cfg.default_upload_bytes_per_second, cfg.default_download_bytes_per_second,
                   cfg.payload_min_rate},
      std::move(*ledger));
  impl->context->services = impl->services.get();
  impl->node_scratch->start_janitor();
  impl->context->metrics = &impl->metrics;
  impl->context->defender = impl->defender.get();
  impl->context->audit = impl->audit.get();
  {
    Impl* raw = impl.get();
    impl->metrics.set_sampler([raw](ScrapeValues& v) {
      v.connections_open = raw->context->connections.load();
      v.connections_unauthenticated = raw->context->unauthenticated.load();
      const HandlerPool::Load load = raw->workers.load();
      v.handler_threads = load.threads;
      v.handler_threads_busy = load.busy;
      v.handler_queue_length = load.queued;
      v.resumable_uploads_open = count_open_uploads(raw->scratch_dir.get());
      v.defender_banned_addresses = raw->defender->banned_count();
      const auto snapshot = raw->snapshots->current();
      for (const auto& [name, op] : snapshot->registry->operations()) {
        if (auto stats = op.backend->worker_stats()) {
          v.isolated.push_back({name, !stats->down, stats->workers, stats->starts,
                                stats->start_failures, stats->crashes});
        }
      }
      v.operations_unhealthy = raw->health->unhealthy(false).size();
    });
  }
  if (!cfg.pid_file.empty()) {
    if (Status st = write_pid_file(cfg.pid_file); !st) return st.error();
    impl->pid_file_written = true;
  }
  shutdown_on_failure.started = true;
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() {
  // The last snapshot goes with the server, and with it the worker pools of isolated
  // operations: their workers are asked to exit (running their plugins' shutdown hooks)
  // and reaped before the process ends, instead of being killed as orphans.
  impl_.reset();
  isolation::drain_retired_workers(std::chrono::milliseconds(5000));
}

int Server::run() {
  Impl& s = *impl_;
  auto local = s.acceptor.local_endpoint();
  std::string ops;
  for (const auto& [name, op] : s.snapshots->current()->registry->operations())
    ops += (ops.empty() ? "" : ", ") + name;
  spdlog::info("operations: describe{}{}", ops.empty() ? "" : ", ", ops);
  if (s.admin) {
    auto admin = s.admin->local_endpoint();
    spdlog::info("admin listening on {}:{} (/metrics, /healthz, /readyz)",
                 admin.address().to_string(), admin.port());
    s.admin->start();
  }
  if (s.config.defender.enabled) {
    spdlog::info("defender on: {} failed handshakes within {} s ban an address for {} s",
                 s.config.defender.threshold, s.config.defender.observation.count(),
                 s.config.defender.ban_time.count());
  }

  // Plugins are loaded and every listener is bound: connections from here on wait in the
  // backlog at most until the accept loops below start.
  s.ready = true;
  spdlog::info("opserver listening on {}:{}", local.address().to_string(), local.port());

  if (s.tls) spdlog::info("{}", tls_listening_line(*s.tls));
  asio::co_spawn(s.accept_io, s.accept_loop(s.acceptor, false), asio::detached);
  if (s.tls) asio::co_spawn(s.accept_io, s.accept_loop(*s.tls->acceptor, true), asio::detached);
  asio::co_spawn(s.io, s.housekeeping(), asio::detached);
  if (s.config_loader) {
    ReloadTarget target;
    target.load_config = s.config_loader;
    target.running = &s.config;
    target.snapshots = s.snapshots.get();
    target.users = s.users.get();
    if (s.tls) {
      target.build_tls_context = [](const TlsSettings& settings) {
        return make_server_tls_context(settings);
      };
      target.install_tls_context = [&s](std::shared_ptr<asio::ssl::context> context) {
        s.tls_context.store(std::move(context));
      };
    }
    // The server's own listeners of a reload: systemd (Type=notify) and the metrics,
    // chained before whatever a caller of reload_hooks() set.
    ReloadHooks hooks = s.reload_hooks;
    hooks.notify_reloading = [outer = hooks.notify_reloading] {
      notify_reloading();
      if (outer) outer();
    };
    hooks.notify_ready = [outer = hooks.notify_ready] {
      notify_ready();
      if (outer) outer();
    };
    hooks.finished = [&s, outer = hooks.finished](bool applied, std::uint64_t generation,
                                                  const std::string& reason) {
      s.metrics.on_reload(applied);
      if (outer) outer(applied, generation, reason);
    };
    s.reloader = std::make_unique<Reloader>(std::move(target), std::move(s.plugins), hooks);
  }
  s.wait_for_hangup();
  s.wait_for_reopen();
  s.signals.async_wait([&s](const boost::system::error_code& ec, int signal) {
    if (ec) return;
    spdlog::info("signal {}: stopping (grace {} ms)", signal, s.config.shutdown_grace.count());
    asio::co_spawn(s.io, s.stop_sequence(), asio::detached);
  });
  // Plugins are loaded and every listener is bound (both in create()): systemd may now
  // start what depends on us (Type=notify).
  notify_ready();

  unsigned threads = s.config.io_threads ? s.config.io_threads : usable_cpus();
  if (threads == 0) threads = 1;
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&s] { s.io.run(); });
  std::thread accepting([&s] { s.accept_io.run(); });
  s.io.run();
  s.accept_io.stop();
  accepting.join();
  for (auto& t : pool) t.join();
  s.reloader.reset();  // waits for a reload under way
  if (s.pid_file_written) remove_pid_file(s.config.pid_file);
  s.pid_file_written = false;

  // A handler that never returns must not keep the process alive past the grace period.
  s.workers.stop();
  if (!s.workers.join_for(std::chrono::seconds(2))) {
    spdlog::error("a plugin handler did not return; exiting without it");
    spdlog::shutdown();
    std::_Exit(0);
  }
  // No call runs any more: every initialised operation's shutdown hook (docs/PLUGINS.md,
  // Lifecycle hooks), in parallel, bounded by the grace period.
  if (!OpLifecycle::shutdown_all(s.config.shutdown_grace)) {
    spdlog::error("a plugin shutdown hook did not return within {} ms; exiting without it",
                  s.config.shutdown_grace.count());
    spdlog::shutdown();
    std::_Exit(0);
  }
  spdlog::info("stopped");
  return 0;
}

void Server::enable_reload(std::function<Result<Config>()> load_config) {
  impl_->config_loader = std::move(load_config);
}

ReloadHooks& Server::reload_hooks() {
  return impl_->reload_hooks;
}

void Server::request_reload() {
  if (impl_->reloader) impl_->reloader->request();
}

const ReloadCounters* Server::reload_counters() const {
  return impl_->reloader ? &impl_->reloader->counters() : nullptr;
}

Status check_config(const Config& config) {
  auto loaded = load_plugins(config.plugin_dir, isolated_plugin_files(config));
  if (!loaded) return loaded.error();
  auto registry = Registry::build(config, std::move(*loaded));
  // The check ran the init hooks: the shutdown hooks run before it returns.
  (void)OpLifecycle::shutdown_all(config.shutdown_grace);
  if (!registry) return registry.error();
  return ok_status();
}

}  // namespace ops::core
