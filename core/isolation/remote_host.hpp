// The worker side of an isolated .so: an ops_host_v1 whose every function is a request to
// the server over the worker's socket (docs/PLUGINS.md, "The worker protocol"), so the
// plugin runs unmodified. Used by opserver-plugin-host only, one call at a time.
#pragma once

#include <cstdint>
#include <string>

#include "isolation/worker_channel.hpp"
#include "opserver/plugin_abi.h"

namespace ops::isolation {

// What the plugin's ops_call* points to in a worker.
struct RemoteCall {
  WorkerChannel* channel = nullptr;
  std::string user;
  std::string settings;  // the operation's settings, JSON text
  Fd user_dir;
  // Borrowed from the worker's loop, which keeps them from the worker's first call on
  // (the server sends them with that call only: they never change).
  int scratch_dir = -1;
  int node_scratch_dir = -1;  // the third descriptor, when the server sent one
  std::uint64_t payload = 0;
  bool broken = false;  // the server is gone or the conversation failed: stop
  // Requests that need no answer ("reply": false: a result without payload, fail, log,
  // usage_adjust; whole lines, each followed by the raw bytes it announces), held back and sent
  // with the next request or with "done", so a simple call costs the server one wake-up for its
  // answer instead of one per message.
  std::string held;
};

// Sends what `call` held back and {"done": code}. False if the server is gone.
bool finish_call(RemoteCall& call, int code);

const ops_host_v1* remote_host_vtable() noexcept;

inline ops_call* as_call(RemoteCall* call) {
  return reinterpret_cast<ops_call*>(call);
}

}  // namespace ops::isolation
