// The operations this server serves: each enabled operation of ops.json bound to the
// plugin that provides it, with its args schema compiled once. Immutable once built; read
// concurrently by every session through the Snapshot that holds it.
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/schema.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "opserver/error.hpp"
#include "plugin_host/operation_backend.hpp"
#include "plugin_host/plugin_loader.hpp"

namespace ops::core {

struct Operation {
  std::string name;
  std::string summary;
  std::string version;
  std::string plugin;
  ops_payload_dir payload = OPS_PAYLOAD_NONE;
  // Where a call goes (in-process today); holds the .so loaded while anyone holds it.
  std::shared_ptr<const OperationBackend> backend;
  OperationPolicy policy;
  std::shared_ptr<rapidjson::Document> schema_doc;  // outlives `schema`, which points into it
  // This operation's entry in a describe answer, written once when the registry is built:
  // describe is answered on an I/O thread for every client, and writing the schema out
  // again each time was a tenth of its server CPU.
  std::string describe_json;
  std::shared_ptr<rapidjson::SchemaDocument> schema;
  // RapidJSON 1.1's regex keeps its search state inside the compiled schema, so a schema
  // with "pattern" must not be used by two threads at once (seen: assertion failures
  // under 50 concurrent registrations). Validation is short; a lock costs little.
  std::shared_ptr<std::mutex> schema_mutex = std::make_shared<std::mutex>();
};

class Registry {
 public:
  // Binds every operation enabled in `config` to a loaded plugin. Errors: an enabled
  // operation nobody provides (naming what the plugin directory does provide), a schema
  // that is not valid JSON.
  static Result<std::unique_ptr<Registry>> build(const Config& config,
                                                 std::vector<LoadedOperation> loaded);

  const Operation* find(std::string_view name) const;
  const std::map<std::string, Operation, std::less<>>& operations() const { return ops_; }

  // §4: the describe result for `user`: only the operations it may call.
  std::string describe_for(std::string_view user) const;

 private:
  // An operation that runs in worker processes (isolation/): its first worker tells what
  // it is; one that cannot start is added down (absent from describe, calls unavailable).
  Status add_isolated(const std::string& name, const OperationPolicy& policy, const Config& config);

  std::map<std::string, Operation, std::less<>> ops_;
};

// Validates `args` against the operation's schema: invalid_args naming the field.
Status validate_args(const Operation& op, const rapidjson::Value& args);

std::string_view payload_name(ops_payload_dir dir) noexcept;

}  // namespace ops::core
