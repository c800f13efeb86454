// A 1 GiB upload and download over loopback: the bytes arrive intact (SHA-256 both ways)
// and the server's memory does not grow with the file (issue 4: RSS growth < 64 MiB,
// read from /proc/<pid>/status). Prints the throughput for docs/BENCHMARKS.md.
// OPS_LARGE_TEST_MIB overrides the size (e.g. 8 for a quick run).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "opserver/proof.hpp"
#include "scratch_util.hpp"

namespace ops::test {
namespace {

// A field of /proc/<pid>/status in bytes (VmRSS, VmHWM).
std::uint64_t proc_status_kb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1)) * 1024;
  }
  return 0;
}

struct Sha256 {
  Sha256() : ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  }
  void update(const void* p, std::size_t n) { EVP_DigestUpdate(ctx.get(), p, n); }
  std::string hex() {
    unsigned char d[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx.get(), d, &n);
    return proof::to_hex(d, n);
  }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx;
};

double mib_per_s(std::uint64_t bytes, std::chrono::steady_clock::duration d) {
  return static_cast<double>(bytes) / (1024.0 * 1024.0) / std::chrono::duration<double>(d).count();
}

TEST(LargeTransfer, OneGibRoundTripWithBoundedServerMemory) {
  std::uint64_t mib = 1024;
  if (const char* env = std::getenv("OPS_LARGE_TEST_MIB")) mib = std::strtoull(env, nullptr, 10);
  const std::uint64_t size = mib * 1024 * 1024;

  TempDir local;
  const fs::path source = local.path() / "source.bin";
  // Pseudo-random content (incompressible, no repeating blocks), hashed as it is written.
  std::string want_sum;
  {
    int fd = ::open(source.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    Sha256 sha;
    std::vector<std::uint64_t> block(1 << 17);  // 1 MiB
    std::uint64_t x = 0x9e3779b97f4a7c15ull;
    for (std::uint64_t done = 0; done < size; done += 1 << 20) {
      for (auto& w : block) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w = x;
      }
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(1 << 20, size - done));
      ASSERT_EQ(::write(fd, block.data(), n), static_cast<ssize_t>(n));
      sha.update(block.data(), n);
    }
    ::close(fd);
    want_sum = sha.hex();
  }

  ServerProcess server;
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  // Warm up (threads, buffers) so the baseline is the server at work, not at rest.
  ASSERT_TRUE(upload(*c, "warm", std::string(4 << 20, 'w')).ok);
  ASSERT_TRUE(download(*c, "warm").ok);
  const std::uint64_t baseline = proc_status_kb(server.pid(), "VmRSS");
  ASSERT_GT(baseline, 0u);

  // Upload.
  int in = ::open(source.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(in, 0);
  auto t0 = std::chrono::steady_clock::now();
  auto up =
      c->call_fd("upload", R"({"path":"big/one.bin","sha256":")" + want_sum + R"("})", in, size);
  const auto upload_time = std::chrono::steady_clock::now() - t0;
  ::close(in);
  ASSERT_TRUE(up.ok()) << up.error().message;
  ASSERT_TRUE(up->ok) << up->error.message;
  const std::uint64_t after_upload_peak = proc_status_kb(server.pid(), "VmHWM");

  // Download, hashed as it streams in (the test does not hold the file either).
  auto t2 = std::chrono::steady_clock::now();
  auto down = c->call("download", R"({"path":"big/one.bin"})");
  ASSERT_TRUE(down.ok()) << down.error().message;
  ASSERT_TRUE(down->ok) << down->error.message;
  ASSERT_EQ(down->payload_size, size);
  Sha256 got;
  std::vector<char> buf(1 << 20);
  for (std::uint64_t left = size; left > 0;) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), left));
    ASSERT_TRUE(c->read_payload(buf.data(), n).ok());
    got.update(buf.data(), n);
    left -= n;
  }
  auto t3 = std::chrono::steady_clock::now();
  EXPECT_EQ(got.hex(), want_sum);
  const std::uint64_t peak = proc_status_kb(server.pid(), "VmHWM");

  const double up_rate = mib_per_s(size, upload_time);
  const double down_rate = mib_per_s(size, t3 - t2);
  std::cout << "[ large ] " << mib << " MiB: upload " << up_rate << " MiB/s, download " << down_rate
            << " MiB/s; server RSS baseline " << baseline / 1024 << " KiB, peak after upload "
            << after_upload_peak / 1024 << " KiB, peak " << peak / 1024 << " KiB\n";
  ::testing::Test::RecordProperty("upload_mib_per_s", std::to_string(up_rate));
  ::testing::Test::RecordProperty("download_mib_per_s", std::to_string(down_rate));

  constexpr std::uint64_t kLimit = 64ull << 20;
  EXPECT_LT(peak - std::min(peak, baseline), kLimit)
      << "server memory grew by " << (peak - baseline) / (1024 * 1024) << " MiB";
  EXPECT_EQ(fs::file_size(server.storage_dir() / "admin/big/one.bin"), size);
  EXPECT_TRUE(scratch_clean(server.storage_dir()));
}

}  // namespace
}  // namespace ops::test
