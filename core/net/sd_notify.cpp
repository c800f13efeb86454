#include "net/sd_notify.hpp"

#ifndef OPS_HAVE_SYSTEMD  // set by core/CMakeLists.txt when libsystemd is found
#define OPS_HAVE_SYSTEMD 0
#endif

#include <spdlog/spdlog.h>
#if OPS_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

namespace ops::core {
namespace {

void send_state(const std::string& state) {
  if (std::getenv("NOTIFY_SOCKET") == nullptr) return;
#if OPS_HAVE_SYSTEMD
  // unset_environment = 0: the variable stays for a later reload or stop notification.
  const int rc = ::sd_notify(0, state.c_str());
  if (rc < 0) {
    spdlog::warn("telling systemd {} failed: {}", state.substr(0, state.find('\n')),
                 std::strerror(-rc));
  }
#else
  (void)state;
  static std::atomic<bool> said{false};
  if (!said.exchange(true)) {
    spdlog::warn("NOTIFY_SOCKET is set, but this build has no libsystemd to notify it");
  }
#endif
}

}  // namespace

bool notify_supported() {
  return OPS_HAVE_SYSTEMD != 0;
}

void notify_ready() {
  send_state("READY=1");
}

void notify_reloading() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  const long long usec = static_cast<long long>(now.tv_sec) * 1000000LL + now.tv_nsec / 1000;
  send_state("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

void notify_stopping() {
  send_state("STOPPING=1");
}

}  // namespace ops::core
