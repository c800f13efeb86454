#include "net/handshake_threads.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/strand.hpp>

namespace ops::core {
namespace asio = boost::asio;

HandshakeThreads::HandshakeThreads(unsigned threads, int nice)
    : io_(static_cast<int>(std::max(1u, threads))), work_(io_.get_executor()) {
  threads = std::max(1u, threads);
  threads_.reserve(threads);
  for (unsigned i = 0; i < threads; ++i) {
    threads_.emplace_back([this, nice] {
      ::pthread_setname_np(::pthread_self(), "ops-tls-hs");
      // Linux applies a nice value per thread (the tid is a "process" to setpriority).
      // Raising it needs no privilege; failing to is harmless.
      if (nice != 0) {
        ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), nice);
      }
      io_.run();
    });
  }
}

HandshakeThreads::~HandshakeThreads() {
  work_.reset();
  io_.stop();
  for (auto& t : threads_) t.join();
}

asio::any_io_executor HandshakeThreads::strand() {
  return asio::make_strand(io_);
}

unsigned HandshakeThreads::default_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  unsigned cpus = 0;
  if (::sched_getaffinity(0, sizeof set, &set) == 0) cpus = static_cast<unsigned>(CPU_COUNT(&set));
  if (cpus == 0) cpus = std::max(1u, std::thread::hardware_concurrency());
  return std::max(1u, cpus / 4);
}

}  // namespace ops::core
