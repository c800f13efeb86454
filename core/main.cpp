// opserver: flags, configuration, plugins, run. Nothing else lives here.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <signal.h>
#include <CLI/CLI.hpp>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>

#include "auth/user_store.hpp"
#include "auth/user_store_factory.hpp"
#include "config/config.hpp"
#include "net/pid_file.hpp"
#include "net/server.hpp"
#include "opserver/proof.hpp"
#include "tls/server_context.hpp"

namespace {

using ops::core::Config;

int fail_with(const std::string& message) {
  std::fprintf(stderr, "opserver: %s\n", message.c_str());
  return 1;
}

int user_command(const Config& config, const std::string& action, const std::string& name,
                 const std::string& key_file) {
  auto made = ops::core::make_user_store(config);
  if (!made) return fail_with(made.error().message);
  ops::core::UserStore& store = **made;
  if (ops::Status st = store.open(false); !st) return fail_with(st.error().message);
  if (action == "list") {
    for (const std::string& user : store.names()) std::cout << user << "\n";
    return 0;
  }
  if (action == "remove") {
    if (ops::Status st = store.remove(name); !st) return fail_with(st.error().message);
    std::cout << "removed " << name << " (its files are kept)\n";
    return 0;
  }
  std::string key;
  if (!key_file.empty()) {
    std::ifstream in(key_file);
    if (!in || !std::getline(in, key)) return fail_with("cannot read a key from " + key_file);
  } else {
    key = ops::proof::random_hex(32);
  }
  std::error_code ec;
  std::filesystem::create_directories(config.storage_dir, ec);
  if (ops::Status st = store.add(name, key); !st) return fail_with(st.error().message);
  if (key_file.empty()) {
    std::cout << key << "\n";  // shown once; the store keeps it for the server
  } else {
    std::cout << "added " << name << "\n";
  }
  return 0;
}

// `opserver db migrate`: the PostgreSQL user store's schema, created or brought up to date.
int db_command(const Config& config) {
  auto report = ops::core::migrate_user_store(config);
  if (!report) return fail_with(report.error().message);
  std::printf("%s\n", report->c_str());
  return 0;
}

// `opserver reload`: SIGHUP to the server the pid file names. Whether the new configuration
// went into force is the server's to say, in its log.
int reload_command(const std::string& pid_file) {
  auto pid = ops::core::running_server_pid(pid_file);
  if (!pid) return fail_with(pid.error().message);
  if (::kill(*pid, SIGHUP) != 0) {
    return fail_with("cannot signal opserver (pid " + std::to_string(*pid) +
                     "): " + std::strerror(errno));
  }
  std::printf(
      "reload requested: sent SIGHUP to opserver (pid %d); its log says \"reload: generation N "
      "in force\" or why the new configuration was refused\n",
      static_cast<int>(*pid));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "opserver: an OPS/1 operation server. Operations come from plugin .so files listed in\n"
      "ops.json; clients authenticate with a mutual HMAC-SHA256 handshake.\n\n"
      "Examples:\n"
      "  opserver                               serve with config/server.json\n"
      "  opserver --listen 0.0.0.0:9000         serve on every interface\n"
      "  opserver --check-config                validate config and plugins, then exit\n"
      "  opserver --tls-listen 0.0.0.0:9443 --tls-cert server.crt --tls-key server.key\n"
      "                                         also serve over TLS (channel binding)\n"
      "  opserver user add alice                create a user and print its new key\n"
      "  opserver reload                        reload a running server (pid_file in its config)\n"
      "  opserver user list\n"
      "  opserver db migrate --config F         create/upgrade the PostgreSQL user store\n"};
  app.set_version_flag("--version", std::string(ops::core::kServerVersion));

  std::string config_path = "config/server.json";
  std::string listen, storage, state, plugins;
  bool check = false;
  std::string tls_listen, tls_cert, tls_key, tls_client_ca;
  bool proxy_protocol = false;
  app.add_option("--config", config_path,
                 "Server settings (JSON). It names the ops.json that lists the enabled "
                 "operations. A relative path inside a file is taken from that file's "
                 "directory.")
      ->capture_default_str();
  app.add_option("--listen", listen, "Address to listen on, HOST:PORT (port 0: any free port)");
  app.add_option("--storage", storage, "Storage root: each user's files live in <root>/<user>/");
  app.add_option("--state", state, "State directory: the user key store (users.json, 0600)");
  app.add_option("--plugins", plugins, "Directory of plugin .so files (overrides ops.json)");
  std::string pid_file;
  app.add_option("--pid-file", pid_file,
                 "Write the server's pid here while it runs (overrides \"pid_file\"); "
                 "`opserver reload` reads it");
  app.add_flag("--check-config", check,
               "Validate the configuration and load every plugin, then exit: 0 if all is well, "
               "1 with file:line:col and the reason if not");

  app.add_option("--tls-listen", tls_listen,
                 "Also listen for TLS on HOST:PORT (with --tls-cert and --tls-key; overrides "
                 "the \"tls\" block of the config)")
      ->group("TLS");
  app.add_option("--tls-cert", tls_cert, "TLS certificate chain, PEM, leaf first")->group("TLS");
  app.add_option("--tls-key", tls_key,
                 "TLS private key, PEM; refused unless only its owner can read it (chmod 600)")
      ->group("TLS");
  app.add_option("--tls-client-ca", tls_client_ca,
                 "Require client certificates signed by a CA in this PEM file (mutual TLS)")
      ->group("TLS");
  app.add_flag("--proxy-protocol", proxy_protocol,
               "The plain listener expects a PROXY protocol v2 header on every connection")
      ->group("TLS");

  std::string admin_listen, audit_log;
  app.add_option("--admin-listen", admin_listen,
                 "Serve /metrics (Prometheus), /healthz and /readyz over HTTP on HOST:PORT, or "
                 "PORT for 127.0.0.1:PORT (overrides admin_listen; off unless set)")
      ->group("Operating");
  app.add_option("--audit-log", audit_log,
                 "Append one JSON line per request and failed login to FILE (SIGUSR1 reopens "
                 "it; overrides audit_log)")
      ->group("Operating");

  std::string user_name, key_file;
  CLI::App* user =
      app.add_subcommand("user", "Manage users offline (the same store a running server uses)");
  user->require_subcommand(1);
  CLI::App* add = user->add_subcommand("add", "Create a user; prints a new 256-bit key once");
  add->add_option("name", user_name, "User name, ^[a-z_][a-z0-9_.-]{0,31}$")->required();
  add->add_option("--key-file", key_file, "Use the key in this file instead of generating one");
  CLI::App* list = user->add_subcommand("list", "List user names");
  CLI::App* remove = user->add_subcommand("remove", "Remove a user (its files are kept)");
  remove->add_option("name", user_name, "User name")->required();

  CLI::App* db = app.add_subcommand("db", "The PostgreSQL user store (\"user_store\")");
  db->require_subcommand(1);
  CLI::App* migrate = db->add_subcommand(
      "migrate",
      "Create the schema or bring it to this version (idempotent; safe to run on "
      "several nodes at once)");
  migrate->add_option("--config", config_path, "The server's settings, naming the database");

  CLI::App* reload = app.add_subcommand(
      "reload",
      "Reload the running server's configuration (SIGHUP through its pid file): run-time "
      "settings, ops.json, plugins, users, TLS certificates");
  reload->add_option("--pid-file", pid_file,
                     "The server's pid file (default: pid_file of --config)");
  reload->add_option("--config", config_path, "The server's settings, to find its pid_file");

  CLI11_PARSE(app, argc, argv);

  ops::core::ConfigOverrides overrides;
  if (!listen.empty()) overrides.listen = listen;
  if (!storage.empty()) overrides.storage_dir = storage;
  if (!state.empty()) overrides.state_dir = state;
  if (!plugins.empty()) overrides.plugin_dir = plugins;
  if (!tls_listen.empty()) overrides.tls.listen = tls_listen;
  if (!tls_cert.empty()) overrides.tls.cert = tls_cert;
  if (!tls_key.empty()) overrides.tls.key = tls_key;
  if (!tls_client_ca.empty()) overrides.tls.client_ca = tls_client_ca;
  if (proxy_protocol) overrides.proxy_protocol = true;
  if (!admin_listen.empty()) overrides.admin_listen = admin_listen;
  if (!audit_log.empty()) overrides.audit_log = audit_log;
  if (!pid_file.empty()) overrides.pid_file = pid_file;
  if (reload->parsed() && !pid_file.empty()) return reload_command(pid_file);
  auto config = ops::core::load_config(config_path, overrides);
  if (!config) return fail_with(config.error().message);
  if (reload->parsed()) {
    if (config->pid_file.empty()) {
      return fail_with(config_path +
                       " sets no \"pid_file\": cannot find the running server; "
                       "set one (and restart the server) or pass --pid-file");
    }
    return reload_command(config->pid_file.string());
  }

  if (migrate->parsed()) return db_command(*config);
  if (user->parsed()) {
    std::string action = add->parsed() ? "add" : list->parsed() ? "list" : "remove";
    return user_command(*config, action, user_name, key_file);
  }

  auto logger = spdlog::stderr_color_mt("opserver");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(config->log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  // §8: the TLS files (present, readable, key private and matching, certificate in its
  // validity period) are checked before anything else, at start-up and by --check-config.
  if (config->tls) {
    auto tls = ops::core::make_server_tls_context(*config->tls);
    if (!tls) return fail_with(tls.error().message);
  }

  if (check) {
    if (ops::Status st = ops::core::check_config(*config); !st)
      return fail_with(st.error().message);
    // The user store's key file (mode, format); the database itself is not contacted.
    if (auto store = ops::core::make_user_store(*config); !store) {
      return fail_with(store.error().message);
    }
    std::printf("configuration OK: %zu operation(s) enabled\n", config->operations.size());
    return 0;
  }

  // sendfile(2) on a socket the peer has closed raises SIGPIPE; we handle EPIPE instead.
  std::signal(SIGPIPE, SIG_IGN);
  // A write past RLIMIT_FSIZE raises SIGXFSZ, which would kill the server; ignored, the
  // write fails with EFBIG and the upload is answered payload_too_large.
  std::signal(SIGXFSZ, SIG_IGN);
  auto server = ops::core::Server::create(std::move(*config));
  if (!server) return fail_with(server.error().message);
  // A reload reads the same files with the same command-line overrides.
  (*server)->enable_reload(
      [config_path, overrides] { return ops::core::load_config(config_path, overrides); });
  return (*server)->run();
}
