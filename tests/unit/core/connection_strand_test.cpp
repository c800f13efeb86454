// Connection's blocking side over a transport without an fd (the strand path), on the
// in-memory pipe: one hand-off moves the handler's whole buffer, and the payload timeout
// (Pace's stall limit) still counts the progress made inside it.
#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "net/connection.hpp"
#include "net/memory_transport.hpp"
#include "net/pace.hpp"

namespace ops::core {
namespace {

using namespace std::chrono_literals;

struct ConnectionOverStrand : ::testing::Test {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
  std::thread runner{[this] { io.run(); }};
  ~ConnectionOverStrand() override {
    work.reset();
    io.stop();
    runner.join();
  }
  boost::asio::any_io_executor strand() { return boost::asio::make_strand(io); }
};

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7) % 26);
  return s;
}

// The write takes about 4× the stall limit, with bytes moving all along: it must not be
// taken for a stall although the handler thread is not woken for each piece.
TEST_F(ConnectionOverStrand, AWholeBufferWriteLongerThanTheStallLimitSucceedsWhileBytesMove) {
  auto [transport, peer] = make_memory_pipe(strand(), 4096);
  Connection conn(std::move(transport));
  const std::string sent = pattern(64 * 1024);
  std::string got;
  std::thread reader([&, &peer = peer] {
    while (got.size() < sent.size()) {
      std::this_thread::sleep_for(12ms);
      std::string piece = peer.read_some(4096, 2s);
      if (piece.empty()) break;
      got += piece;
    }
  });
  Pace pace(std::chrono::milliseconds(50), 0, std::chrono::milliseconds(0));
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(conn.write_blocking(sent.data(), sent.size(), pace));
  const auto took = std::chrono::steady_clock::now() - start;
  reader.join();
  EXPECT_GT(took, 100ms);  // it did outlast the stall limit
  EXPECT_TRUE(got == sent);
}

// A peer that reads nothing: the write fails at the stall limit, not later.
TEST_F(ConnectionOverStrand, AWholeBufferWriteToAPeerThatReadsNothingEndsAtTheStallLimit) {
  auto [transport, peer] = make_memory_pipe(strand(), 4096);
  Connection conn(std::move(transport));
  const std::string sent = pattern(64 * 1024);
  Pace pace(std::chrono::milliseconds(100), 0, std::chrono::milliseconds(0));
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(conn.write_blocking(sent.data(), sent.size(), pace));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 100ms);
  EXPECT_LT(took, 2s);
}

// A read returns what has arrived, without waiting to fill the handler's buffer.
TEST_F(ConnectionOverStrand, AReadReturnsTheBytesThatArrivedWithoutWaitingToFillTheBuffer) {
  auto [transport, peer] = make_memory_pipe(strand());
  Connection conn(std::move(transport));
  peer.write("hello");
  std::string buf(1 << 20, '\0');
  Pace pace(std::chrono::milliseconds(5000), 0, std::chrono::milliseconds(0));
  const auto start = std::chrono::steady_clock::now();
  const std::int64_t n = conn.read_blocking(buf.data(), buf.size(), pace);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  ASSERT_EQ(n, 5);
  EXPECT_EQ(buf.substr(0, 5), "hello");
}

}  // namespace
}  // namespace ops::core
