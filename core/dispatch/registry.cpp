#include "dispatch/registry.hpp"

#include <filesystem>

#include "isolation/isolated_operation.hpp"
#include "plugin_host/prepare_operations.hpp"

#include <rapidjson/pointer.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace ops::core {
namespace {

// The program an exec operation runs, for describe's "plugin".
std::string fs_name(const std::vector<std::string>& argv) {
  const std::string& program = argv.size() > 1 ? argv[1] : argv[0];
  return std::filesystem::path(program).filename().string();
}

}  // namespace

std::string_view payload_name(ops_payload_dir dir) noexcept {
  switch (dir) {
    case OPS_PAYLOAD_IN:
      return "in";
    case OPS_PAYLOAD_OUT:
      return "out";
    default:
      return "none";
  }
}

namespace {
// {"name","summary","plugin","version","payload","args"}: one entry of describe's answer.
std::string describe_entry(const Operation& op) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("name");
  w.String(op.name);
  w.Key("summary");
  w.String(op.summary);
  w.Key("plugin");
  w.String(op.plugin);
  w.Key("version");
  w.String(op.version);
  w.Key("payload");
  std::string_view payload = payload_name(op.payload);
  w.String(payload.data(), static_cast<rapidjson::SizeType>(payload.size()));
  w.Key("args");
  op.schema_doc->Accept(w);
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}
}  // namespace

Result<std::unique_ptr<Registry>> Registry::build(const Config& config,
                                                  std::vector<LoadedOperation> loaded) {
  auto registry = std::make_unique<Registry>();
  std::map<std::string, LoadedOperation*> by_name;
  for (LoadedOperation& op : loaded) by_name.emplace(op.op->name, &op);

  for (const auto& [name, policy] : config.operations) {
    if (policy.isolation) {
      if (Status st = registry->add_isolated(name, policy, config); !st) return st.error();
      continue;
    }
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      std::string provided;
      for (const auto& [n, op] : by_name) {
        provided += (provided.empty() ? "" : ", ") + n + " (" + op->file.filename().string() + ")";
      }
      if (provided.empty()) provided = "nothing";
      return Error{ErrorCode::internal, "operation \"" + name + "\" is enabled in " +
                                            config.ops_config_path.string() +
                                            " but no plugin provides it; " +
                                            config.plugin_dir.string() + " provides: " + provided};
    }
    const LoadedOperation& source = *it->second;
    Operation op;
    op.name = name;
    op.summary = source.op->summary ? source.op->summary : "";
    op.version = source.op->version ? source.op->version : source.plugin_version;
    op.plugin = source.plugin_name;
    op.payload = static_cast<ops_payload_dir>(source.op->payload);
    op.backend = std::make_shared<InProcessBackend>(source);
    op.policy = policy;
    op.schema_doc = std::make_shared<rapidjson::Document>();
    if (op.schema_doc->Parse(source.op->args_schema).HasParseError() ||
        !op.schema_doc->IsObject()) {
      return Error{ErrorCode::internal, "plugin " + source.file.string() + ": operation \"" + name +
                                            "\" has an args schema that is not a JSON object"};
    }
    op.schema = std::make_shared<rapidjson::SchemaDocument>(*op.schema_doc);
    op.describe_json = describe_entry(op);
    registry->ops_.emplace(name, std::move(op));
  }
  // Settings schemas, then init hooks (plugin_host/prepare_operations.hpp).
  if (Status ready = prepare_in_process(config, loaded); !ready) return ready.error();
  return registry;
}

Status Registry::add_isolated(const std::string& name, const OperationPolicy& policy,
                              const Config& config) {
  isolation::IsolatedOperation isolated = isolation::start_isolated_operation(name, policy, config);
  Operation op;
  op.name = name;
  op.policy = policy;
  op.plugin = policy.isolation->exec.empty() ? policy.isolation->plugin.filename().string()
                                             : fs_name(policy.isolation->exec);
  op.backend = isolated.backend;
  op.schema_doc = std::make_shared<rapidjson::Document>();
  const std::string schema = isolated.ready ? isolated.ready->args_schema : "{}";
  if (isolated.ready) {
    op.summary = isolated.ready->summary;
    op.version = isolated.ready->version;
    op.payload = isolated.ready->payload == "in"    ? OPS_PAYLOAD_IN
                 : isolated.ready->payload == "out" ? OPS_PAYLOAD_OUT
                                                    : OPS_PAYLOAD_NONE;
  }
  if (op.schema_doc->Parse(schema.c_str()).HasParseError() || !op.schema_doc->IsObject()) {
    return Error{ErrorCode::internal,
                 "operation \"" + name + "\": its worker sent an args schema that is not valid"};
  }
  op.schema = std::make_shared<rapidjson::SchemaDocument>(*op.schema_doc);
  op.describe_json = describe_entry(op);
  ops_.emplace(name, std::move(op));
  return ok_status();
}

const Operation* Registry::find(std::string_view name) const {
  auto it = ops_.find(name);
  return it == ops_.end() ? nullptr : &it->second;
}

std::string Registry::describe_for(std::string_view user) const {
  std::string out = "{\"operations\":[";
  bool first = true;
  for (const auto& [name, op] : ops_) {
    if (!op.policy.allows(user) || !op.backend->available()) continue;
    if (!first) out += ',';
    first = false;
    out += op.describe_json;
  }
  out += "]}";
  return out;
}

namespace {

std::string pointer_text(const rapidjson::Pointer& pointer) {
  rapidjson::StringBuffer sb;
  pointer.Stringify(sb);
  std::string s(sb.GetString(), sb.GetSize());
  return s.empty() ? "args" : "args" + s;
}

// A message that names the field, e.g. "args/path: must be a string".
std::string explain(const Operation& op, const rapidjson::Value& args,
                    const rapidjson::SchemaValidator& validator) {
  std::string keyword = validator.GetInvalidSchemaKeyword();
  rapidjson::Pointer doc_ptr = validator.GetInvalidDocumentPointer();
  rapidjson::Pointer schema_ptr = validator.GetInvalidSchemaPointer();
  std::string where = pointer_text(doc_ptr);
  const rapidjson::Value* schema = schema_ptr.Get(*op.schema_doc);
  const rapidjson::Value* value = doc_ptr.Get(args);

  if (keyword == "required" && schema && value && value->IsObject()) {
    auto req = schema->FindMember("required");
    if (req != schema->MemberEnd() && req->value.IsArray()) {
      for (const auto& name : req->value.GetArray()) {
        if (name.IsString() && !value->HasMember(name)) {
          return where + ": missing required member \"" + name.GetString() + "\"";
        }
      }
    }
    return where + ": a required member is missing";
  }
  if (keyword == "additionalProperties" && schema && value && value->IsObject()) {
    auto props = schema->FindMember("properties");
    for (auto m = value->MemberBegin(); m != value->MemberEnd(); ++m) {
      if (props == schema->MemberEnd() || !props->value.IsObject() ||
          !props->value.HasMember(m->name)) {
        return where + ": unknown member \"" + std::string(m->name.GetString()) + "\"";
      }
    }
    return where + ": unknown member";
  }
  if (keyword == "additionalProperties" && doc_ptr.GetTokenCount() > 0) {
    // RapidJSON points at the offending member itself.
    const auto& last = doc_ptr.GetTokens()[doc_ptr.GetTokenCount() - 1];
    rapidjson::Pointer parent(doc_ptr.GetTokens(), doc_ptr.GetTokenCount() - 1);
    return pointer_text(parent) + ": unknown member \"" + std::string(last.name, last.length) +
           "\"";
  }
  if (keyword == "type" && schema) {
    auto type = schema->FindMember("type");
    if (type != schema->MemberEnd() && type->value.IsString()) {
      return where + ": must be of type " + type->value.GetString();
    }
    return where + ": has the wrong type";
  }
  if (keyword == "pattern") return where + ": does not have the required form";
  if (keyword == "minimum" || keyword == "maximum" || keyword == "exclusiveMinimum" ||
      keyword == "exclusiveMaximum") {
    return where + ": is out of range";
  }
  if (keyword == "minLength") return where + ": is too short";
  if (keyword == "maxLength") return where + ": is too long";
  if (keyword == "enum") return where + ": is not one of the allowed values";
  return where + ": fails the \"" + keyword + "\" rule of the schema";
}

}  // namespace

Status validate_args(const Operation& op, const rapidjson::Value& args) {
  std::lock_guard lock(*op.schema_mutex);
  rapidjson::SchemaValidator validator(*op.schema);
  if (args.Accept(validator)) return ok_status();
  return fail(ErrorCode::invalid_args, explain(op, args, validator));
}

}  // namespace ops::core
