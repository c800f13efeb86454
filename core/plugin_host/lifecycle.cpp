#include "plugin_host/lifecycle.hpp"

#include <rapidjson/document.h>
#include <rapidjson/pointer.h>
#include <rapidjson/schema.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <set>
#include <thread>
#include <vector>

#include "plugin_host/host_api.hpp"
#include "plugin_host/op_hooks.hpp"

namespace ops::core {
namespace {

constexpr std::size_t kReasonCap = 1024;  // what a plugin may write; cleaned to 512 after

std::string json_text(const rapidjson::Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return {buffer.GetString(), buffer.GetSize()};
}

// "settings.a.b" for the pointer /a/b ("settings" for the object itself).
std::string where(const rapidjson::Pointer& pointer) {
  std::string out = "settings";
  for (std::size_t i = 0; i < pointer.GetTokenCount(); ++i) {
    const auto& token = pointer.GetTokens()[i];
    out += '.';
    out.append(token.name, token.length);
  }
  return out;
}

const rapidjson::Value* member(const rapidjson::Value* object, const char* name) {
  if (object == nullptr || !object->IsObject()) return nullptr;
  auto it = object->FindMember(name);
  return it == object->MemberEnd() ? nullptr : &it->value;
}

// Why the settings fail the schema, naming the field and, where the schema says it, the rule.
std::string explain(const rapidjson::Document& schema, const rapidjson::Value& settings,
                    const rapidjson::SchemaValidator& validator) {
  const std::string keyword = validator.GetInvalidSchemaKeyword();
  const rapidjson::Pointer doc_ptr = validator.GetInvalidDocumentPointer();
  const rapidjson::Value* rule = validator.GetInvalidSchemaPointer().Get(schema);
  const rapidjson::Value* value = doc_ptr.Get(settings);
  const std::string field = where(doc_ptr);

  if (keyword == "required" && value != nullptr && value->IsObject()) {
    if (const auto* required = member(rule, "required"); required && required->IsArray()) {
      for (const auto& name : required->GetArray()) {
        if (name.IsString() && !value->HasMember(name)) {
          return field + ": missing required member \"" + name.GetString() + "\"";
        }
      }
    }
    return field + ": a required member is missing";
  }
  if (keyword == "additionalProperties") {
    if (value != nullptr && value->IsObject()) {
      const auto* props = member(rule, "properties");
      for (auto m = value->MemberBegin(); m != value->MemberEnd(); ++m) {
        if (props == nullptr || !props->IsObject() || !props->HasMember(m->name)) {
          return field + ": unknown member \"" + std::string(m->name.GetString()) + "\"";
        }
      }
    }
    if (doc_ptr.GetTokenCount() > 0) {  // RapidJSON may point at the member itself
      const auto& last = doc_ptr.GetTokens()[doc_ptr.GetTokenCount() - 1];
      const rapidjson::Pointer parent(doc_ptr.GetTokens(), doc_ptr.GetTokenCount() - 1);
      return where(parent) + ": unknown member \"" + std::string(last.name, last.length) + "\"";
    }
    return field + ": unknown member";
  }
  if (keyword == "type") {
    if (const auto* type = member(rule, "type"))
      return field + ": must be of type " + json_text(*type);
    return field + ": has the wrong type";
  }
  if (keyword == "minimum" || keyword == "maximum") {
    const bool low = keyword == "minimum";
    const auto* bound = member(rule, keyword.c_str());
    const auto* exclusive = member(rule, low ? "exclusiveMinimum" : "exclusiveMaximum");
    const bool strict = exclusive != nullptr && exclusive->IsTrue();
    if (bound != nullptr) {
      return field + ": must be " + (low ? (strict ? "> " : ">= ") : (strict ? "< " : "<= ")) +
             json_text(*bound);
    }
    return field + ": is out of range";
  }
  if (keyword == "minLength" || keyword == "maxLength") {
    if (const auto* bound = member(rule, keyword.c_str())) {
      return field + ": must be at " + (keyword == "minLength" ? "least " : "most ") +
             json_text(*bound) + " characters long";
    }
  }
  if (keyword == "enum") {
    if (const auto* values = member(rule, "enum"))
      return field + ": must be one of " + json_text(*values);
  }
  if (keyword == "pattern") return field + ": does not have the required form";
  return field + ": fails the \"" + keyword + "\" rule of the settings schema";
}

// One shutdown hook running on a thread of its own. The thread holds the library, so the
// code it runs stays mapped however long it takes.
struct ShutdownRun {
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;

  bool wait_until(std::chrono::steady_clock::time_point until) {
    std::unique_lock lock(mutex);
    return done_cv.wait_until(lock, until, [this] { return done; });
  }
};

std::shared_ptr<ShutdownRun> start_shutdown(const ops_op_v1* op, void (*hook)(std::uint32_t),
                                            std::chrono::milliseconds deadline,
                                            std::shared_ptr<const void> keep_alive) {
  auto run = std::make_shared<ShutdownRun>();
  const auto ms = static_cast<std::uint32_t>(
      std::clamp<std::chrono::milliseconds::rep>(deadline.count(), 0, UINT32_MAX));
  std::thread([run, op, hook, ms, deadline, keep_alive = std::move(keep_alive)] {
    const auto started = std::chrono::steady_clock::now();
    hook(ms);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    if (took > deadline) {
      spdlog::warn("operation \"{}\": shutdown took {} ms, over its {} ms deadline",
                   printable(op->name ? op->name : ""), took.count(), deadline.count());
    }
    std::lock_guard lock(run->mutex);
    run->done = true;
    run->done_cv.notify_all();
  }).detach();
  return run;
}

// Every OpLifecycle alive in this process, and the shutdowns started when a library went:
// what shutdown_all() has to finish.
struct Tracker {
  std::mutex mutex;
  std::set<OpLifecycle*> live;
  std::vector<std::weak_ptr<ShutdownRun>> started;
};
Tracker& tracker() {
  static auto* instance = new Tracker;  // never destroyed: detached threads may outlive main
  return *instance;
}

}  // namespace

Status check_settings(const std::string& op_name, const ops_op_v1* op,
                      std::string_view settings_json) {
  const char* schema_text = hooks_of(op).settings_schema;
  if (schema_text == nullptr) return ok_status();
  const std::string prefix = "operation \"" + op_name + "\": ";
  rapidjson::Document schema;
  if (schema.Parse(schema_text).HasParseError() || !schema.IsObject()) {
    return fail(ErrorCode::internal, prefix + "the plugin's settings schema is not a JSON object");
  }
  rapidjson::Document settings;
  if (settings.Parse(settings_json.data(), settings_json.size()).HasParseError() ||
      !settings.IsObject()) {
    return fail(ErrorCode::invalid_args, prefix + "settings: must be a JSON object");
  }
  const rapidjson::SchemaDocument compiled(schema);
  rapidjson::SchemaValidator validator(compiled);
  if (settings.Accept(validator)) return ok_status();
  return fail(ErrorCode::invalid_args, prefix + explain(schema, settings, validator));
}

Status run_init(const std::string& op_name, const ops_op_v1* op, std::string_view settings_json) {
  const auto init = hooks_of(op).init;
  if (init == nullptr) return ok_status();
  const std::string settings(settings_json);  // NUL-terminated, as the ABI promises
  char reason[kReasonCap] = {};
  const int rc = init(settings.c_str(), settings.size(), reason, sizeof reason);
  if (rc == 0) return ok_status();
  reason[sizeof reason - 1] = '\0';
  std::string text = sanitize_message(reason);
  if (text.empty()) text = "(no reason given)";
  return fail(ErrorCode::internal,
              "operation \"" + op_name + "\": init refused the operation: " + text);
}

bool run_shutdown(const ops_op_v1* op, std::chrono::milliseconds deadline,
                  std::shared_ptr<const void> keep_alive) {
  const auto hook = hooks_of(op).shutdown;
  if (hook == nullptr) return true;
  auto run = start_shutdown(op, hook, deadline, std::move(keep_alive));
  if (run->wait_until(std::chrono::steady_clock::now() + deadline)) return true;
  spdlog::warn("operation \"{}\": shutdown still running after its {} ms deadline; left behind",
               printable(op->name ? op->name : ""), deadline.count());
  return false;
}

std::optional<std::string> run_health(const ops_op_v1* op) {
  const auto health = hooks_of(op).health;
  if (health == nullptr) return std::nullopt;
  char reason[kReasonCap] = {};
  if (health(reason, sizeof reason) == 0) return std::nullopt;
  reason[sizeof reason - 1] = '\0';
  std::string text = sanitize_message(reason);
  return text.empty() ? std::string("unhealthy") : text;
}

OpLifecycle::OpLifecycle(const ops_op_v1* op, std::shared_ptr<const void> library)
    : op_(op), library_(std::move(library)) {
  std::lock_guard lock(tracker().mutex);
  tracker().live.insert(this);
}

OpLifecycle::~OpLifecycle() {
  {
    std::lock_guard lock(tracker().mutex);
    tracker().live.erase(this);
  }
  bool run = false;
  {
    std::lock_guard lock(mutex_);
    run = prepared_ && !shut_down_;
    shut_down_ = true;
  }
  const auto hook = hooks_of(op_).shutdown;
  if (!run || hook == nullptr) return;
  // Whoever lets go last (a reload, an I/O thread releasing a snapshot) must not wait for
  // plugin code: the hook runs on a thread of its own, which holds the library.
  auto started = start_shutdown(op_, hook, deadline_, library_);
  std::lock_guard lock(tracker().mutex);
  auto& list = tracker().started;
  std::erase_if(list, [](const std::weak_ptr<ShutdownRun>& w) { return w.expired(); });
  list.push_back(started);
}

Status OpLifecycle::prepare(const std::string& op_name, std::string_view settings_json,
                            std::chrono::milliseconds shutdown_deadline) {
  std::lock_guard lock(mutex_);
  if (shut_down_) {
    return fail(ErrorCode::internal, "operation \"" + op_name + "\": already shut down");
  }
  Status status = run_init(op_name, op_, settings_json);
  if (status) {
    prepared_ = true;
    deadline_ = shutdown_deadline;
  }
  return status;
}

bool OpLifecycle::prepared() const {
  std::lock_guard lock(mutex_);
  return prepared_;
}

bool OpLifecycle::shutdown_all(std::chrono::milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  std::vector<std::shared_ptr<ShutdownRun>> runs;
  {
    std::lock_guard lock(tracker().mutex);
    for (OpLifecycle* lifecycle : tracker().live) {
      std::lock_guard own(lifecycle->mutex_);
      if (!lifecycle->prepared_ || lifecycle->shut_down_) continue;
      lifecycle->shut_down_ = true;
      if (const auto hook = hooks_of(lifecycle->op_).shutdown) {
        runs.push_back(start_shutdown(lifecycle->op_, hook, deadline, lifecycle->library_));
      }
    }
    for (const auto& weak : tracker().started) {
      if (auto run = weak.lock()) runs.push_back(std::move(run));
    }
  }
  bool all = true;
  for (const auto& run : runs) {
    if (!run->wait_until(until)) all = false;
  }
  if (!all) spdlog::warn("plugin shutdown: a shutdown hook overran its {} ms", deadline.count());
  return all;
}

}  // namespace ops::core
