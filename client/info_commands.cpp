// opclient describe, ls and register: small requests with results formatted for people
// (or as JSON with --json).
#include <fcntl.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "commands.hpp"
#include "exit_codes.hpp"
#include "json_args.hpp"
#include "local_files.hpp"
#include "new_key.hpp"

namespace ops::opclient {

namespace {

std::string compact(const rapidjson::Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return {buffer.GetString(), buffer.GetSize()};
}

// "path [overwrite] [sha256]": required args bare, optional ones in brackets.
std::string args_synopsis(const rapidjson::Value& schema) {
  if (!schema.IsObject()) return {};
  auto props = schema.FindMember("properties");
  if (props == schema.MemberEnd() || !props->value.IsObject()) return {};
  std::vector<std::string> required;
  if (auto req = schema.FindMember("required"); req != schema.MemberEnd() && req->value.IsArray()) {
    for (const auto& v : req->value.GetArray()) {
      if (v.IsString()) required.emplace_back(v.GetString(), v.GetStringLength());
    }
  }
  std::string out;
  for (const auto& p : props->value.GetObject()) {
    std::string name(p.name.GetString(), p.name.GetStringLength());
    bool is_required = std::find(required.begin(), required.end(), name) != required.end();
    if (!out.empty()) out += ' ';
    out += is_required ? name : "[" + name + "]";
  }
  return out;
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

void describe_one(const rapidjson::Value& op) {
  std::printf("%s\n", str_member(op, "name").c_str());
  if (auto summary = str_member(op, "summary"); !summary.empty()) {
    std::printf("  %s\n", summary.c_str());
  }
  std::printf("  plugin:  %s %s\n", str_member(op, "plugin").c_str(),
              str_member(op, "version").c_str());
  std::printf("  payload: %s\n", str_member(op, "payload").c_str());
  auto schema = op.FindMember("args");
  if (schema == op.MemberEnd() || !schema->value.IsObject()) return;
  auto props = schema->value.FindMember("properties");
  if (props == schema->value.MemberEnd() || !props->value.IsObject() ||
      props->value.MemberCount() == 0) {
    std::printf("  args:    none\n");
    return;
  }
  std::vector<std::string> required;
  if (auto req = schema->value.FindMember("required");
      req != schema->value.MemberEnd() && req->value.IsArray()) {
    for (const auto& v : req->value.GetArray()) {
      if (v.IsString()) required.emplace_back(v.GetString(), v.GetStringLength());
    }
  }
  std::printf("  args:\n");
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : props->value.GetObject()) {
    std::string name(p.name.GetString(), p.name.GetStringLength());
    std::string type = str_member(p.value, "type");
    if (type.empty() && p.value.IsObject()) {
      if (auto t = p.value.FindMember("type"); t != p.value.MemberEnd()) type = compact(t->value);
    }
    std::string notes =
        std::find(required.begin(), required.end(), name) != required.end() ? "required" : "";
    if (p.value.IsObject()) {
      if (auto d = p.value.FindMember("default"); d != p.value.MemberEnd()) {
        notes += (notes.empty() ? "" : ", ") + std::string("default ") + compact(d->value);
      }
    }
    std::string description = str_member(p.value, "description");
    rows.push_back({"   ", name, type, notes, description});
  }
  print_table(rows);
}

std::string format_mtime(const rapidjson::Value& entry) {
  if (!entry.IsObject()) return "-";
  auto it = entry.FindMember("mtime");
  if (it == entry.MemberEnd()) return "-";
  if (it->value.IsString()) return {it->value.GetString(), it->value.GetStringLength()};
  if (!it->value.IsNumber()) return "-";
  const auto seconds = static_cast<std::time_t>(it->value.GetDouble());
  std::tm tm{};
  if (::localtime_r(&seconds, &tm) == nullptr) return "-";
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M", &tm);
  return text;
}

}  // namespace

int run_describe(const ConnectionFlags& conn, const DescribeFlags& flags) {
  int status = 0;
  std::string result;
  if (!simple_call(conn, "describe", "", result, status)) return status;
  rapidjson::Document doc;
  doc.Parse(result.c_str());
  const rapidjson::Value* ops = nullptr;
  if (doc.IsObject()) {
    auto it = doc.FindMember("operations");
    if (it != doc.MemberEnd() && it->value.IsArray()) ops = &it->value;
  }
  if (ops == nullptr) {
    print_error(label_for(client::Failure::protocol), "describe returned no \"operations\" list");
    return exit_code::kConnection;
  }
  if (!flags.operation.empty()) {
    for (const auto& op : ops->GetArray()) {
      if (str_member(op, "name") != flags.operation) continue;
      if (flags.json) {
        print_json(compact(op), stdout);
      } else {
        describe_one(op);
      }
      return exit_code::kOk;
    }
    // The same answer the server gives for calling it (§4: describe lists what you may call).
    print_error(wire_name(ErrorCode::unknown_operation),
                "no operation \"" + flags.operation + "\" that you may call");
    return exit_for(ErrorCode::unknown_operation);
  }
  if (flags.json) {
    print_json(result, stdout);
    return exit_code::kOk;
  }
  std::vector<std::vector<std::string>> rows{{"OPERATION", "PAYLOAD", "PLUGIN", "ARGS", "SUMMARY"}};
  for (const auto& op : ops->GetArray()) {
    std::string plugin = str_member(op, "plugin");
    if (auto v = str_member(op, "version"); !v.empty()) plugin += " " + v;
    auto schema = op.IsObject() ? op.FindMember("args") : rapidjson::Value::ConstMemberIterator();
    std::string synopsis =
        op.IsObject() && schema != op.MemberEnd() ? args_synopsis(schema->value) : std::string();
    rows.push_back({str_member(op, "name"), str_member(op, "payload"), plugin, synopsis,
                    str_member(op, "summary")});
  }
  print_table(rows);
  std::fflush(stdout);
  return exit_code::kOk;
}

namespace {

// The args of one list request.
bool list_args(const LsFlags& flags, const std::string& after, bool has_after, std::string& out) {
  rapidjson::StringBuffer buffer;
  StrictWriter w(buffer);
  w.StartObject();
  if (!flags.path.empty()) {
    w.Key("path");
    if (!write_string(w, flags.path)) return false;
  }
  if (flags.recursive) {
    w.Key("recursive");
    w.Bool(true);
  }
  if (flags.limit > 0) {
    w.Key("limit");
    w.Uint64(flags.limit);
  }
  if (has_after) {
    w.Key("after");
    if (!write_string(w, after)) return false;
  }
  w.EndObject();
  out.assign(buffer.GetString(), buffer.GetSize());
  return true;
}

void print_entries(const rapidjson::Value& entries, bool human) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : entries.GetArray()) {
    const bool dir = str_member(e, "type") == "dir";
    std::string size = "-";
    if (!dir && e.IsObject()) {
      if (auto s = e.FindMember("size"); s != e.MemberEnd() && s->value.IsUint64()) {
        size = human ? human_size(s->value.GetUint64()) : std::to_string(s->value.GetUint64());
      }
    }
    rows.push_back({size, format_mtime(e), str_member(e, "name") + (dir ? "/" : "")});
  }
  // Sizes right-aligned, like ls -l.
  std::size_t width = 0;
  for (const auto& r : rows) width = std::max(width, r[0].size());
  for (auto& r : rows) r[0] = std::string(width - r[0].size(), ' ') + r[0];
  print_table(rows);
}

}  // namespace

// Without --limit, follows "next" from page to page (§10) so the whole listing shows, in
// one table (or one JSON object with every entry). With --limit, one page.
int run_ls(const ConnectionFlags& conn, const LsFlags& flags) {
  int status = 0;
  auto client = open_client(conn, status);
  if (!client) return status;

  rapidjson::Document merged;
  merged.SetObject();
  rapidjson::Value all(rapidjson::kArrayType);
  std::string after = flags.after;
  bool has_after = !flags.after.empty();
  bool truncated = false;
  std::string next;
  std::string first_page;
  for (int page = 0;; ++page) {
    std::string args;
    if (!list_args(flags, after, has_after, args)) {
      print_error("usage", "the path or --after is not valid UTF-8");
      return exit_code::kUsage;
    }
    auto response = client->call("list", args);
    if (!response) return report(response.error(), client->last_failure());
    if (!response->ok) return report(response->error, client::Failure::none);
    rapidjson::Document doc;
    doc.Parse(response->result_json.c_str());
    auto entries = doc.IsObject() ? doc.FindMember("entries") : doc.MemberEnd();
    if (!doc.IsObject() || entries == doc.MemberEnd() || !entries->value.IsArray()) {
      print_error(label_for(client::Failure::protocol), "list returned no \"entries\"");
      return exit_code::kConnection;
    }
    if (page == 0) first_page = response->result_json;
    for (auto& e : entries->value.GetArray())
      all.PushBack(rapidjson::Value(e, merged.GetAllocator()), merged.GetAllocator());
    auto t = doc.FindMember("truncated");
    truncated = t != doc.MemberEnd() && t->value.IsBool() && t->value.GetBool();
    next = str_member(doc, "next");
    // One page asked for, the end reached, or a server that cannot page (no "next").
    if (flags.limit > 0 || !truncated || next.empty() || (has_after && next == after)) break;
    after = next;
    has_after = true;
  }

  if (flags.json) {
    if (flags.limit > 0) {
      print_json(first_page, stdout);
    } else {
      merged.AddMember(
          "path",
          rapidjson::Value(flags.path.data(), static_cast<rapidjson::SizeType>(flags.path.size()),
                           merged.GetAllocator()),
          merged.GetAllocator());
      merged.AddMember("entries", all, merged.GetAllocator());
      merged.AddMember("truncated", truncated, merged.GetAllocator());
      print_json(compact(merged), stdout);
    }
  } else {
    print_entries(all, flags.human);
  }
  std::fflush(stdout);
  if (truncated && flags.limit > 0 && !next.empty()) {
    note(conn.output, "more entries follow: add --after '" + next + "' for the next page");
  } else if (truncated) {
    note(conn.output,
         "listing truncated (the server's limit, and it cannot page); list a "
         "subdirectory");
  }
  return exit_code::kOk;
}

int run_register(const ConnectionFlags& conn, const RegisterFlags& flags) {
  rapidjson::StringBuffer buffer;
  StrictWriter w(buffer);
  w.StartObject();
  w.Key("user");
  if (!write_string(w, flags.name)) {
    print_error("usage", "the user name is not valid UTF-8");
    return exit_code::kUsage;
  }
  w.EndObject();
  NewKey made;
  if (int status = call_for_new_key(conn, "register", {buffer.GetString(), buffer.GetSize()},
                                    flags.key_file_out, made);
      status != exit_code::kOk) {
    return status;
  }
  if (made.in_file) {
    if (flags.json) print_json(made.result_json, stdout);
    note(conn.output, "user " + made.user + " created; key written to " + flags.key_file_out);
    return exit_code::kOk;
  }
  if (flags.json) {
    print_json(made.result_json, stdout);
  } else {
    std::printf("%s\n", made.key.c_str());
    std::fflush(stdout);
  }
  note(conn.output, "user " + made.user + " created; this is the only time its key is shown");
  return exit_code::kOk;
}

}  // namespace ops::opclient
