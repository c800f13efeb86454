// opserver-plugin-host: the worker process of an isolated operation. The server starts it
// with one end of a socketpair as fd 3; it confines itself (limits, no new privileges,
// another uid, Landlock), then either loads the operation's .so through the same loader
// and ABI checks as the server and serves calls over the worker protocol (remote_host.cpp
// gives the plugin an ops_host_v1 that forwards to the server), or, for an exec
// operation, hands the socket to the program as its stdin and stdout and executes it.
// Not meant to be run by hand; `--help` says so.
#include <linux/close_range.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "isolation/confinement.hpp"
#include "isolation/remote_host.hpp"
#include "isolation/worker_channel.hpp"
#include "plugin_host/lifecycle.hpp"
#include "plugin_host/plugin_loader.hpp"

namespace {

using namespace ops::isolation;

constexpr int kSocketFd = 3;

struct Options {
  long parent = -1;
  std::string storage;
  ProcessLimits limits;
  std::uint64_t cpu_seconds = 0;
  std::uint64_t shutdown_ms = 2000;  // the plugin's shutdown hook, when the worker retires
  std::string run_as;
  std::string cwd;
  std::string plugin;
  std::vector<std::string> exec;
};

[[noreturn]] void usage(int code) {
  std::fputs(
      "opserver-plugin-host: runs one isolated opserver operation in a worker process.\n"
      "It is started by opserver for operations with \"isolation\": \"process\" or \"exec\"\n"
      "in ops.json (docs/PLUGINS.md), with its socket as fd 3; it is not run by hand.\n"
      "  --parent PID --storage DIR [--memory BYTES] [--cpu-seconds N] [--open-files N]\n"
      "  [--run-as USER] [--shutdown-ms MS] (--plugin FILE.so | [--cwd DIR] --exec -- PROGRAM "
      "[ARGS...])\n",
      code == 0 ? stdout : stderr);
  std::exit(code);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(2);
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") usage(0);
    if (arg == "--parent") {
      o.parent = std::strtol(value().c_str(), nullptr, 10);
    } else if (arg == "--storage") {
      o.storage = value();
    } else if (arg == "--memory") {
      o.limits.memory_bytes = std::strtoull(value().c_str(), nullptr, 10);
    } else if (arg == "--open-files") {
      o.limits.open_files = std::strtoull(value().c_str(), nullptr, 10);
    } else if (arg == "--cpu-seconds") {
      o.cpu_seconds = std::strtoull(value().c_str(), nullptr, 10);
    } else if (arg == "--run-as") {
      o.run_as = value();
    } else if (arg == "--shutdown-ms") {
      o.shutdown_ms = std::strtoull(value().c_str(), nullptr, 10);
    } else if (arg == "--cwd") {
      o.cwd = value();
    } else if (arg == "--plugin") {
      o.plugin = value();
    } else if (arg == "--exec") {
      if (i + 1 < argc && std::string(argv[i + 1]) == "--") ++i;
      for (++i; i < argc; ++i) o.exec.emplace_back(argv[i]);
    } else {
      usage(2);
    }
  }
  if (o.parent <= 0 || o.storage.empty() || (o.plugin.empty() == o.exec.empty())) usage(2);
  return o;
}

// Tells the server why this worker cannot serve, as the protocol's first message.
[[noreturn]] void refuse(WorkerChannel& channel, const std::string& why) {
  std::string line = "{\"error\":\"";
  for (char ch : why.substr(0, 1024)) {  // a short reason, plain ASCII
    const auto byte = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') line += '\\';
    line += (byte < 0x20 || byte > 0x7e) ? '?' : ch;
  }
  line += "\"}";
  channel.send(line);
  std::exit(1);
}

[[noreturn]] void run_exec(const Options& o) {
  if (o.cpu_seconds > 0) limit_cpu_from_now(o.cpu_seconds);
  // An interpreter must read its libraries; it may write only beneath the storage root.
  if (auto applied = restrict_filesystem(o.storage, true); !applied) {
    WorkerChannel channel{ops::Fd(kSocketFd)};
    refuse(channel, applied.error().message);
  }
  if (!o.cwd.empty() && ::chdir(o.cwd.c_str()) != 0) {
    WorkerChannel channel{ops::Fd(kSocketFd)};
    refuse(channel, "cannot enter " + o.cwd + ": " + std::strerror(errno));
  }
  ::dup2(kSocketFd, 0);
  ::dup2(kSocketFd, 1);
  ::close(kSocketFd);
  std::vector<char*> args;
  for (const std::string& a : o.exec) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execvp(args[0], args.data());
  const int err = errno;
  WorkerChannel channel{ops::Fd(::dup(1))};
  refuse(channel, "cannot run " + o.exec[0] + ": " + std::strerror(err));
}

std::string member_text(const rapidjson::Value& object, const char* key) {
  auto it = object.FindMember(key);
  if (it == object.MemberEnd()) return {};
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  it->value.Accept(writer);
  return {buffer.GetString(), buffer.GetSize()};
}

[[noreturn]] void run_plugin(const Options& o) {
  WorkerChannel channel{ops::Fd(kSocketFd)};
  WorkerMessage init;
  if (channel.receive(init, Clock::now() + std::chrono::seconds(10)) != ChannelStatus::ok) {
    std::exit(1);
  }
  auto body = init.json.FindMember("init");
  if (body == init.json.MemberEnd() || !body->value.IsObject() ||
      !body->value.HasMember("operation") || !body->value["operation"].IsString()) {
    refuse(channel, "the first message is not \"init\"");
  }
  const std::string operation = body->value["operation"].GetString();
  std::string settings = member_text(body->value, "settings");
  if (settings.empty()) settings = "{}";

  auto loaded = ops::core::load_plugin_file(o.plugin);
  if (!loaded) refuse(channel, loaded.error().message);
  const ops_op_v1* op = nullptr;
  for (const auto& candidate : *loaded) {
    if (operation == candidate.op->name) op = candidate.op;
  }
  if (op == nullptr)
    refuse(channel, o.plugin + " does not provide operation \"" + operation + "\"");
  rapidjson::Document schema;
  if (schema.Parse(op->args_schema).HasParseError() || !schema.IsObject()) {
    refuse(channel, "operation \"" + operation + "\" has an args schema that is not a JSON object");
  }
  // The lifecycle hooks (ABI minor 1) as in-process: settings against the plugin's schema,
  // then init; a refusal is this worker's start-up error, which the server logs.
  if (ops::Status st = ops::core::check_settings(operation, op, settings); !st) {
    refuse(channel, st.error().message);
  }
  if (ops::Status st = ops::core::run_init(operation, op, settings); !st) {
    refuse(channel, st.error().message);
  }
  // The code is loaded: from here on this process touches nothing but the storage tree
  // (the user's directory and scratch arrive as descriptors beneath it).
  if (auto applied = restrict_filesystem(o.storage, false); !applied) {
    refuse(channel, applied.error().message);
  }

  std::string ready = "{\"ready\":{\"summary\":";
  auto quote = [](const char* text) {
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    const std::string s = text ? text : "";
    writer.String(s.c_str(), static_cast<rapidjson::SizeType>(s.size()));
    return std::string(buffer.GetString(), buffer.GetSize());
  };
  ready += quote(op->summary) + ",\"version\":" + quote(op->version) + ",\"payload\":" +
           quote(op->payload == OPS_PAYLOAD_IN    ? "in"
                 : op->payload == OPS_PAYLOAD_OUT ? "out"
                                                  : "none") +
           ",\"args_schema\":";
  {
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    schema.Accept(writer);
    ready += std::string(buffer.GetString(), buffer.GetSize());
  }
  ready += "}}";
  if (!channel.send(ready)) std::exit(1);

  // The scratch directories come with the first call (with every call from an older
  // server) and are kept: later calls carry only the user's directory.
  ops::Fd scratch_dir;
  ops::Fd node_scratch_dir;
  for (;;) {
    WorkerMessage message;
    if (channel.receive(message, Clock::time_point::max()) != ChannelStatus::ok) {
      // The server retired this worker (or is gone): the plugin's shutdown hook, bounded.
      ops::core::run_shutdown(op, std::chrono::milliseconds(o.shutdown_ms));
      std::_Exit(0);
    }
    if (message.json.HasMember("health")) {
      auto unhealthy = ops::core::run_health(op);
      std::string reply = "{\"ret\":" + std::string(unhealthy ? "1" : "0");
      if (unhealthy) {
        rapidjson::StringBuffer buffer;
        rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
        writer.String(unhealthy->c_str(), static_cast<rapidjson::SizeType>(unhealthy->size()));
        reply += ",\"reason\":" + std::string(buffer.GetString(), buffer.GetSize());
      }
      if (!channel.send(reply + "}")) std::_Exit(1);
      continue;
    }
    auto c = message.json.FindMember("call");
    if (c == message.json.MemberEnd() || !c->value.IsObject() || channel.pending_fds() < 1 ||
        (channel.pending_fds() < 2 && !scratch_dir.valid())) {
      std::exit(1);
    }
    RemoteCall call;
    call.channel = &channel;
    call.settings = settings;
    call.user_dir = channel.take_fd();
    if (channel.pending_fds() > 0) {
      scratch_dir = channel.take_fd();
      node_scratch_dir = channel.pending_fds() > 0 ? channel.take_fd() : ops::Fd();
    }
    call.scratch_dir = scratch_dir.get();
    call.node_scratch_dir = node_scratch_dir.valid() ? node_scratch_dir.get() : -1;
    channel.drop_fds();
    const rapidjson::Value& v = c->value;
    if (v.HasMember("user") && v["user"].IsString()) call.user = v["user"].GetString();
    if (v.HasMember("payload") && v["payload"].IsUint64()) call.payload = v["payload"].GetUint64();
    std::string args = member_text(v, "args");
    if (args.empty()) args = "{}";
    if (o.cpu_seconds > 0) limit_cpu_from_now(o.cpu_seconds);
    const int code = op->call(remote_host_vtable(), as_call(&call), args.c_str(), args.size());
    if (!finish_call(call, code)) std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  // Nothing of the server's but the socket: a worker must not hold its listeners or files.
  ::syscall(SYS_close_range, kSocketFd + 1, ~0U, 0);
  auto fail = [&](const std::string& why) {
    WorkerChannel channel{ops::Fd(kSocketFd)};
    refuse(channel, why);
  };
  if (ops::Status st = apply_limits(o.limits); !st) fail(st.error().message);
  if (!o.run_as.empty()) {
    if (ops::Status st = become_user(o.run_as); !st) fail(st.error().message);
  }
  if (ops::Status st = bind_to_parent(o.parent); !st) fail(st.error().message);
  if (!o.exec.empty()) run_exec(o);
  run_plugin(o);
}
