#include "isolation/worker_channel.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "opserver/strict_json.hpp"

namespace ops::isolation {
namespace {

constexpr std::size_t kMaxFdsPerMessage = 4;
constexpr std::size_t kReadSize = 64u << 10;

int millis_until(Clock::time_point deadline) {
  if (deadline == Clock::time_point::max()) return -1;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1 << 30));
}

}  // namespace

bool WorkerChannel::wait(short events, Clock::time_point deadline) {
  pollfd p{socket_.get(), events, 0};
  for (;;) {
    const int n = ::poll(&p, 1, millis_until(deadline));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return false;
  }
}

bool WorkerChannel::send(std::string_view line, std::span<const std::byte> data,
                         std::span<const int> fds, Clock::time_point deadline,
                         std::string_view before) {
  static const char newline = '\n';
  iovec iov[4] = {{const_cast<char*>(before.data()), before.size()},
                  {const_cast<char*>(line.data()), line.size()},
                  {const_cast<char*>(&newline), 1},
                  {const_cast<std::byte*>(data.data()), data.size()}};
  std::size_t iov_first = before.empty() ? 1 : 0;
  const std::size_t iov_count = data.empty() ? 3 : 4;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
  bool fds_pending = !fds.empty() && fds.size() <= kMaxFdsPerMessage;
  if (fds.size() > kMaxFdsPerMessage) return false;
  while (iov_first < iov_count) {
    msghdr msg{};
    msg.msg_iov = iov + iov_first;
    msg.msg_iovlen = iov_count - iov_first;
    if (fds_pending) {
      std::memset(control, 0, sizeof control);
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    const ssize_t n = ::sendmsg(socket_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        if (!wait(POLLOUT, deadline)) return false;
        continue;
      }
      return false;
    }
    fds_pending = false;
    std::size_t sent = static_cast<std::size_t>(n);
    while (iov_first < iov_count && sent >= iov[iov_first].iov_len) {
      sent -= iov[iov_first].iov_len;
      ++iov_first;
    }
    if (iov_first < iov_count) {
      iov[iov_first].iov_base = static_cast<char*>(iov[iov_first].iov_base) + sent;
      iov[iov_first].iov_len -= sent;
    }
  }
  return true;
}

ChannelStatus WorkerChannel::fill(Clock::time_point deadline, bool now) {
  if (begin_ == end_) begin_ = end_ = 0;
  if (buffer_.size() - end_ < kReadSize) {
    if (begin_ > 0) {
      std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (buffer_.size() - end_ < kReadSize) buffer_.resize(end_ + kReadSize);
  }
  for (;;) {
    iovec iov{buffer_.data() + end_, buffer_.size() - end_};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    // Without a deadline (a worker waiting for its next call) one blocking recvmsg; with
    // one, poll first: the answer is rarely there already, and each system call counts on
    // a path that runs once per isolated call.
    // `now`: one attempt without waiting (the caller waits for readiness itself).
    const bool forever = deadline == Clock::time_point::max() && !now;
    if (!forever && !now && !wait(POLLIN, deadline)) return ChannelStatus::timeout;
    const ssize_t n =
        ::recvmsg(socket_.get(), &msg, MSG_CMSG_CLOEXEC | (forever ? 0 : MSG_DONTWAIT));
    if (n < 0) {
      if (errno == EAGAIN && now) return ChannelStatus::timeout;
      if (errno == EINTR || errno == EAGAIN) continue;
      return ChannelStatus::closed;
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds_.emplace_back(fd);
      }
    }
    // More descriptors than a message may carry: the peer is misbehaving (they were
    // closed by the kernel, MSG_CTRUNC); nothing is lost by refusing the conversation.
    if (msg.msg_flags & MSG_CTRUNC) return ChannelStatus::malformed;
    if (n == 0) return ChannelStatus::closed;
    end_ += static_cast<std::size_t>(n);
    return ChannelStatus::ok;
  }
}

ChannelStatus WorkerChannel::take_line(WorkerMessage& message, std::size_t& scanned) {
  const char* start = buffer_.data() + scanned;
  const void* newline = end_ > scanned ? std::memchr(start, '\n', end_ - scanned) : nullptr;
  if (newline == nullptr) {
    scanned = end_;
    return end_ - begin_ > kMaxLine ? ChannelStatus::malformed : ChannelStatus::timeout;
  }
  const std::size_t line_end = static_cast<const char*>(newline) - buffer_.data();
  std::string_view line(buffer_.data() + begin_, line_end - begin_);
  begin_ = line_end + 1;
  json::JsonError error;
  message.json = rapidjson::Document();
  if (!json::parse_strict_json(line, message.json, error) || !message.json.IsObject()) {
    return ChannelStatus::malformed;
  }
  message.bytes = 0;
  if (auto it = message.json.FindMember("bytes"); it != message.json.MemberEnd()) {
    if (!it->value.IsUint64()) return ChannelStatus::malformed;
    message.bytes = it->value.GetUint64();
  }
  return ChannelStatus::ok;
}

ChannelStatus WorkerChannel::receive(WorkerMessage& message, Clock::time_point deadline) {
  std::size_t scanned = begin_;
  for (;;) {
    if (ChannelStatus st = take_line(message, scanned); st != ChannelStatus::timeout) return st;
    const std::size_t offset = scanned - begin_;
    if (ChannelStatus st = fill(deadline); st != ChannelStatus::ok) return st;
    scanned = begin_ + offset;
  }
}

ChannelStatus WorkerChannel::receive_now(WorkerMessage& message) {
  std::size_t scanned = begin_;
  for (;;) {
    if (ChannelStatus st = take_line(message, scanned); st != ChannelStatus::timeout) return st;
    const std::size_t offset = scanned - begin_;
    if (ChannelStatus st = fill(Clock::time_point::min(), true); st != ChannelStatus::ok) {
      return st;
    }
    scanned = begin_ + offset;
  }
}

std::ptrdiff_t WorkerChannel::send_now(std::string_view line) {
  static const char newline = '\n';
  iovec iov[2] = {{const_cast<char*>(line.data()), line.size()}, {const_cast<char*>(&newline), 1}};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  for (;;) {
    const ssize_t n = ::sendmsg(socket_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    return errno == EAGAIN ? 0 : -1;
  }
}

ChannelStatus WorkerChannel::read_bytes(void* out, std::size_t len, Clock::time_point deadline) {
  char* dst = static_cast<char*>(out);
  const std::size_t buffered = std::min(len, end_ - begin_);
  std::memcpy(dst, buffer_.data() + begin_, buffered);
  begin_ += buffered;
  std::size_t done = buffered;
  // The rest straight from the socket into `out`: a payload chunk is copied once here.
  while (done < len) {
    const ssize_t n = ::recv(socket_.get(), dst + done, len - done, MSG_DONTWAIT);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) return ChannelStatus::closed;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return ChannelStatus::closed;
    if (!wait(POLLIN, deadline)) return ChannelStatus::timeout;
  }
  return ChannelStatus::ok;
}

Fd WorkerChannel::take_fd() {
  if (fds_.empty()) return Fd();
  Fd fd = std::move(fds_.front());
  fds_.pop_front();
  return fd;
}

}  // namespace ops::isolation
