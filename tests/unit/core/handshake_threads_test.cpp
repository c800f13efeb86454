// HandshakeThreads (core/net/handshake_threads.hpp): work posted to its strands runs on its
// own threads, never the caller's, at the lowered priority, and stops with the object.
#include "net/handshake_threads.hpp"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <future>
#include <string>

namespace ops::core {
namespace {

struct Seen {
  std::string name;
  int nice = 0;
  pid_t tid = 0;
};

Seen run_on(HandshakeThreads& threads) {
  std::promise<Seen> seen;
  boost::asio::post(threads.strand(), [&seen] {
    char name[16] = {};
    ::pthread_getname_np(::pthread_self(), name, sizeof name);
    const auto tid = static_cast<pid_t>(::syscall(SYS_gettid));
    errno = 0;
    const int nice = ::getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
    seen.set_value({name, nice, tid});
  });
  return seen.get_future().get();
}

TEST(HandshakeThreads, WorkRunsOnItsOwnLowerPriorityThreads) {
  const int caller_nice = ::getpriority(PRIO_PROCESS, 0);
  HandshakeThreads threads(2);
  EXPECT_EQ(threads.size(), 2u);
  Seen seen = run_on(threads);
  EXPECT_EQ(seen.name, "ops-tls-hs");
  EXPECT_NE(seen.tid, static_cast<pid_t>(::syscall(SYS_gettid)));
  // Lowered by 5 from the caller's, unless the caller was already near the floor.
  EXPECT_EQ(seen.nice, std::min(caller_nice + 5, 19));
}

TEST(HandshakeThreads, NiceZeroKeepsThePriorityAndCountsAreAtLeastOne) {
  const int caller_nice = ::getpriority(PRIO_PROCESS, 0);
  HandshakeThreads threads(0, 0);
  EXPECT_EQ(threads.size(), 1u);
  EXPECT_EQ(run_on(threads).nice, caller_nice);
  EXPECT_GE(HandshakeThreads::default_count(), 1u);
}

}  // namespace
}  // namespace ops::core
