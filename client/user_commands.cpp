// opclient usage, set-quota, unregister and rekey (OPS/1 §10): one request each, the
// result formatted for people (or the server's JSON with --json).
#include <fcntl.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "commands.hpp"
#include "exit_codes.hpp"
#include "json_args.hpp"
#include "new_key.hpp"

namespace ops::opclient {

namespace {

// A quota for people: "10 MiB" / "3 files", or "no limit" for null.
std::string limit_text(const rapidjson::Value& obj, const char* name, bool bytes) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsUint64()) return "no limit";
  std::uint64_t v = it->value.GetUint64();
  return bytes ? human_bytes(v) + " (" + std::to_string(v) + " bytes)"
               : std::to_string(v) + " files";
}

std::uint64_t u64_member(const rapidjson::Value& obj, const char* name) {
  auto it = obj.FindMember(name);
  return it != obj.MemberEnd() && it->value.IsUint64() ? it->value.GetUint64() : 0;
}

bool write_name(StrictWriter& w, const char* key, const std::string& value) {
  w.Key(key);
  return w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

// "none" (or "null") means no limit; else a non-negative integer. Written as JSON.
bool write_limit(StrictWriter& w, const char* key, const std::string& text) {
  w.Key(key);
  if (text == "none" || text == "null") return w.Null();
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos ||
      text.size() > 16) {
    return false;
  }
  return w.Uint64(std::stoull(text));
}

}  // namespace

int run_usage(const ConnectionFlags& conn, const UsageFlags& flags) {
  int status = 0;
  std::string result;
  if (!simple_call(conn, "usage", "{}", result, status)) return status;
  if (flags.json) {
    print_json(result, stdout);
    return exit_code::kOk;
  }
  rapidjson::Document doc;
  doc.Parse(result.c_str());
  if (!doc.IsObject()) {
    print_json(result, stdout);
    return exit_code::kOk;
  }
  std::printf("user      %s\n", str_member(doc, "user").c_str());
  std::printf("stored    %s in %llu files\n", human_bytes(u64_member(doc, "bytes")).c_str(),
              static_cast<unsigned long long>(u64_member(doc, "files")));
  std::printf("reserved  %s\n", human_bytes(u64_member(doc, "reserved_bytes")).c_str());
  std::printf("quota     %s, %s\n", limit_text(doc, "quota_bytes", true).c_str(),
              limit_text(doc, "quota_files", false).c_str());
  return exit_code::kOk;
}

int run_set_quota(const ConnectionFlags& conn, const SetQuotaFlags& flags) {
  rapidjson::StringBuffer buffer;
  StrictWriter w(buffer);
  w.StartObject();
  if (!write_name(w, "user", flags.user)) {
    print_error("usage", "the user name is not valid UTF-8");
    return exit_code::kUsage;
  }
  if (!flags.bytes.empty() && !write_limit(w, "bytes", flags.bytes)) {
    print_error("usage", "--bytes takes a non-negative integer or none");
    return exit_code::kUsage;
  }
  if (!flags.files.empty() && !write_limit(w, "files", flags.files)) {
    print_error("usage", "--files takes a non-negative integer or none");
    return exit_code::kUsage;
  }
  w.EndObject();
  int status = 0;
  std::string result;
  if (!simple_call(conn, "set_quota", {buffer.GetString(), buffer.GetSize()}, result, status)) {
    return status;
  }
  if (flags.json) {
    print_json(result, stdout);
    return exit_code::kOk;
  }
  rapidjson::Document doc;
  doc.Parse(result.c_str());
  if (doc.IsObject()) {
    std::printf("quota of %s: %s, %s\n", str_member(doc, "user").c_str(),
                limit_text(doc, "quota_bytes", true).c_str(),
                limit_text(doc, "quota_files", false).c_str());
  }
  return exit_code::kOk;
}

int run_unregister(const ConnectionFlags& conn, const UnregisterFlags& flags) {
  rapidjson::StringBuffer buffer;
  StrictWriter w(buffer);
  w.StartObject();
  if (!write_name(w, "user", flags.user)) {
    print_error("usage", "the user name is not valid UTF-8");
    return exit_code::kUsage;
  }
  w.EndObject();
  int status = 0;
  std::string result;
  if (!simple_call(conn, "unregister", {buffer.GetString(), buffer.GetSize()}, result, status)) {
    return status;
  }
  if (flags.json) print_json(result, stdout);
  note(conn.output, "user " + flags.user + " unregistered; its files are being deleted");
  return exit_code::kOk;
}

int run_rekey(const ConnectionFlags& conn, const RekeyFlags& flags) {
  rapidjson::StringBuffer buffer;
  StrictWriter w(buffer);
  w.StartObject();
  if (!flags.user.empty() && !write_name(w, "user", flags.user)) {
    print_error("usage", "the user name is not valid UTF-8");
    return exit_code::kUsage;
  }
  w.EndObject();
  NewKey made;
  if (int status = call_for_new_key(conn, "rekey", {buffer.GetString(), buffer.GetSize()},
                                    flags.key_file_out, made);
      status != exit_code::kOk) {
    return status;
  }
  if (made.in_file) {
    note(conn.output, "new key of " + made.user + " written to " + flags.key_file_out);
  } else if (flags.json) {
    print_json(made.result_json, stdout);
  } else {
    std::printf("%s\n", made.key.c_str());
  }
  return exit_code::kOk;
}

}  // namespace ops::opclient
