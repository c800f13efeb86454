#include "config/config.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <charconv>
#include <fstream>
#include <set>
#include <sstream>

#include "proto/strict_json.hpp"
#include "storage/node_scratch.hpp"

namespace ops::core {
namespace fs = std::filesystem;

bool OperationPolicy::allows(std::string_view user) const {
  for (const std::string& name : allow) {
    if (name == "*" || name == user) return true;
  }
  return false;
}

Status parse_listen(std::string_view text, std::string& host, std::uint16_t& port) {
  std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) {
    return fail(ErrorCode::invalid_args, "expected HOST:PORT, got \"" + std::string(text) + "\"");
  }
  std::string_view h = text.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  std::string_view p = text.substr(colon + 1);
  unsigned value = 0;
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), value);
  if (ec != std::errc() || end != p.data() + p.size() || value > 65535) {
    return fail(ErrorCode::invalid_args, "invalid port in \"" + std::string(text) + "\"");
  }
  host = std::string(h);
  port = static_cast<std::uint16_t>(value);
  return ok_status();
}

namespace {

// A path written in a configuration file, taken from that file's directory when relative.
fs::path from_file_dir(const fs::path& file, const fs::path& path) {
  if (path.empty() || path.is_absolute()) return path;
  return (file.parent_path() / path).lexically_normal();
}

// One JSON file being validated: knows where each value sits, for file:line:col errors.
class ConfigFile {
 public:
  explicit ConfigFile(fs::path path) : path_(std::move(path)) {}

  Status load() {
    std::ifstream in(path_, std::ios::binary);
    if (!in) {
      // The absolute path: a relative one means little to someone in another directory.
      std::error_code ec;
      const fs::path tried = fs::absolute(path_, ec);
      return fail(ErrorCode::not_found,
                  (ec ? path_ : tried).lexically_normal().string() + ": cannot open the file");
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    text_ = ss.str();
    if (text_.find_first_not_of(" \t\r\n") == std::string::npos) {
      return fail(ErrorCode::invalid_args, path_.string() + ":1:1: the file is empty");
    }
    // Configs may end with a newline; the header rule against trailing bytes is for frames.
    std::string_view body = text_;
    while (!body.empty() && (body.back() == '\n' || body.back() == '\r' || body.back() == ' ' ||
                             body.back() == '\t')) {
      body.remove_suffix(1);
    }
    JsonError error;
    StrictJsonOptions options;
    options.offsets = &offsets_;
    if (!parse_strict_json(body, doc_, error, options)) return error_at(error.offset, error.reason);
    if (!doc_.IsObject()) return error_at(0, "the top level must be a JSON object");
    return ok_status();
  }

  const rapidjson::Document& doc() const { return doc_; }
  const fs::path& path() const { return path_; }

  Error error_at(std::size_t offset, const std::string& reason) const {
    LineCol lc = line_col(text_, offset);
    return Error{ErrorCode::invalid_args, path_.string() + ":" + std::to_string(lc.line) + ":" +
                                              std::to_string(lc.col) + ": " + reason};
  }
  Error error_at(const std::string& pointer, const std::string& reason) const {
    auto it = offsets_.find(pointer);
    return error_at(it == offsets_.end() ? 0 : it->second, reason);
  }

 private:
  fs::path path_;
  std::string text_;
  rapidjson::Document doc_;
  std::map<std::string, std::size_t> offsets_;
};

// Reads typed members of one object, refusing unknown ones (a typo such as "alow" is an
// error, not a silently ignored key).
class ObjectReader {
 public:
  ObjectReader(const ConfigFile& file, const rapidjson::Value& object, std::string pointer)
      : file_(file), object_(object), pointer_(std::move(pointer)) {}

  Status check_known(std::initializer_list<std::string_view> known) const {
    for (auto it = object_.MemberBegin(); it != object_.MemberEnd(); ++it) {
      std::string_view name(it->name.GetString(), it->name.GetStringLength());
      bool found = false;
      for (std::string_view k : known) found = found || k == name;
      if (!found) {
        return file_.error_at(member_pointer(name),
                              "unknown setting \"" + std::string(name) + "\"");
      }
    }
    return ok_status();
  }

  const rapidjson::Value* find(std::string_view name) const {
    auto it = object_.FindMember(rapidjson::Value(rapidjson::StringRef(name.data(), name.size())));
    return it == object_.MemberEnd() ? nullptr : &it->value;
  }

  Status string(std::string_view name, std::string& out) const {
    const rapidjson::Value* v = find(name);
    if (!v) return ok_status();
    if (!v->IsString() || v->GetStringLength() == 0) {
      return bad(name, "must be a non-empty string");
    }
    out.assign(v->GetString(), v->GetStringLength());
    return ok_status();
  }

  Status path(std::string_view name, fs::path& out) const {
    std::string s;
    if (Status st = string(name, s); !st) return st;
    if (!s.empty()) out = s;
    return ok_status();
  }

  template <class T>
  Status integer(std::string_view name, T& out, std::uint64_t min, std::uint64_t max) const {
    const rapidjson::Value* v = find(name);
    if (!v) return ok_status();
    if (!v->IsUint64() || v->GetUint64() < min || v->GetUint64() > max) {
      return bad(name,
                 "must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
    }
    out = static_cast<T>(v->GetUint64());
    return ok_status();
  }

  Status millis(std::string_view name, std::chrono::milliseconds& out, std::uint64_t min) const {
    std::uint64_t value = static_cast<std::uint64_t>(out.count());
    if (Status st = integer(name, value, min, 7ull * 24 * 3600 * 1000); !st) return st;
    out = std::chrono::milliseconds(value);
    return ok_status();
  }

  Error bad(std::string_view name, const std::string& reason) const {
    return file_.error_at(member_pointer(name), "\"" + std::string(name) + "\" " + reason);
  }
  std::string member_pointer(std::string_view name) const {
    return pointer_ + "/" + std::string(name);
  }

 private:
  const ConfigFile& file_;
  const rapidjson::Value& object_;
  std::string pointer_;
};

// "isolation", "plugin", "exec", "limits" and "run_as" of one operation.
Status load_isolation(const ConfigFile& file, const ObjectReader& op, const std::string& name,
                      OperationPolicy& policy) {
  std::string mode = "in_process";
  if (Status st = op.string("isolation", mode); !st) return st;
  if (mode != "in_process" && mode != "process") {
    return op.bad("isolation", "must be \"in_process\" (the default) or \"process\"");
  }
  const rapidjson::Value* exec = op.find("exec");
  const bool isolated = mode == "process" || exec != nullptr;
  if (!isolated) {
    for (const char* key : {"plugin", "limits", "run_as"}) {
      if (op.find(key)) {
        return op.bad(key,
                      "applies only to an isolated operation (\"isolation\": \"process\" "
                      "or \"exec\")");
      }
    }
    return ok_status();
  }
  if (op.find("isolation") && mode == "in_process") {
    return op.bad("isolation", "cannot be \"in_process\" for an \"exec\" operation");
  }
  IsolationSpec spec;
  spec.working_dir = fs::absolute(file.path()).parent_path();
  if (exec != nullptr) {
    if (op.find("plugin")) return op.bad("plugin", "cannot be combined with \"exec\"");
    if (!exec->IsArray() || exec->Empty()) {
      return op.bad("exec", "must be a non-empty array: the program and its arguments");
    }
    for (rapidjson::SizeType i = 0; i < exec->Size(); ++i) {
      const rapidjson::Value& arg = (*exec)[i];
      if (!arg.IsString() || (i == 0 && arg.GetStringLength() == 0) ||
          std::string_view(arg.GetString(), arg.GetStringLength()).find('\0') !=
              std::string_view::npos) {
        return file.error_at(op.member_pointer("exec") + "/" + std::to_string(i),
                             "each \"exec\" entry must be a string without NUL bytes");
      }
      spec.exec.emplace_back(arg.GetString(), arg.GetStringLength());
    }
    if (spec.exec[0].find('/') != std::string::npos) {
      spec.exec[0] = (spec.working_dir / spec.exec[0]).lexically_normal().string();
    }
  } else {
    if (Status st = op.path("plugin", spec.plugin); !st) return st;
    if (spec.plugin.empty()) {
      return file.error_at(op.member_pointer("isolation"),
                           "operation \"" + name +
                               "\" runs isolated, so it needs \"plugin\": the .so file (in "
                               "plugin_dir) that provides it");
    }
  }
  if (Status st = op.string("run_as", spec.run_as); !st) return st;
  if (const rapidjson::Value* limits = op.find("limits")) {
    if (!limits->IsObject()) return op.bad("limits", "must be an object");
    ObjectReader l(file, *limits, op.member_pointer("limits"));
    if (Status st = l.check_known(
            {"memory_mb", "cpu_seconds", "open_files", "max_concurrent", "max_calls"});
        !st) {
      return st;
    }
    std::uint64_t value = 0;
    if (l.find("memory_mb")) {
      if (Status st = l.integer("memory_mb", value, 16, 1u << 24); !st) return st;
      spec.limits.memory_bytes = value << 20;
    }
    if (l.find("cpu_seconds")) {
      if (Status st = l.integer("cpu_seconds", value, 1, 7 * 24 * 3600); !st) return st;
      spec.limits.cpu_seconds = value;
    }
    if (l.find("open_files")) {
      if (Status st = l.integer("open_files", value, 16, 1u << 20); !st) return st;
      spec.limits.open_files = value;
    }
    if (Status st = l.integer("max_concurrent", spec.limits.max_concurrent, 1, 1024); !st) {
      return st;
    }
    if (Status st = l.integer("max_calls", spec.limits.max_calls, 0, 1ull << 53); !st) return st;
  }
  policy.isolation = std::move(spec);
  return ok_status();
}

Status load_operations(const ConfigFile& file, Config& config) {
  ObjectReader top(file, file.doc(), "");
  if (Status st = top.check_known({"plugin_dir", "operations"}); !st) return st;
  if (Status st = top.path("plugin_dir", config.plugin_dir); !st) return st;
  if (!top.find("plugin_dir")) return file.error_at(0, "missing \"plugin_dir\"");
  config.plugin_dir = from_file_dir(file.path(), config.plugin_dir);
  const rapidjson::Value* ops = top.find("operations");
  if (!ops) return file.error_at(0, "missing \"operations\"");
  if (!ops->IsObject()) return top.bad("operations", "must be an object of operation names");

  for (auto it = ops->MemberBegin(); it != ops->MemberEnd(); ++it) {
    std::string name(it->name.GetString(), it->name.GetStringLength());
    std::string pointer = "/operations/" + name;
    if (name.empty()) return file.error_at(pointer, "an operation name must not be empty");
    if (name == "describe") {
      return file.error_at(pointer, "\"describe\" is built in and always enabled");
    }
    if (!it->value.IsObject()) {
      return file.error_at(pointer, "operation \"" + name + "\" must be an object");
    }
    ObjectReader op(file, it->value, pointer);
    if (Status st = op.check_known({"allow", "max_payload", "timeout_ms", "settings", "isolation",
                                    "plugin", "exec", "limits", "run_as"});
        !st) {
      return st;
    }
    OperationPolicy policy;
    const rapidjson::Value* allow = op.find("allow");
    if (!allow) {
      return file.error_at(pointer, "operation \"" + name + "\" needs an \"allow\" list");
    }
    if (!allow->IsArray()) {
      return op.bad("allow", "must be an array of user names or \"*\", e.g. [\"*\"]");
    }
    for (rapidjson::SizeType i = 0; i < allow->Size(); ++i) {
      const rapidjson::Value& user = (*allow)[i];
      if (!user.IsString() || user.GetStringLength() == 0) {
        return file.error_at(pointer + "/allow/" + std::to_string(i),
                             "each \"allow\" entry must be a user name or \"*\"");
      }
      policy.allow.emplace_back(user.GetString(), user.GetStringLength());
    }
    if (op.find("max_payload")) {
      std::uint64_t value = 0;
      if (Status st = op.integer("max_payload", value, 0, (std::uint64_t{1} << 53) - 1); !st) {
        return st;
      }
      policy.max_payload = value;
    }
    if (op.find("timeout_ms")) {
      std::chrono::milliseconds timeout{0};
      if (Status st = op.millis("timeout_ms", timeout, 1); !st) return st;
      policy.timeout = timeout;
    }
    if (const rapidjson::Value* settings = op.find("settings")) {
      if (!settings->IsObject()) return op.bad("settings", "must be an object");
      policy.settings_json = json::to_string(*settings);
    }
    if (Status st = load_isolation(file, op, name, policy); !st) return st;
    config.operations.emplace(std::move(name), std::move(policy));
  }
  return ok_status();
}

}  // namespace

Result<Config> load_config(const fs::path& server_json, const ConfigOverrides& overrides) {
  Config config;
  config.server_config_path = server_json;
  ConfigFile file(server_json);
  if (Status st = file.load(); !st) return st.error();

  ObjectReader r(file, file.doc(), "");
  if (Status st = r.check_known({"listen",
                                 "storage_dir",
                                 "state_dir",
                                 "ops_config",
                                 "io_threads",
                                 "worker_threads",
                                 "max_worker_threads",
                                 "max_frame",
                                 "max_auth_frame",
                                 "max_unauthenticated",
                                 "max_connections",
                                 "discard_limit",
                                 "output_buffer",
                                 "handshake_timeout_ms",
                                 "idle_timeout_ms",
                                 "payload_timeout_ms",
                                 "payload_min_rate",
                                 "payload_rate_grace_ms",
                                 "shutdown_grace_ms",
                                 "operation_timeout_ms",
                                 "log_level",
                                 "tls",
                                 "proxy_protocol",
                                 "default_quota_bytes",
                                 "default_quota_files",
                                 "default_upload_bytes_per_second",
                                 "default_download_bytes_per_second",
                                 "pid_file",
                                 "admin_listen",
                                 "defender",
                                 "audit_log",
                                 "user_store",
                                 "node_id"});
      !st) {
    return st.error();
  }
  std::string listen = "127.0.0.1:9000";
  fs::path ops_path = "ops.json";
  Status checks[] = {
      r.string("listen", listen),
      r.path("storage_dir", config.storage_dir),
      r.path("state_dir", config.state_dir),
      r.path("ops_config", ops_path),
      r.integer("io_threads", config.io_threads, 0, 1024),
      r.integer("worker_threads", config.worker_threads, 1, 4096),
      r.integer("max_worker_threads", config.max_worker_threads, 1, 65536),
      // §1: LEN >= 2, and a u32; the auth frame fits inside the largest frame.
      r.integer("max_frame", config.max_frame, 2, 0xFFFFFFFFu),
      r.integer("max_auth_frame", config.max_auth_frame, 2, 1u << 20),
      r.integer("max_unauthenticated", config.max_unauthenticated, 1, 1u << 20),
      r.integer("max_connections", config.max_connections, 1, 1u << 24),
      r.integer("discard_limit", config.discard_limit, 0, std::uint64_t{1} << 53),
      r.integer("output_buffer", config.output_buffer, 4096, 1u << 30),
      r.millis("handshake_timeout_ms", config.handshake_timeout, 1),
      r.millis("idle_timeout_ms", config.idle_timeout, 1),
      r.millis("payload_timeout_ms", config.payload_timeout, 1),
      r.integer("payload_min_rate", config.payload_min_rate, 0, 1u << 30),
      r.millis("payload_rate_grace_ms", config.payload_rate_grace, 0),
      r.millis("shutdown_grace_ms", config.shutdown_grace, 0),
      r.millis("operation_timeout_ms", config.operation_timeout, 1),
      r.string("log_level", config.log_level),
      r.path("pid_file", config.pid_file),
      r.string("node_id", config.node_id),
  };
  for (Status& st : checks) {
    if (!st) return st.error();
  }
  // Quotas and rate limits: a non-negative integer, or null (or absent) for none.
  const std::pair<const char*, std::optional<std::uint64_t>*> limits[] = {
      {"default_quota_bytes", &config.default_quota_bytes},
      {"default_quota_files", &config.default_quota_files},
      {"default_upload_bytes_per_second", &config.default_upload_bytes_per_second},
      {"default_download_bytes_per_second", &config.default_download_bytes_per_second}};
  for (const auto& [name, out] : limits) {
    const rapidjson::Value* v = r.find(name);
    if (v == nullptr || v->IsNull()) continue;
    if (!v->IsUint64() || v->GetUint64() > (std::uint64_t{1} << 53)) {
      return r.bad(name, "must be a non-negative integer up to 2^53, or null");
    }
    *out = v->GetUint64();
  }
  static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error", "off"};
  if (!kLevels.contains(config.log_level)) {
    return r.bad("log_level", "must be one of trace, debug, info, warn, error, off");
  }
  if (!config.node_id.empty() && !valid_node_id(config.node_id)) {
    return r.bad("node_id", "must be 1 to 64 of A-Z a-z 0-9 . _ - and not start with '.'");
  }
  if (config.max_worker_threads < config.worker_threads) {
    return r.bad("max_worker_threads",
                 "must be at least worker_threads (" + std::to_string(config.worker_threads) + ")");
  }
  if (config.max_auth_frame > config.max_frame) config.max_auth_frame = config.max_frame;
  // §8: TLS and PROXY protocol (tls_config.cpp).
  ConfigErrorAt tls_error = [&file](const std::string& pointer, const std::string& reason) {
    return file.error_at(pointer, reason);
  };
  if (const rapidjson::Value* tls = r.find("tls")) {
    auto settings = parse_tls_settings(*tls, tls_error);
    if (!settings) return std::move(settings).error();
    settings->cert = from_file_dir(server_json, settings->cert);
    settings->key = from_file_dir(server_json, settings->key);
    if (settings->client_ca) settings->client_ca = from_file_dir(server_json, *settings->client_ca);
    config.tls = std::move(*settings);
  }
  if (const rapidjson::Value* proxy = r.find("proxy_protocol")) {
    auto flag = parse_proxy_protocol(*proxy, "/proxy_protocol", tls_error);
    if (!flag) return std::move(flag).error();
    config.proxy_protocol = *flag;
  }
  if (Status st = apply_tls_overrides(config.tls, overrides.tls); !st) return st.error();
  if (overrides.proxy_protocol) config.proxy_protocol = *overrides.proxy_protocol;

  // Issue 15: admin listener, defender, audit log (operating_config.cpp).
  std::string admin_listen;
  if (Status st = r.string("admin_listen", admin_listen); !st) return st.error();
  if (overrides.admin_listen) admin_listen = *overrides.admin_listen;
  if (!admin_listen.empty()) {
    auto admin = parse_admin_listen(admin_listen);
    if (!admin) {
      if (overrides.admin_listen) {
        return fail(ErrorCode::invalid_args, "--admin-listen: " + admin.error().message);
      }
      return r.bad("admin_listen", admin.error().message);
    }
    config.admin_listen = *admin;
  }
  if (const rapidjson::Value* defender = r.find("defender")) {
    auto settings = parse_defender_settings(*defender, tls_error);
    if (!settings) return std::move(settings).error();
    config.defender = std::move(*settings);
  }
  fs::path audit_log;
  if (Status st = r.path("audit_log", audit_log); !st) return st.error();
  if (!audit_log.empty()) config.audit_log = audit_log;
  if (overrides.audit_log) config.audit_log = *overrides.audit_log;
  // Issue 17: the user store (user_store_config.cpp); key_file from server.json's directory.
  if (const rapidjson::Value* store = r.find("user_store")) {
    auto settings = parse_user_store_settings(*store, tls_error);
    if (!settings) return std::move(settings).error();
    if (!settings->key_file.empty()) {
      settings->key_file = from_file_dir(server_json, settings->key_file);
    }
    config.user_store = std::move(*settings);
  }

  if (overrides.listen) listen = *overrides.listen;
  if (Status st = parse_listen(listen, config.listen_host, config.listen_port); !st) {
    if (overrides.listen) return fail(ErrorCode::invalid_args, "--listen: " + st.error().message);
    return r.bad("listen", st.error().message);
  }

  // Relative paths (and the defaults of absent keys) from server.json's directory.
  for (fs::path* p : {&config.storage_dir, &config.state_dir, &ops_path, &config.pid_file}) {
    *p = from_file_dir(server_json, *p);
  }
  config.ops_config_path = ops_path;
  ConfigFile ops_file(ops_path);
  if (Status st = ops_file.load(); !st) return st.error();
  if (Status st = load_operations(ops_file, config); !st) return st.error();

  if (overrides.storage_dir) config.storage_dir = *overrides.storage_dir;
  if (overrides.state_dir) config.state_dir = *overrides.state_dir;
  if (overrides.plugin_dir) config.plugin_dir = *overrides.plugin_dir;
  if (overrides.pid_file) config.pid_file = *overrides.pid_file;
  return config;
}

std::set<std::string> isolated_plugin_files(const Config& config) {
  std::set<std::string> files;
  for (const auto& [name, policy] : config.operations) {
    if (!policy.isolation || policy.isolation->plugin.empty()) continue;
    const fs::path plugin = policy.isolation->plugin.is_absolute()
                                ? policy.isolation->plugin
                                : config.plugin_dir / policy.isolation->plugin;
    std::error_code ec;
    const bool same_dir = fs::absolute(plugin.parent_path()).lexically_normal() ==
                              fs::absolute(config.plugin_dir).lexically_normal() ||
                          fs::equivalent(plugin.parent_path(), config.plugin_dir, ec);
    if (same_dir) {
      files.insert(plugin.filename().string());
    }
  }
  return files;
}

}  // namespace ops::core
