// A TLS handshake flood against the real server (§8, §7): an authenticated client keeps
// being served while many clients open TLS connections as fast as they can, connections
// still in the TLS handshake count against max_unauthenticated, and the handshake deadline
// ends stalled TLS handshakes.
//
// The flooders are threads of this process speaking TLS with OpenSSL directly: "full"
// ones complete a handshake (no certificate check, as an attacker would not bother), then
// close at once; "stalled" ones send a ClientHello and then only drain what the server
// sends, until it closes. Each test prints its figures (requests, p50, p99, the slowest
// request, handshakes per second) so a run shows the margin, not just pass or fail.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "harness/server_process.hpp"
#include "test_pki.hpp"

namespace ops::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

int tcp_connect(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // A flooder must never hang on a server that stopped answering it.
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

unsigned cores() {
  return std::max(1u, std::thread::hardware_concurrency());
}

struct Latencies {
  std::size_t requests = 0;
  std::size_t failed = 0;
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
  std::string first_failure;
};

// Ping-pong `describe` on `c` for `duration`, timing each request.
Latencies ping_pong(client::Client& c, std::chrono::milliseconds duration) {
  std::vector<double> ms;
  Latencies out;
  const auto end = Clock::now() + duration;
  while (Clock::now() < end) {
    const auto t0 = Clock::now();
    auto r = c.call("describe");
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    ++out.requests;
    if (!r || !r->ok) {
      if (out.failed++ == 0) out.first_failure = r ? r->error.message : r.error().message;
      if (!r) break;  // the connection is gone: no point in timing more
    }
  }
  std::sort(ms.begin(), ms.end());
  if (!ms.empty()) {
    out.p50_ms = ms[ms.size() / 2];
    out.p99_ms = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
    out.max_ms = ms.back();
  }
  return out;
}

void print(const char* what, const Latencies& l) {
  std::printf("[ figures  ] %s: %zu describe, %zu failed, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
              what, l.requests, l.failed, l.p50_ms, l.p99_ms, l.max_ms);
}

// Threads that open TLS connections against one port until stopped.
class TlsFlood {
 public:
  explicit TlsFlood(std::uint16_t port) : port_(port) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx_, TLS1_3_VERSION);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
  }
  ~TlsFlood() {
    stop();
    SSL_CTX_free(ctx_);
  }

  // `full` threads doing whole handshakes one after another; `hello` threads each keeping
  // `in_flight` connections that send a ClientHello, read the server's answer (its
  // expensive part done) and close; `stalled` threads each holding one stalled handshake.
  void start(unsigned full, unsigned hello, unsigned in_flight, unsigned stalled) {
    started_ = Clock::now();
    for (unsigned i = 0; i < full; ++i) threads_.emplace_back([this] { full_loop(); });
    for (unsigned i = 0; i < hello; ++i) {
      threads_.emplace_back([this, in_flight] { hello_loop(in_flight); });
    }
    for (unsigned i = 0; i < stalled; ++i) threads_.emplace_back([this] { stalled_loop(); });
  }
  void stop() {
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
    if (stopped_ == Clock::time_point{}) stopped_ = Clock::now();
  }
  double seconds() const { return std::chrono::duration<double>(stopped_ - started_).count(); }

  std::atomic<std::uint64_t> handshakes{0};          // full handshakes completed
  std::atomic<std::uint64_t> handshake_failures{0};  // refused at accept, or failed
  std::atomic<std::uint64_t> hellos_answered{0};     // ServerHello..Finished received, then closed
  std::atomic<std::uint64_t> stalled_accepted{0};    // a stalled ClientHello the server answered
  std::atomic<std::uint64_t> stalled_refused{0};     // closed without a byte: the cap
  std::atomic<std::uint64_t> stalled_closed{0};      // accepted, then closed by the server
  std::atomic<int> stalled_open{0};                  // accepted and not yet closed, now
  std::atomic<int> stalled_open_max{0};
  // How long the server kept an accepted stalled handshake open, in ms.
  std::atomic<std::int64_t> stalled_min_ms{1 << 30};
  std::atomic<std::int64_t> stalled_max_ms{0};

 private:
  // One ClientHello record, made once and sent on every hello connection: the server does
  // a fresh key exchange and signature for each, the flooder nothing.
  std::string client_hello() {
    SSL* ssl = SSL_new(ctx_);
    BIO* in = BIO_new(BIO_s_mem());
    BIO* out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, in, out);
    SSL_set_connect_state(ssl);
    SSL_do_handshake(ssl);
    char* data = nullptr;
    long n = BIO_get_mem_data(out, &data);
    std::string hello(data, static_cast<std::size_t>(std::max(0L, n)));
    SSL_free(ssl);
    return hello;
  }

  void hello_loop(unsigned in_flight) {
    const std::string hello = client_hello();
    struct Slot {
      int fd = -1;
      Clock::time_point since;
    };
    std::vector<Slot> slots(in_flight);
    auto open = [&](Slot& s) {
      s.fd = tcp_connect(port_);
      s.since = Clock::now();
      if (s.fd < 0) {
        ++handshake_failures;
        return;
      }
      if (::send(s.fd, hello.data(), hello.size(), MSG_NOSIGNAL) !=
          static_cast<ssize_t>(hello.size())) {
        ++handshake_failures;
        ::close(s.fd);
        s.fd = -1;
      }
    };
    std::vector<pollfd> fds(in_flight);
    char buf[8192];
    while (!stop_) {
      for (std::size_t i = 0; i < slots.size(); ++i) {
        if (slots[i].fd < 0 && !stop_) open(slots[i]);
        fds[i] = pollfd{slots[i].fd, POLLIN, 0};
      }
      if (::poll(fds.data(), fds.size(), 50) < 0) continue;
      for (std::size_t i = 0; i < slots.size(); ++i) {
        Slot& s = slots[i];
        if (s.fd < 0) continue;
        const bool late = Clock::now() - s.since > 2s;
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)) && !late) continue;
        ssize_t n = (fds[i].revents != 0) ? ::recv(s.fd, buf, sizeof buf, MSG_DONTWAIT) : -1;
        if (n > 0) {
          ++hellos_answered;
        } else {
          ++handshake_failures;
        }
        ::close(s.fd);
        s.fd = -1;
      }
    }
    for (Slot& s : slots) {
      if (s.fd >= 0) ::close(s.fd);
    }
  }

  void full_loop() {
    while (!stop_) {
      int fd = tcp_connect(port_);
      if (fd < 0) {
        ++handshake_failures;
        continue;
      }
      SSL* ssl = SSL_new(ctx_);
      SSL_set_fd(ssl, fd);
      if (SSL_connect(ssl) == 1) {
        ++handshakes;
      } else {
        ++handshake_failures;
      }
      SSL_free(ssl);
      ::close(fd);
    }
  }

  // Sends one ClientHello (a non-blocking SSL_connect stops after it), then drains the raw
  // socket without ever answering, until the server closes it or the flood stops.
  void stalled_loop() {
    while (!stop_) {
      int fd = tcp_connect(port_);
      if (fd < 0) {
        ++stalled_refused;
        continue;
      }
      const auto opened = Clock::now();
      SSL* ssl = SSL_new(ctx_);
      SSL_set_fd(ssl, fd);
      SSL_set_connect_state(ssl);
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      SSL_do_handshake(ssl);  // WANT_READ once the ClientHello is out
      bool answered = false;
      bool closed = false;
      char buf[4096];
      while (!stop_ && !closed) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
          if (!answered) {
            answered = true;
            ++stalled_accepted;
            int open = ++stalled_open;
            int seen = stalled_open_max.load();
            while (open > seen && !stalled_open_max.compare_exchange_weak(seen, open)) {
            }
          }
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          closed = true;
        }
      }
      if (answered) {
        --stalled_open;
        if (closed) {
          ++stalled_closed;
          const std::int64_t ms =
              std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - opened).count();
          std::int64_t v = stalled_min_ms.load();
          while (ms < v && !stalled_min_ms.compare_exchange_weak(v, ms)) {
          }
          v = stalled_max_ms.load();
          while (ms > v && !stalled_max_ms.compare_exchange_weak(v, ms)) {
          }
        }
      } else if (closed) {
        ++stalled_refused;
      }
      SSL_free(ssl);
      ::close(fd);
    }
  }

  std::uint16_t port_;
  SSL_CTX* ctx_ = nullptr;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  Clock::time_point started_, stopped_;
};

class TlsFloodTest : public ::testing::Test {
 protected:
  // A flooder writing to a connection the server closed must not kill the test.
  void SetUp() override { ::signal(SIGPIPE, SIG_IGN); }

  void start(std::string settings) {
    pki_ = std::make_unique<TestPki>(pki_dir_.path());
    CertFiles files = pki_->issue("server");
    ServerOptions options;
    options.settings = std::move(settings);
    options.args = {"--tls-listen",      "127.0.0.1:0", "--tls-cert",
                    files.cert.string(), "--tls-key",   files.key.string()};
    server_ = std::make_unique<ServerProcess>(options);
    tls_port_ = server_->tls_port();
    ASSERT_NE(tls_port_, 0) << server_->log();
  }

  std::unique_ptr<client::Client> tls_client() {
    client::Options o = server_->options("admin", server_->admin_key());
    o.port = tls_port_;
    o.tls = true;
    o.ca_file = pki_->ca_file().string();
    o.timeout = 30s;
    auto c = client::Client::connect(o);
    if (!c) {
      ADD_FAILURE() << c.error().message;
      return nullptr;
    }
    return std::move(*c);
  }

  TempDir pki_dir_;
  std::unique_ptr<TestPki> pki_;
  std::unique_ptr<ServerProcess> server_;
  std::uint16_t tls_port_ = 0;
};

// 2 × cores threads doing full handshakes back to back, cores × 120 connections sending a
// ClientHello and closing once the server has answered it (the server's expensive part
// for none of the client's), and 8 more stalling after their ClientHello, for 3 s: a TLS
// client that logged in before keeps getting its `describe` answers, every one, many of
// them, with a bounded p99.
TEST_F(TlsFloodTest, AHandshakeFloodDoesNotStarveAnAuthenticatedClient) {
  start({});
  auto c = tls_client();
  ASSERT_TRUE(c);
  print("no flood, TLS client", ping_pong(*c, 1000ms));

  TlsFlood flood(tls_port_);
  flood.start(2 * cores(), cores(), 120, 8);
  std::this_thread::sleep_for(300ms);  // the flood at full strength first
  Latencies during = ping_pong(*c, 3000ms);
  flood.stop();
  print("flood, TLS client", during);
  std::printf(
      "[ figures  ] flood: %u full-handshake threads (%.0f handshakes/s completed), %u "
      "threads x 120 ClientHellos in flight (%.0f server answers/s), %llu failed or refused; 8 "
      "stalled handshakes\n",
      2 * cores(), static_cast<double>(flood.handshakes.load()) / flood.seconds(), cores(),
      static_cast<double>(flood.hellos_answered.load()) / flood.seconds(),
      static_cast<unsigned long long>(flood.handshake_failures.load()));

  // The flood was real: the server answered ClientHellos throughout (most connections
  // beyond those are refused at the max_unauthenticated cap). How many depends on the CPU
  // the flooding threads get: 300 to 1,100 in these 3 s on a quiet machine, about 350 with
  // two tests at once on 2 cores, so the bound only says the flood ran.
  EXPECT_GT(flood.handshakes.load() + flood.hellos_answered.load(), 100u);
  EXPECT_EQ(during.failed, 0u) << during.first_failure;
  // The bounds, from measurements on 2 cores shared with other builds: with the handshakes
  // on the I/O threads this client got 26 to 962 answers in 3 s, p99 127 to 267 ms; with
  // the handshake threads 9,400 to 11,000, p99 3.5 to 3.9 ms, the slowest 50 to 52 ms.
  // The bursts of a flood at the cap let the client through now and then, so a p99 bound
  // of 200 ms did not always tell the two apart; 50 ms does, with a margin of 10 times the
  // good figures for a loaded machine.
  EXPECT_GT(during.requests, 300u);
  EXPECT_LT(during.p99_ms, 50.0);
  EXPECT_LT(during.max_ms, 1000.0);
  // A new client still gets in once the flood is over. Its first tries may still be
  // refused at the cap: the server sees the flood's connections close (and the stalled
  // handshakes end) a moment after the flood stops, so it retries for a while, as a
  // client refused at a busy server would.
  client::Options o = server_->options("admin", server_->admin_key());
  o.port = tls_port_;
  o.tls = true;
  o.ca_file = pki_->ca_file().string();
  o.timeout = 30s;
  std::unique_ptr<client::Client> after;
  std::string last_error;
  const auto give_up = std::chrono::steady_clock::now() + 15s;
  while (!after && std::chrono::steady_clock::now() < give_up) {
    auto attempt = client::Client::connect(o);
    if (attempt) {
      after = std::move(*attempt);
    } else {
      last_error = attempt.error().message;
      std::this_thread::sleep_for(100ms);
    }
  }
  ASSERT_TRUE(after) << last_error;
  auto r = after->call("describe");
  ASSERT_TRUE(r && r->ok);
}

// max_unauthenticated 8, handshake_timeout_ms 1000, and 32 threads that each send a
// ClientHello and stall, reconnecting whenever the server closes them, for 3.5 s (plus
// full-handshake flooders): at most the cap of stalled handshakes is ever open at once
// (a few more may be seen for an instant: a thread notices its close a little after the
// server counted it gone), the rest are closed without a byte, each accepted one is
// closed at the handshake deadline, and a client that logged in before is served
// throughout.
TEST_F(TlsFloodTest, StalledHandshakesCountAgainstTheCapAndEndAtTheDeadline) {
  start(R"("max_unauthenticated": 8, "handshake_timeout_ms": 1000)");
  auto c = tls_client();
  ASSERT_TRUE(c);

  TlsFlood flood(tls_port_);
  flood.start(cores(), 0, 0, 32);
  std::this_thread::sleep_for(200ms);
  Latencies during = ping_pong(*c, 3500ms);
  flood.stop();
  print("stalled flood at the cap, TLS client", during);
  std::printf(
      "[ figures  ] stalled: %llu accepted, %llu refused at the cap, %llu closed by the "
      "server after %lld..%lld ms, at most %d open at once; %llu full handshakes\n",
      static_cast<unsigned long long>(flood.stalled_accepted.load()),
      static_cast<unsigned long long>(flood.stalled_refused.load()),
      static_cast<unsigned long long>(flood.stalled_closed.load()),
      static_cast<long long>(flood.stalled_min_ms.load()),
      static_cast<long long>(flood.stalled_max_ms.load()), flood.stalled_open_max.load(),
      static_cast<unsigned long long>(flood.handshakes.load()));

  EXPECT_EQ(during.failed, 0u) << during.first_failure;
  EXPECT_LT(during.p99_ms, 200.0);
  EXPECT_LT(during.max_ms, 1000.0);
  // Connections in the TLS handshake count against the cap: never near 32 open at once,
  // and many closed at accept.
  EXPECT_GE(flood.stalled_open_max.load(), 1);
  EXPECT_LE(flood.stalled_open_max.load(), 8 + 4);
  EXPECT_GT(flood.stalled_refused.load(), 100u);
  // The deadline closed the stalled ones: 1 s from accept, not the 10 s default nor never.
  ASSERT_GT(flood.stalled_closed.load(), 8u);
  EXPECT_GE(flood.stalled_min_ms.load(), 900);
  EXPECT_LT(flood.stalled_max_ms.load(), 3000);
}

// A stop while handshakes are stalled (and a flood is on): the stop closes them at once
// (they run on the handshake threads, but the stop reaches them through the socket) and
// the server exits cleanly, well before the 10 s handshake deadline.
TEST_F(TlsFloodTest, AStopEndsStalledTlsHandshakesAtOnce) {
  start({});
  TlsFlood flood(tls_port_);
  flood.start(1, 1, 16, 8);
  std::this_thread::sleep_for(1000ms);
  const auto t0 = Clock::now();
  EXPECT_EQ(server_->stop(10s), 0) << server_->log();
  const auto took = Clock::now() - t0;
  flood.stop();
  std::printf("[ figures  ] stop with %llu stalled handshakes open: %.0f ms\n",
              static_cast<unsigned long long>(flood.stalled_accepted.load()),
              std::chrono::duration<double, std::milli>(took).count());
  EXPECT_GE(flood.stalled_accepted.load(), 8u);
  EXPECT_LT(took, 5s);
}

}  // namespace
}  // namespace ops::test
