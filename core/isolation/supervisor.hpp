// The one thread that starts and retires worker processes. Starting them here, not on
// the handler thread that needs one, matters: a worker asks to be killed when its parent
// dies (PR_SET_PDEATHSIG), and Linux means the parent *thread*, so workers started by a
// handler thread that later exits would die with it. Retiring here keeps the wait for a
// worker's exit (and its shutdown hook) off handler and I/O threads.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "opserver/error.hpp"
#include "opserver/fd.hpp"

namespace ops::isolation {

struct SpawnedProcess {
  pid_t pid = -1;
  Fd socket;  // the server's end of the worker's socket
};

// Starts `argv` (argv[0] a path) with one end of a new socketpair as its fd 3.
Result<SpawnedProcess> spawn_worker(const std::vector<std::string>& argv);

// Ends a worker: closes its socket (a healthy worker then exits by itself, running its
// plugin's shutdown hook), SIGKILLs it after `grace`, and reaps it. Returns at once.
void retire_worker(pid_t pid, Fd socket, std::chrono::milliseconds grace);

// SIGKILLs and reaps a worker now, on the calling thread (a crashed or hung one). Returns
// how it ended, for the log ("killed by signal 11 (Segmentation fault)").
std::string kill_worker(pid_t pid);

// Waits until every retired worker has been reaped, at most `limit` (server stop).
void drain_retired_workers(std::chrono::milliseconds limit);

// Processes started and not yet reaped (tests and metrics: a leak shows here).
std::size_t live_worker_processes();

}  // namespace ops::isolation
