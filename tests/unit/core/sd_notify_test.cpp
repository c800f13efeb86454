// The systemd notifications (Type=notify): each call sends its state as one datagram to
// the socket NOTIFY_SOCKET names, and nothing at all when the variable is unset.
#include "net/sd_notify.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <optional>
#include <string>

namespace ops::core {
namespace {

namespace fs = std::filesystem;

class SdNotify : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!notify_supported()) GTEST_SKIP() << "built without libsystemd";
    path_ = fs::temp_directory_path() /
            ("ops-notify-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove(path_);
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd_, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    ASSERT_LT(path_.string().size(), sizeof addr.sun_path);
    std::strcpy(addr.sun_path, path_.c_str());
    ASSERT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
        << std::strerror(errno);
    ::setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  void TearDown() override {
    ::unsetenv("NOTIFY_SOCKET");
    if (fd_ >= 0) ::close(fd_);
    fs::remove(path_);
  }
  // The next datagram, or nothing if none is waiting.
  std::optional<std::string> receive() {
    char buffer[512];
    ssize_t n = ::recv(fd_, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n < 0) return std::nullopt;
    return std::string(buffer, static_cast<std::size_t>(n));
  }

  fs::path path_;
  int fd_ = -1;
};

TEST_F(SdNotify, ReadyAndStoppingAreSentAsTheyAre) {
  notify_ready();
  EXPECT_EQ(receive(), "READY=1");
  notify_stopping();
  EXPECT_EQ(receive(), "STOPPING=1");
  EXPECT_EQ(receive(), std::nullopt);
}

TEST_F(SdNotify, ReloadingCarriesTheMonotonicClock) {
  timespec before{};
  ::clock_gettime(CLOCK_MONOTONIC, &before);
  notify_reloading();
  timespec after{};
  ::clock_gettime(CLOCK_MONOTONIC, &after);
  auto message = receive();
  ASSERT_TRUE(message);
  const std::string prefix = "RELOADING=1\nMONOTONIC_USEC=";
  ASSERT_EQ(message->rfind(prefix, 0), 0u) << *message;
  const long long usec = std::stoll(message->substr(prefix.size()));
  auto micros = [](const timespec& t) { return t.tv_sec * 1000000LL + t.tv_nsec / 1000; };
  EXPECT_GE(usec, micros(before));
  EXPECT_LE(usec, micros(after));
}

TEST_F(SdNotify, NothingIsSentWithoutNotifySocket) {
  ::unsetenv("NOTIFY_SOCKET");
  notify_ready();
  notify_reloading();
  notify_stopping();
  EXPECT_EQ(receive(), std::nullopt);
}

}  // namespace
}  // namespace ops::core
