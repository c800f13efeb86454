#include "net/sd_notify.hpp"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

namespace ops::core {
namespace {

void send_state(const std::string& state) {
  if (std::getenv("NOTIFY_SOCKET") == nullptr) return;
  // unset_environment = 0: the variable stays for a later reload or stop notification.
  const int rc = ::sd_notify(0, state.c_str());
  if (rc < 0) spdlog::warn("sd_notify({}) failed: {}", state, std::strerror(-rc));
}

}  // namespace

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
