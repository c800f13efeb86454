#include "net/reload.hpp"

#include <spdlog/spdlog.h>

#include "auth/user_store.hpp"
#include "dispatch/registry.hpp"

namespace ops::core {

std::vector<std::string> settings_needing_restart(const Config& running, const Config& next) {
  std::vector<std::string> out;
  auto differ = [&out](bool changed, const char* name) {
    if (changed) out.emplace_back(name);
  };
  differ(running.listen_host != next.listen_host || running.listen_port != next.listen_port,
         "listen");
  differ(running.storage_dir != next.storage_dir, "storage_dir");
  differ(running.state_dir != next.state_dir, "state_dir");
  differ(running.io_threads != next.io_threads, "io_threads");
  differ(running.worker_threads != next.worker_threads, "worker_threads");
  differ(running.max_worker_threads != next.max_worker_threads, "max_worker_threads");
  differ(running.shutdown_grace != next.shutdown_grace, "shutdown_grace_ms");
  differ(running.log_level != next.log_level, "log_level");
  differ(running.pid_file != next.pid_file, "pid_file");
  differ(running.proxy_protocol != next.proxy_protocol, "proxy_protocol");
  // User defaults live in UserServices, made once at start.
  differ(running.default_quota_bytes != next.default_quota_bytes, "default_quota_bytes");
  differ(running.default_quota_files != next.default_quota_files, "default_quota_files");
  differ(running.default_upload_bytes_per_second != next.default_upload_bytes_per_second,
         "default_upload_bytes_per_second");
  differ(running.default_download_bytes_per_second != next.default_download_bytes_per_second,
         "default_download_bytes_per_second");
  // TLS: the certificate, key, client CA and minimum version are in the context, which a
  // reload rebuilds; the listener and what each connection is told are not.
  const bool had = running.tls.has_value(), has = next.tls.has_value();
  differ(had != has, "tls");
  if (had && has) {
    differ(running.tls->listen_host != next.tls->listen_host ||
               running.tls->listen_port != next.tls->listen_port,
           "tls.listen");
    differ(running.tls->channel_binding != next.tls->channel_binding, "tls.channel_binding");
    differ(running.tls->proxy_protocol != next.tls->proxy_protocol, "tls.proxy_protocol");
    differ(running.tls->handshake_threads != next.tls->handshake_threads, "tls.handshake_threads");
  }
  return out;
}

Reloader::Reloader(ReloadTarget target, std::vector<LoadedOperation> plugins, ReloadHooks hooks)
    : target_(std::move(target)), plugins_(std::move(plugins)), hooks_(std::move(hooks)) {
  thread_ = std::thread([this] { thread_main(); });
}

Reloader::~Reloader() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Reloader::request() {
  {
    std::lock_guard lock(mutex_);
    pending_ = true;
  }
  wake_.notify_all();
}

void Reloader::thread_main() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return pending_ || stopping_; });
    if (stopping_) return;
    pending_ = false;  // requests from here on ask for another reload after this one
    lock.unlock();
    (void)reload_now();
    lock.lock();
  }
}

Status Reloader::reload_now() {
  std::lock_guard one_at_a_time(run_mutex_);
  if (hooks_.notify_reloading) hooks_.notify_reloading();
  Status result = reload_once();
  const std::uint64_t generation = target_.snapshots->current()->generation;
  if (result) {
    counters_.applied.fetch_add(1);
  } else {
    counters_.refused.fetch_add(1);
    spdlog::error("reload refused, generation {} stays in force: {}", generation,
                  result.error().message);
  }
  if (hooks_.finished)
    hooks_.finished(result.ok(), generation, result ? "" : result.error().message);
  if (hooks_.notify_ready) hooks_.notify_ready();
  return result;
}

Status Reloader::reload_once() {
  // 1. Everything is read and checked before anything changes: the same checks as
  //    --check-config (both files, every plugin, every enabled operation bound).
  auto next = target_.load_config();
  if (!next) return next.error();
  const Config& running = *target_.running;

  std::shared_ptr<boost::asio::ssl::context> tls_context;
  if (next->tls && target_.build_tls_context) {
    auto built = target_.build_tls_context(*next->tls);
    if (!built) return built.error();
    tls_context = std::move(*built);
  }

  PluginReload how{&plugins_, isolated_plugin_files(*next)};
  auto loaded = load_plugins(next->plugin_dir, how);
  if (!loaded) return loaded.error();
  auto registry = Registry::build(*next, *loaded);
  if (!registry) return registry.error();

  // 2. Into force: new requests take the new snapshot; running ones keep theirs.
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->settings = *next;  // the RuntimeSettings part
  snapshot->registry = std::shared_ptr<const Registry>(std::move(*registry));
  snapshot->generation = target_.snapshots->current()->generation + 1;
  const std::uint64_t generation = snapshot->generation;
  std::string ops = "describe";
  for (const auto& [name, op] : snapshot->registry->operations()) ops += ", " + name;
  target_.snapshots->publish(std::move(snapshot));
  // The libraries no enabled operation uses any more go with this (or, for ones a running
  // call or an older snapshot holds, when those end).
  plugins_ = std::move(*loaded);
  if (tls_context && target_.install_tls_context) target_.install_tls_context(tls_context);
  if (target_.users != nullptr) (void)target_.users->names();  // re-reads users.json

  const auto restart = settings_needing_restart(running, *next);
  if (!restart.empty()) {
    std::string names;
    for (const std::string& n : restart) names += (names.empty() ? "" : ", ") + n;
    spdlog::warn("reload: changed settings need a restart and keep their running values: {}",
                 names);
  }
  spdlog::info("reload: generation {} in force (ops: {})", generation, ops);
  return ok_status();
}

}  // namespace ops::core
