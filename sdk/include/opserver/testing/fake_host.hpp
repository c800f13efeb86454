// A fake host for unit-testing a plugin's handlers without a server, in the spirit of
// Envoy's dynamic-module SDK fakes: the test owns the call state (`ops_call`, defined here
// for test binaries only), feeds the request payload, and reads back the result, the
// response payload, the error and the log. Header-only; link nothing but your plugin.
//
//   ops_call call;
//   call.user_dir = ::open(dir, O_RDONLY | O_DIRECTORY);
//   call.payload = "hello";
//   int rc = ops::testing::invoke(*op, call, R"({"path":"a.txt"})");
//   EXPECT_EQ(rc, OPS_OK);  EXPECT_EQ(call.result, ...);
//
// Quotas: this host keeps none (quota_reserve gives token 0, every commit succeeds), and
// it knows no other users (user_exists says no; the user services answer OPS_UNAVAILABLE),
// unless a test sets the hooks below.
#pragma once

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "opserver/plugin_abi.h"

// The call state of the fake host. Only a test binary may define this opaque type; the
// server has its own.
struct ops_call {
  std::string user = "alice";
  int user_dir = -1;      // the caller's storage directory (the test opens it)
  int scratch = -1;       // the server-private scratch directory (the test opens it)
  int node_scratch = -1;  // this server's temporaries; -1: `scratch` serves for both
  std::string settings = "{}";

  std::string payload;        // the request payload
  std::size_t pos = 0;        // how much of it the handler has read
  std::int64_t fail_at = -1;  // read_payload fails once `pos` reaches this (a vanished client)

  bool has_result = false;
  std::string result;  // send_result's JSON
  std::uint64_t result_payload = 0;
  std::string out;  // response payload bytes (write_payload, send_file)

  int code = 0;  // fail()'s code
  std::string message;
  std::string details;  // fail_details()'s JSON object
  std::vector<std::string> logs;

  int create_user_rc = OPS_OK;
  std::vector<std::pair<std::string, std::string>> created;  // (name, key) of create_user
};

namespace ops::testing {

namespace fake_host_detail {

inline const char* user(ops_call* c) {
  return c->user.c_str();
}
inline int user_dir(ops_call* c) {
  return c->user_dir;
}
inline int scratch_dir(ops_call* c) {
  return c->scratch;
}
inline const char* settings(ops_call* c) {
  return c->settings.c_str();
}
inline std::uint64_t payload_size(ops_call* c) {
  return c->payload.size();
}
inline std::int64_t read_payload(ops_call* c, void* buf, std::size_t cap) {
  if (c->fail_at >= 0 && c->pos >= static_cast<std::size_t>(c->fail_at)) return -1;
  std::size_t n = std::min(cap, c->payload.size() - c->pos);
  if (c->fail_at >= 0) n = std::min(n, static_cast<std::size_t>(c->fail_at) - c->pos);
  std::memcpy(buf, c->payload.data() + c->pos, n);
  c->pos += n;
  return static_cast<std::int64_t>(n);
}
inline int send_result(ops_call* c, const char* json, std::size_t len, std::uint64_t payload) {
  c->has_result = true;
  c->result.assign(json, len);
  c->result_payload = payload;
  return 0;
}
inline int write_payload(ops_call* c, const void* buf, std::size_t len) {
  c->out.append(static_cast<const char*>(buf), len);
  return 0;
}
inline int send_file(ops_call* c, int fd, std::uint64_t off, std::uint64_t len) {
  std::string buf(len, '\0');
  ssize_t n = ::pread(fd, buf.data(), len, static_cast<off_t>(off));
  if (n != static_cast<ssize_t>(len)) return -1;
  c->out += buf;
  return 0;
}
inline void fail(ops_call* c, int code, const char* msg) {
  c->code = code;
  c->message = msg ? msg : "";
}
inline void log(ops_call* c, int, const char* msg) {
  c->logs.emplace_back(msg ? msg : "");
}
inline int create_user(ops_call* c, const char* name, const char* key) {
  if (c->create_user_rc == OPS_OK) c->created.emplace_back(name, key);
  return c->create_user_rc;
}
inline void fail_details(ops_call* c, int code, const char* msg, const char* details) {
  fail(c, code, msg);
  c->details = details ? details : "";
}
inline int quota_reserve(ops_call*, std::uint64_t, std::uint64_t, std::uint64_t* token) {
  *token = 0;  // no quotas here
  return OPS_OK;
}
inline int quota_commit(ops_call*, std::uint64_t, std::int64_t, std::int64_t) {
  return OPS_OK;
}
inline int quota_release(ops_call*, std::uint64_t) {
  return OPS_OK;
}
inline int quota_hold(ops_call*, std::uint64_t, const char*) {
  return OPS_OK;
}
inline int quota_commit_held(ops_call*, const char*, std::int64_t, std::int64_t) {
  return OPS_OK;
}
inline int quota_release_held(ops_call*, const char*) {
  return OPS_OK;
}
inline void usage_adjust(ops_call*, std::int64_t, std::int64_t) {}
inline int user_exists(ops_call*, const char*) {
  return 0;
}
inline int create_user_with_quota(ops_call* c, const char* name, const char* key, std::int64_t,
                                  std::int64_t) {
  return create_user(c, name, key);
}
inline int unavailable_user(ops_call*, const char*) {
  return OPS_UNAVAILABLE;
}
inline int rekey_user(ops_call*, const char*, const char*) {
  return OPS_UNAVAILABLE;
}
inline int set_quota(ops_call*, const char*, std::int64_t, std::int64_t) {
  return OPS_UNAVAILABLE;
}
inline std::int64_t get_usage(ops_call*, const char*, char*, std::size_t) {
  return -1;
}
inline std::int64_t close_user_connections(ops_call*, const char*, int) {
  return 0;
}
inline int node_scratch_dir(ops_call* c) {
  return c->node_scratch >= 0 ? c->node_scratch : c->scratch;
}

}  // namespace fake_host_detail

// The vtable, with every member of this SDK's ops_host_v1.
inline const ops_host_v1* fake_host() {
  namespace d = fake_host_detail;
  static const ops_host_v1 host = {sizeof(ops_host_v1),
                                   d::user,
                                   d::user_dir,
                                   d::scratch_dir,
                                   d::settings,
                                   d::payload_size,
                                   d::read_payload,
                                   d::send_result,
                                   d::write_payload,
                                   d::send_file,
                                   d::fail,
                                   d::log,
                                   d::create_user,
                                   d::fail_details,
                                   d::quota_reserve,
                                   d::quota_commit,
                                   d::quota_release,
                                   d::quota_hold,
                                   d::quota_commit_held,
                                   d::quota_release_held,
                                   d::usage_adjust,
                                   d::user_exists,
                                   d::create_user_with_quota,
                                   d::unavailable_user,
                                   d::rekey_user,
                                   d::set_quota,
                                   d::get_usage,
                                   d::close_user_connections,
                                   d::node_scratch_dir};
  return &host;
}

// Calls `op`'s handler as the server would, on this thread.
inline int invoke(const ops_op_v1& op, ops_call& call, std::string_view args_json,
                  const ops_host_v1* host = fake_host()) {
  return op.call(host, &call, args_json.data(), args_json.size());
}

// The operation `name` of the plugin at `so_path` (dlopen; never unloaded), or nullptr
// with the reason in `error`.
inline const ops_op_v1* load_operation(const std::string& so_path, std::string_view name,
                                       std::string* error = nullptr) {
  void* h = ::dlopen(so_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    if (error) *error = ::dlerror();
    return nullptr;
  }
  auto entry = reinterpret_cast<ops_plugin_entry_fn>(::dlsym(h, OPS_PLUGIN_ENTRY_SYMBOL));
  if (entry == nullptr) {
    if (error) *error = "no " OPS_PLUGIN_ENTRY_SYMBOL " in " + so_path;
    return nullptr;
  }
  const ops_plugin_v1* plugin = entry();
  for (std::size_t i = 0; i < plugin->op_count; ++i) {
    if (name == plugin->ops[i].name) return &plugin->ops[i];
  }
  if (error) *error = "no operation " + std::string(name) + " in " + so_path;
  return nullptr;
}

}  // namespace ops::testing
