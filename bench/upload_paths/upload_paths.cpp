// upload_paths: what one server core spends per GiB received over loopback TCP, hashed with
// SHA-256 and stored in a file, for several ways of moving the bytes. It answers "which copy
// can go, and what is left" for the upload goal (docs/BENCHMARKS.md, "Upload at the hash
// limit") without touching the server: the server side here is a bare loop on one socket,
// the same steps plugins/upload does after the host's read_payload (which on plain TCP is a
// recv() on the handler thread).
//
//   upload_paths DIR [SIZE_MIB] [VARIANT...]
//
// The server (this process) runs on CPU 0, the sender (a forked child) on CPU 1. For each
// variant it prints MiB/s and the server's CPU seconds per GiB (getrusage of this process
// only: the sender's sends and the loopback's softirq work on CPU 1 are not counted), and
// what that CPU allows at most (1 / (s/GiB)). Variants:
//   copy       today: recv 1 MiB -> SHA-256 -> write, fallocate(KEEP_SIZE) first, fsync
//   nofalloc   copy without the fallocate (on tmpfs fallocate zero-fills every page)
//   nohash     recv -> write (the two copies alone)
//   recvonly   recv into one buffer (the socket copy alone)
//   hashrecv   recv -> SHA-256 (no file)
//   splice     socket -> pipe -> file with splice(2) (no user copy), then SHA-256 of each
//              4 MiB window through a read-only mapping of the file right after it is written
//   mmaprecv   ftruncate, then recv straight into a MAP_SHARED window of the file, SHA-256
//              of the window, munmap
//   hashmem    SHA-256 of a hot 1 MiB buffer, SIZE bytes (the core's hash rate, no socket)
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

// The recv (and splice) chunk: 1 MiB like plugins/upload; UPLOAD_PATHS_CHUNK_KIB changes it.
const std::size_t kChunk = [] {
  const char* kib = std::getenv("UPLOAD_PATHS_CHUNK_KIB");
  return kib ? std::strtoull(kib, nullptr, 10) << 10 : std::size_t{1} << 20;
}();
constexpr std::size_t kWindow = std::size_t{4} << 20;

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::exit(1);
}

void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity");
}

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct Sha {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  Sha() { EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr); }
  ~Sha() { EVP_MD_CTX_free(ctx); }
  void update(const void* p, std::size_t n) {
    if (EVP_DigestUpdate(ctx, p, n) != 1) die("EVP_DigestUpdate");
  }
  std::string hex() {
    unsigned char d[32];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, d, &len);
    char out[65];
    for (unsigned i = 0; i < 32; ++i) std::snprintf(out + 2 * i, 3, "%02x", d[i]);
    return std::string(out, 64);
  }
};

// The sender: `size` bytes of a pattern in 4 MiB sends, then waits for the server's byte.
void send_all(int port, std::uint64_t size) {
  pin(1);
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect");
  std::vector<unsigned char> buf(kWindow);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<unsigned char>(i * 131 + 7);
  for (std::uint64_t left = size; left > 0;) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
    ssize_t w = ::send(s, buf.data(), n, 0);
    if (w <= 0) die("send");
    left -= static_cast<std::uint64_t>(w);
  }
  char ack;
  (void)::recv(s, &ack, 1, 0);
  ::_exit(0);
}

std::size_t recv_some(int s, void* buf, std::size_t cap) {
  for (;;) {
    ssize_t n = ::recv(s, buf, cap, 0);
    if (n > 0) return static_cast<std::size_t>(n);
    if (n < 0 && errno == EINTR) continue;
    die("recv");
  }
}

void write_all(int fd, const unsigned char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) die("write");
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// The server side of one variant on an accepted socket; returns the hex digest or "".
std::string serve(const std::string& v, int s, int fd, std::uint64_t size) {
  std::unique_ptr<unsigned char[]> buf(new unsigned char[kChunk]);
  Sha sha;
  if (v == "copy" || v == "nofalloc" || v == "nohash" || v == "recvonly" || v == "hashrecv") {
    if (v == "copy" && ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(size)) != 0) {
      die("fallocate");
    }
    for (std::uint64_t got = 0; got < size;) {
      std::size_t n = recv_some(
          s, buf.get(), static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, size - got)));
      if (v != "nohash" && v != "recvonly") sha.update(buf.get(), n);
      if (v != "recvonly" && v != "hashrecv") write_all(fd, buf.get(), n);
      got += n;
    }
  } else if (v == "splice") {
    if (::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(size)) != 0) die("fallocate");
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) die("pipe2");
    (void)::fcntl(p[1], F_SETPIPE_SZ, static_cast<int>(kChunk));
    std::uint64_t written = 0, hashed = 0;
    while (written < size) {
      ssize_t in =
          ::splice(s, nullptr, p[1], nullptr,
                   static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, size - written)),
                   SPLICE_F_MOVE | SPLICE_F_MORE);
      if (in <= 0) die("splice in");
      for (ssize_t left = in; left > 0;) {
        ssize_t out = ::splice(p[0], nullptr, fd, nullptr, static_cast<std::size_t>(left),
                               SPLICE_F_MOVE | SPLICE_F_MORE);
        if (out <= 0) die("splice out");
        left -= out;
      }
      written += static_cast<std::uint64_t>(in);
      // Hash whole windows while their pages are hot; the tail at the end.
      while (written - hashed >= kWindow || (written == size && hashed < size)) {
        std::size_t n =
            static_cast<std::size_t>(std::min<std::uint64_t>(kWindow, written - hashed));
        void* m = ::mmap(nullptr, n, PROT_READ, MAP_SHARED | MAP_POPULATE, fd,
                         static_cast<off_t>(hashed));
        if (m == MAP_FAILED) die("mmap");
        sha.update(m, n);
        ::munmap(m, n);
        hashed += n;
      }
    }
    ::close(p[0]);
    ::close(p[1]);
  } else if (v == "mmaprecv") {
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) die("ftruncate");
    for (std::uint64_t got = 0; got < size;) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kWindow, size - got));
      auto* m = static_cast<unsigned char*>(
          ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(got)));
      if (m == MAP_FAILED) die("mmap");
      for (std::size_t w = 0; w < n;) w += recv_some(s, m + w, n - w);
      sha.update(m, n);
      ::munmap(m, n);
      got += n;
    }
  } else {
    std::fprintf(stderr, "unknown variant %s\n", v.c_str());
    std::exit(2);
  }
  if (v != "recvonly" && v != "hashrecv" && ::fsync(fd) != 0) die("fsync");
  return v == "nohash" || v == "recvonly" ? std::string() : sha.hex();
}

void run(const std::string& dir, const std::string& v, std::uint64_t size) {
  const double gib = static_cast<double>(size) / (1u << 30);
  if (v == "hashmem") {
    std::vector<unsigned char> b(kChunk, 0x5a);
    const double c0 = cpu_seconds();
    auto t0 = std::chrono::steady_clock::now();
    Sha sha;
    for (std::uint64_t done = 0; done < size; done += kChunk) sha.update(b.data(), kChunk);
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double cpu = cpu_seconds() - c0;
    std::printf("%-9s %8.0f MiB/s  server %.3f s/GiB  (at most %.0f MiB/s)\n", v.c_str(),
                static_cast<double>(size) / (1 << 20) / wall, cpu / gib, 1024 / (cpu / gib));
    return;
  }
  int l = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l, 1) != 0) die("bind");
  socklen_t len = sizeof a;
  ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  const std::string path = dir + "/upload_paths." + v;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) die("open");
  pid_t child = ::fork();
  if (child == 0) send_all(port, size);
  int s = ::accept(l, nullptr, nullptr);
  if (s < 0) die("accept");
  const double c0 = cpu_seconds();
  auto t0 = std::chrono::steady_clock::now();
  std::string hex = serve(v, s, fd, size);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = cpu_seconds() - c0;
  (void)::send(s, "k", 1, 0);
  ::waitpid(child, nullptr, 0);
  ::close(s);
  ::close(l);
  ::close(fd);
  ::unlink(path.c_str());
  std::printf("%-9s %8.0f MiB/s  server %.3f s/GiB  (at most %.0f MiB/s)  %s\n", v.c_str(),
              static_cast<double>(size) / (1 << 20) / wall, cpu / gib, 1024 / (cpu / gib),
              hex.substr(0, 12).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: upload_paths DIR [SIZE_MIB] [VARIANT...]\n");
    return 2;
  }
  pin(0);
  const std::uint64_t size = (argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1024) << 20;
  std::vector<std::string> variants;
  for (int i = 3; i < argc; ++i) variants.emplace_back(argv[i]);
  if (variants.empty()) {
    variants = {"hashmem",  "copy",     "nofalloc", "nohash",
                "recvonly", "hashrecv", "splice",   "mmaprecv"};
  }
  for (const auto& v : variants) run(argv[1], v, size);
}
