#include "opserver/fd.hpp"

#include <unistd.h>

namespace ops::sdk {

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) reset(other.release());
  return *this;
}

Fd::~Fd() {
  reset();
}

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);  // close(2) on Linux releases the fd even on EINTR.
  fd_ = fd;
}

}  // namespace ops::sdk
