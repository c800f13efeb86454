#include "isolation/supervisor.hpp"

#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

extern char** environ;

namespace ops::isolation {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<std::size_t> g_live{0};

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    return "killed by signal " + std::to_string(sig) + " (" + (name ? name : "?") + ")";
  }
  return "ended (status " + std::to_string(status) + ")";
}

struct Retiree {
  pid_t pid;
  Clock::time_point kill_at;
};

// A process-lifetime thread: never joined, so that it outlives every handler thread.
class Supervisor {
 public:
  static Supervisor& instance() {
    static Supervisor* s = new Supervisor;  // never destroyed: the thread may still run
    return *s;
  }

  Result<SpawnedProcess> spawn(const std::vector<std::string>& argv) {
    std::packaged_task<Result<SpawnedProcess>()> task([&] { return do_spawn(argv); });
    auto result = task.get_future();
    {
      std::lock_guard lock(mutex_);
      jobs_.emplace_back([&task] { task(); });
    }
    wake_.notify_one();
    return result.get();
  }

  void retire(pid_t pid, std::chrono::milliseconds grace) {
    {
      std::lock_guard lock(mutex_);
      retirees_.push_back({pid, Clock::now() + grace});
    }
    wake_.notify_one();
  }

  void drain(std::chrono::milliseconds limit) {
    std::unique_lock lock(mutex_);
    drained_.wait_for(lock, limit, [&] { return retirees_.empty(); });
  }

 private:
  Supervisor() {
    std::thread([this] { run(); }).detach();
  }

  static Result<SpawnedProcess> do_spawn(const std::vector<std::string>& argv) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      return Error{ErrorCode::unavailable,
                   std::string("cannot make a worker socket: ") + std::strerror(errno)};
    }
    Fd ours(pair[0]);
    Fd theirs(pair[1]);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    // dup2 onto fd 3 clears close-on-exec there; every other descriptor of the server is
    // close-on-exec, and the host closes anything above 3 anyway.
    posix_spawn_file_actions_adddup2(&actions, theirs.get(), 3);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    // Not the server's signal mask or dispositions: a worker must die of SIGTERM/SIGPIPE
    // as any process would.
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, args[0], &actions, &attr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
      return Error{ErrorCode::unavailable, "cannot start " + argv[0] + ": " + std::strerror(rc)};
    }
    g_live.fetch_add(1);
    return SpawnedProcess{pid, std::move(ours)};
  }

  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      while (!jobs_.empty()) {
        auto job = std::move(jobs_.front());
        jobs_.pop_front();
        lock.unlock();
        job();
        lock.lock();
      }
      const auto now = Clock::now();
      for (auto it = retirees_.begin(); it != retirees_.end();) {
        int status = 0;
        pid_t r = ::waitpid(it->pid, &status, WNOHANG);
        if (r == 0 && now >= it->kill_at) {
          ::kill(it->pid, SIGKILL);
          r = ::waitpid(it->pid, &status, 0);
        }
        if (r != 0) {  // reaped (or not ours any more: ECHILD)
          g_live.fetch_sub(1);
          it = retirees_.erase(it);
        } else {
          ++it;
        }
      }
      if (retirees_.empty()) drained_.notify_all();
      if (retirees_.empty()) {
        wake_.wait(lock, [&] { return !jobs_.empty() || !retirees_.empty(); });
      } else {
        wake_.wait_for(lock, std::chrono::milliseconds(10));
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable drained_;
  std::deque<std::function<void()>> jobs_;
  std::vector<Retiree> retirees_;
};

}  // namespace

Result<SpawnedProcess> spawn_worker(const std::vector<std::string>& argv) {
  return Supervisor::instance().spawn(argv);
}

void retire_worker(pid_t pid, Fd socket, std::chrono::milliseconds grace) {
  socket.reset();
  if (pid > 0) Supervisor::instance().retire(pid, grace);
}

std::string kill_worker(pid_t pid) {
  if (pid <= 0) return "not running";
  ::kill(pid, SIGKILL);
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid, &status, 0);
  } while (r < 0 && errno == EINTR);
  g_live.fetch_sub(1);
  return r == pid ? describe_status(status) : "gone";
}

void drain_retired_workers(std::chrono::milliseconds limit) {
  Supervisor::instance().drain(limit);
}

std::size_t live_worker_processes() {
  return g_live.load();
}

}  // namespace ops::isolation
