// Ways of connecting that several integration tests need: a login retried while another
// server learns of a new user, and a raw TCP connection from a chosen loopback address.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "harness/server_process.hpp"

namespace ops::test {

// A server hears of a user registered elsewhere (another server, `opserver user add`) a few
// milliseconds after the register answered: this retries the login for up to 2 s.
inline std::unique_ptr<client::Client> connect_soon(const ServerProcess& server,
                                                    const std::string& user,
                                                    const std::string& key) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (true) {
    auto c = client::Client::connect(server.options(user, key));
    if (c) return std::move(*c);
    if (std::chrono::steady_clock::now() > give_up) {
      ADD_FAILURE() << "login as " << user << " still refused after 2 s: " << c.error().message;
      return nullptr;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// A TCP connection to 127.0.0.1:port from `source` (127.0.0.2 is a second loopback
// address on Linux); -1 on failure.
inline int connect_from(const char* source, std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in local{};
  local.sin_family = AF_INET;
  ::inet_pton(AF_INET, source, &local.sin_addr);
  sockaddr_in remote{};
  remote.sin_family = AF_INET;
  remote.sin_port = htons(port);
  remote.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&remote), sizeof remote) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace ops::test
