#include "isolation/remote_host.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstring>
#include <string_view>

#include "opserver/strict_json.hpp"
#include "plugin_host/host_api.hpp"

namespace ops::isolation {
namespace {

RemoteCall& remote(ops_call* call) {
  return *reinterpret_cast<RemoteCall*>(call);
}

// A JSON string; false if `text` is not valid UTF-8 (the server would refuse the line).
bool quote(std::string_view text, std::string& out) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer, rapidjson::UTF8<>, rapidjson::UTF8<>,
                    rapidjson::CrtAllocator, rapidjson::kWriteValidateEncodingFlag>
      writer(buffer);
  if (!writer.String(text.data(), static_cast<rapidjson::SizeType>(text.size()))) return false;
  out.append(buffer.GetString(), buffer.GetSize());
  return true;
}

// A message for people: made valid (and short) before it is quoted.
std::string message_json(const char* message) {
  std::string out;
  quote(core::sanitize_message(message ? message : ""), out);
  return out;
}

// Sends `line` (and `data`, `fd`) and waits for the reply; the reply's "ret", or `failed`
// when the conversation broke.
std::int64_t request(RemoteCall& call, const std::string& line, WorkerMessage* reply_out = nullptr,
                     std::span<const std::byte> data = {}, int fd = -1, std::int64_t failed = -1) {
  if (call.broken) return failed;
  const int fds[1] = {fd};
  WorkerMessage reply;
  const std::string held = std::move(call.held);
  call.held.clear();
  if (!call.channel->send(line, data, fd >= 0 ? std::span<const int>(fds) : std::span<const int>(),
                          Clock::time_point::max(), held) ||
      call.channel->receive(reply, Clock::time_point::max()) != ChannelStatus::ok) {
    call.broken = true;
    return failed;
  }
  auto ret = reply.json.FindMember("ret");
  if (ret == reply.json.MemberEnd() || !ret->value.IsInt64()) {
    call.broken = true;
    return failed;
  }
  const std::int64_t value = ret->value.GetInt64();
  if (reply_out != nullptr) {
    *reply_out = std::move(reply);
  } else if (reply.bytes > 0) {
    call.broken = true;  // bytes nobody asked for
    return failed;
  }
  return value;
}

// A request that needs no answer: held back until the next request or the end of the call.
void hold(RemoteCall& call, std::string line) {
  if (call.broken) return;
  line.insert(line.size() - 1, ",\"reply\":false");
  call.held += line;
  call.held += '\n';
}

std::string num(std::int64_t v) {
  return std::to_string(v);
}
std::string unum(std::uint64_t v) {
  return std::to_string(v);
}

const char* host_user(ops_call* call) {
  return remote(call).user.c_str();
}
int host_user_dir(ops_call* call) {
  return remote(call).user_dir.get();
}
int host_scratch_dir(ops_call* call) {
  return remote(call).scratch_dir;
}
int host_node_scratch_dir(ops_call* call) {
  const RemoteCall& c = remote(call);
  return c.node_scratch_dir >= 0 ? c.node_scratch_dir : c.scratch_dir;
}
const char* host_settings(ops_call* call) {
  return remote(call).settings.c_str();
}
uint64_t host_payload_size(ops_call* call) {
  return remote(call).payload;
}

int64_t host_read_payload(ops_call* c, void* buf, size_t cap) {
  RemoteCall& call = remote(c);
  if (cap == 0) return 0;
  WorkerMessage reply;
  const std::int64_t n = request(
      call, "{\"host\":\"read_payload\",\"cap\":" + unum(std::min(cap, kMaxChunk)) + "}", &reply);
  if (n <= 0) return n;
  if (reply.bytes != static_cast<std::uint64_t>(n) || static_cast<std::size_t>(n) > cap ||
      call.channel->read_bytes(buf, static_cast<std::size_t>(n), Clock::time_point::max()) !=
          ChannelStatus::ok) {
    call.broken = true;
    return -1;
  }
  return n;
}

int host_send_result(ops_call* c, const char* result_json, size_t len, uint64_t payload_size) {
  RemoteCall& call = remote(c);
  std::string text(result_json ? result_json : "", result_json ? len : 0);
  json::JsonError error;
  if (!json::validate_strict_object(text, error)) {
    hold(call, "{\"host\":\"fail\",\"code\":15,\"message\":" +
                   message_json("the operation's result is not one JSON object") + "}");
    return -1;
  }
  // The result goes as raw bytes after the line, so the server validates it once instead
  // of parsing it out of the line and writing it out again.
  std::string line = "{\"host\":\"send_result\",\"payload_size\":" + unum(payload_size) +
                     ",\"bytes\":" + unum(text.size()) + "}";
  if (payload_size > 0) {
    return static_cast<int>(
        request(call, line, nullptr,
                std::span(reinterpret_cast<const std::byte*>(text.data()), text.size())));
  }
  // Nothing follows a result without payload, so the plugin needs no answer to go on: it is
  // sent with "done". (A connection that fails meanwhile is the server's to handle.)
  hold(call, std::move(line));
  if (!call.broken) call.held += text;
  return 0;
}

int host_write_payload(ops_call* c, const void* buf, size_t len) {
  RemoteCall& call = remote(c);
  const auto* bytes = static_cast<const std::byte*>(buf);
  while (len > 0) {
    const std::size_t chunk = std::min(len, kMaxChunk);
    if (request(call, "{\"host\":\"write_payload\",\"bytes\":" + unum(chunk) + "}", nullptr,
                std::span(bytes, chunk)) != 0) {
      return -1;
    }
    bytes += chunk;
    len -= chunk;
  }
  return 0;
}

int host_send_file(ops_call* c, int fd, uint64_t offset, uint64_t len) {
  return static_cast<int>(
      request(remote(c),
              "{\"host\":\"send_file\",\"offset\":" + unum(offset) + ",\"len\":" + unum(len) + "}",
              nullptr, {}, fd));
}

void host_fail(ops_call* c, int code, const char* message) {
  hold(remote(c),
       "{\"host\":\"fail\",\"code\":" + num(code) + ",\"message\":" + message_json(message) + "}");
}

void host_fail_details(ops_call* c, int code, const char* message, const char* details) {
  json::JsonError error;
  if (details == nullptr || !json::validate_strict_object(details, error)) {
    // As in-process: details that are not one JSON object make the answer `internal`.
    hold(remote(c), "{\"host\":\"fail\",\"code\":15,\"message\":" +
                        message_json("the operation gave invalid error details") + "}");
    return;
  }
  std::string text(details);
  for (char& ch : text) {
    if (ch == '\n' || ch == '\r') ch = ' ';
  }
  hold(remote(c), "{\"host\":\"fail_details\",\"code\":" + num(code) +
                      ",\"message\":" + message_json(message) + ",\"details\":" + text + "}");
}

void host_log(ops_call* c, int level, const char* message) {
  std::string line = "{\"host\":\"log\",\"level\":" + num(level) + ",\"message\":";
  quote(core::printable(message ? message : "", 4096), line);
  hold(remote(c), line + "}");
}

// A request with string arguments: OPS_INVALID_ARGS when one is not valid UTF-8.
std::int64_t named_request(ops_call* c, const char* fn,
                           std::initializer_list<std::pair<const char*, const char*>> strings,
                           const std::string& rest = {}, std::int64_t failed = OPS_UNAVAILABLE) {
  std::string line = std::string("{\"host\":\"") + fn + "\"";
  for (const auto& [key, value] : strings) {
    line += std::string(",\"") + key + "\":";
    if (value == nullptr || !quote(value, line)) return OPS_INVALID_ARGS;
  }
  return request(remote(c), line + rest + "}", nullptr, {}, -1, failed);
}

int host_create_user(ops_call* c, const char* name, const char* key) {
  return static_cast<int>(named_request(c, "create_user", {{"name", name}, {"key", key}}));
}

int host_quota_reserve(ops_call* c, uint64_t bytes, uint64_t files, uint64_t* token) {
  WorkerMessage reply;
  RemoteCall& call = remote(c);
  const std::int64_t r = request(call,
                                 "{\"host\":\"quota_reserve\",\"reserve_bytes\":" + unum(bytes) +
                                     ",\"reserve_files\":" + unum(files) + "}",
                                 &reply, {}, -1, OPS_UNAVAILABLE);
  auto t = reply.json.IsObject() ? reply.json.FindMember("token") : reply.json.MemberEnd();
  if (token != nullptr) {
    *token = (reply.json.IsObject() && t != reply.json.MemberEnd() && t->value.IsUint64())
                 ? t->value.GetUint64()
                 : 0;
  }
  return static_cast<int>(r);
}

int host_quota_commit(ops_call* c, uint64_t token, int64_t bytes, int64_t files) {
  return static_cast<int>(request(remote(c),
                                  "{\"host\":\"quota_commit\",\"token\":" + unum(token) +
                                      ",\"bytes_delta\":" + num(bytes) +
                                      ",\"files_delta\":" + num(files) + "}",
                                  nullptr, {}, -1, OPS_UNAVAILABLE));
}

int host_quota_release(ops_call* c, uint64_t token) {
  return static_cast<int>(request(remote(c),
                                  "{\"host\":\"quota_release\",\"token\":" + unum(token) + "}",
                                  nullptr, {}, -1, OPS_UNAVAILABLE));
}

int host_quota_hold(ops_call* c, uint64_t token, const char* tag) {
  return static_cast<int>(
      named_request(c, "quota_hold", {{"tag", tag}}, ",\"token\":" + unum(token)));
}

int host_quota_commit_held(ops_call* c, const char* tag, int64_t bytes, int64_t files) {
  return static_cast<int>(
      named_request(c, "quota_commit_held", {{"tag", tag}},
                    ",\"bytes_delta\":" + num(bytes) + ",\"files_delta\":" + num(files)));
}

int host_quota_release_held(ops_call* c, const char* tag) {
  return static_cast<int>(named_request(c, "quota_release_held", {{"tag", tag}}));
}

void host_usage_adjust(ops_call* c, int64_t bytes, int64_t files) {
  hold(remote(c), "{\"host\":\"usage_adjust\",\"bytes_delta\":" + num(bytes) +
                      ",\"files_delta\":" + num(files) + "}");
}

int host_user_exists(ops_call* c, const char* name) {
  return static_cast<int>(named_request(c, "user_exists", {{"name", name}}, {}, 0)) == 1 ? 1 : 0;
}

int host_create_user_with_quota(ops_call* c, const char* name, const char* key, int64_t qb,
                                int64_t qf) {
  return static_cast<int>(
      named_request(c, "create_user_with_quota", {{"name", name}, {"key", key}},
                    ",\"quota_bytes\":" + num(qb) + ",\"quota_files\":" + num(qf)));
}

int host_remove_user(ops_call* c, const char* name) {
  return static_cast<int>(named_request(c, "remove_user", {{"name", name}}));
}

int host_rekey_user(ops_call* c, const char* name, const char* key) {
  return static_cast<int>(named_request(c, "rekey_user", {{"name", name}, {"key", key}}));
}

int host_set_quota(ops_call* c, const char* name, int64_t qb, int64_t qf) {
  return static_cast<int>(
      named_request(c, "set_quota", {{"name", name}},
                    ",\"quota_bytes\":" + num(qb) + ",\"quota_files\":" + num(qf)));
}

int64_t host_get_usage(ops_call* c, const char* name, char* buf, size_t cap) {
  std::string line = "{\"host\":\"get_usage\",\"name\":";
  if (name == nullptr) {
    line += "null";
  } else if (!quote(name, line)) {
    return -OPS_NOT_FOUND;
  }
  WorkerMessage reply;
  const std::int64_t r = request(remote(c), line + "}", &reply, {}, -1, -OPS_UNAVAILABLE);
  if (r < 0) return r;
  auto usage = reply.json.FindMember("usage");
  if (usage == reply.json.MemberEnd()) return -OPS_INTERNAL;
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  usage->value.Accept(writer);
  const std::size_t n = buffer.GetSize();
  if (n < cap) {
    std::memcpy(buf, buffer.GetString(), n);
    buf[n] = '\0';
  }
  return static_cast<int64_t>(n);
}

int64_t host_close_user_connections(ops_call* c, const char* name, int except_this) {
  return named_request(
      c, "close_user_connections", {{"name", name}},
      std::string(",\"except_this_connection\":") + (except_this ? "true" : "false"), 0);
}

const ops_host_v1 kRemoteHost = {
    sizeof(ops_host_v1),
    host_user,
    host_user_dir,
    host_scratch_dir,
    host_settings,
    host_payload_size,
    host_read_payload,
    host_send_result,
    host_write_payload,
    host_send_file,
    host_fail,
    host_log,
    host_create_user,
    host_fail_details,
    host_quota_reserve,
    host_quota_commit,
    host_quota_release,
    host_quota_hold,
    host_quota_commit_held,
    host_quota_release_held,
    host_usage_adjust,
    host_user_exists,
    host_create_user_with_quota,
    host_remove_user,
    host_rekey_user,
    host_set_quota,
    host_get_usage,
    host_close_user_connections,
    host_node_scratch_dir,
};

}  // namespace

const ops_host_v1* remote_host_vtable() noexcept {
  return &kRemoteHost;
}

bool finish_call(RemoteCall& call, int code) {
  if (call.broken) return false;
  return call.channel->send("{\"done\":" + std::to_string(code) + "}", {}, {},
                            Clock::time_point::max(), call.held);
}

}  // namespace ops::isolation
