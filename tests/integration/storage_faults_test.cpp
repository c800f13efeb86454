// Storage faults from the real kernel (reliability.md §3.5, §3.6): a full disk and
// exhausted inodes on a small tmpfs mounted under the storage root (cases 83, 84; needs
// root, skipped otherwise), a file-size rlimit below the upload (case 85), and the order
// of the durability steps of an upload, traced through the LD_PRELOAD shim (case 93:
// fsync(file), then rename, then fsync(directory), before the answer).
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

#include "fault_util.hpp"
#include "harness/server_process.hpp"
#include "ops_test_util.hpp"

namespace ops::test {
namespace {

using namespace std::chrono_literals;

// Mounts a tmpfs with `options` on <root>/storage before the server starts; unmounts it
// when the test is done with the server.
struct SmallDisk {
  std::string options;
  fs::path mounted;
  bool ok = false;
  std::string why;

  void mount(const fs::path& root) {
    fs::path storage = root / "storage";
    fs::create_directories(storage);
    if (::geteuid() != 0) {
      why = "not root: cannot mount a small filesystem";
      return;
    }
    if (::mount("tmpfs", storage.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      why = std::string("mount tmpfs failed: ") + std::strerror(errno);
      return;
    }
    mounted = storage;
    ok = true;
  }
  // Call once the server has stopped, so that the harness can remove its directory.
  void unmount() {
    if (!mounted.empty()) ::umount2(mounted.c_str(), MNT_DETACH);
    mounted.clear();
  }
  ~SmallDisk() { unmount(); }
};

std::uint64_t free_bytes(const fs::path& p) {
  struct statvfs v {};
  ::statvfs(p.c_str(), &v);
  return static_cast<std::uint64_t>(v.f_bavail) * v.f_frsize;
}

// Case 83: storage on a 16 MiB tmpfs. An upload that does not fit is `unavailable` ("no
// space left", §7) before its payload is read; the temporary file and its reserved space
// are returned; old files stay intact and readable; a later small upload succeeds.
TEST(FullDisk, AnUploadThatDoesNotFitIsUnavailableAndTheServerRecovers) {
  SmallDisk disk{"size=16m,mode=0755"};
  ServerOptions o;
  o.prepare = [&](const fs::path& root) { disk.mount(root); };
  ServerProcess server(o);
  if (!disk.ok) GTEST_SKIP() << disk.why;
  const std::string key = server.add_user("dora");
  auto c = server.connect("dora", key);
  ASSERT_TRUE(c);
  const std::string old_body(3u << 20, 'o');
  ASSERT_TRUE(upload(*c, "old.bin", old_body).ok);
  const std::uint64_t free_before = free_bytes(server.storage_dir());
  const std::string before = tree_fingerprint(server.storage_dir() / "dora");

  const std::string big(32u << 20, 'b');
  Outcome full = upload(*c, "big.bin", big);
  EXPECT_OP_ERR(full, "unavailable");
  EXPECT_NE(full.message.find("no space"), std::string::npos) << full.message;
  EXPECT_TRUE(eventually([&] { return scratch_empty(server); }, 2s));
  EXPECT_EQ(tree_fingerprint(server.storage_dir() / "dora"), before);
  EXPECT_GE(free_bytes(server.storage_dir()) + 4096, free_before) << "the space was not returned";
  // Same connection: old file intact, a small upload fits.
  EXPECT_EQ(download(*c, "old.bin").payload, old_body);
  EXPECT_OP_OK(upload(*c, "small.bin", "fits"));

  // Two uploads that fit one at a time but not together: at most one may win, the other
  // is unavailable, and nothing partial is left.
  const std::string nine(9u << 20, 'n');
  auto c2 = server.connect("dora", key);
  ASSERT_TRUE(c2);
  Outcome a, b;
  std::thread t([&] { a = upload(*c2, "nine-a.bin", nine); });
  b = upload(*c, "nine-b.bin", nine);
  t.join();
  EXPECT_FALSE(a.ok && b.ok) << "18 MiB cannot fit in 16";
  for (const Outcome* x : {&a, &b}) {
    if (!x->ok) {
      EXPECT_EQ(x->code, "unavailable") << x->message;
    }
  }
  for (const char* name : {"nine-a.bin", "nine-b.bin"}) {
    fs::path p = server.storage_dir() / "dora" / name;
    if (fs::exists(p)) {
      EXPECT_EQ(fs::file_size(p), nine.size());
    }
  }
  EXPECT_TRUE(eventually([&] { return scratch_empty(server); }, 2s));
  EXPECT_EQ(serves_a_healthy_client(server, "dora", key), "");
  server.stop();
  disk.unmount();
}

// Case 84: inodes exhausted (a tmpfs with 64 of them). Uploads of tiny files succeed until
// none is left, then fail `unavailable`; nothing partial, no temporary file; after files
// are removed from outside, uploads work again.
TEST(FullDisk, InodesExhaustedIsUnavailableAndRecovers) {
  SmallDisk disk{"size=16m,nr_inodes=64,mode=0755"};
  ServerOptions o;
  o.prepare = [&](const fs::path& root) { disk.mount(root); };
  ServerProcess server(o);
  if (!disk.ok) GTEST_SKIP() << disk.why;
  const std::string key = server.add_user("ines");
  auto c = server.connect("ines", key);
  ASSERT_TRUE(c);
  int stored = 0;
  Outcome last;
  for (int i = 0; i < 100; ++i) {
    last = upload(*c, "f" + std::to_string(i), "tiny");
    if (!last.ok) break;
    ++stored;
  }
  ASSERT_FALSE(last.ok) << "64 inodes never ran out";
  EXPECT_EQ(last.code, "unavailable") << last.message;
  EXPECT_TRUE(scratch_empty(server));
  for (int i = 0; i < stored; ++i) {
    EXPECT_EQ(read_file(server.storage_dir() / "ines" / ("f" + std::to_string(i))), "tiny");
  }
  EXPECT_FALSE(fs::exists(server.storage_dir() / "ines" / ("f" + std::to_string(stored))));
  EXPECT_EQ(download(*c, "f0").payload, "tiny");
  for (int i = 0; i < 5; ++i) fs::remove(server.storage_dir() / "ines" / ("f" + std::to_string(i)));
  EXPECT_OP_OK(upload(*c, "again", "room now"));
  server.stop();
  disk.unmount();
}

// Case 85: RLIMIT_FSIZE below the upload. The kernel raises SIGXFSZ on the write past the
// limit; the server must not die of it but answer the upload (EFBIG: payload_too_large)
// and go on serving.
TEST(FileSizeLimit, AnUploadPastTheLimitIsRefusedAndTheServerLives) {
  ServerOptions o;
  o.fsize_limit = 1u << 20;
  ServerProcess server(o);
  const std::string key = server.admin_key();
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  Outcome r = upload(*c, "big.bin", std::string(3u << 20, 'x'));
  EXPECT_TRUE(server.running()) << "killed by SIGXFSZ:\n" << server.log();
  ASSERT_TRUE(server.running());
  EXPECT_OP_ERR(r, "payload_too_large");
  EXPECT_TRUE(eventually([&] { return scratch_empty(server); }, 2s));
  EXPECT_FALSE(fs::exists(server.storage_dir() / "admin" / "big.bin"));
  EXPECT_OP_OK(upload(*c, "small.bin", std::string(1000, 's')));
}

// Case 93, the cheap proxy for power loss (PostgreSQL durable_rename, ALICE): for each
// upload, the file's data is synced before the rename that publishes it, and the
// directory holding the new name is synced after it, all before the answer.
TEST(Durability, FsyncThenRenameThenFsyncOfTheDirectory) {
  TempDir work;
  const fs::path trace = work.path() / "trace";
  ServerOptions o;
  o.env = {{"LD_PRELOAD", OPS_FAULT_SHIM}, {"OPS_FAULT_TRACE", trace.string()}};
  const char* asan = std::getenv("ASAN_OPTIONS");
  o.env.emplace_back("ASAN_OPTIONS", std::string(asan ? asan : "") + ":verify_asan_link_order=0");
  ServerProcess server(o);
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  struct Case {
    const char* path;
    const char* extra;
  };
  for (const Case& k : {Case{"new.bin", ""}, Case{"new.bin", ",\"overwrite\":true"},
                        Case{"deep/er/file.bin", ""}}) {
    SCOPED_TRACE(std::string(k.path) + k.extra);
    fs::remove(trace);
    ASSERT_TRUE(upload(*c, k.path, "durable bytes", k.extra).ok);
    // Only fsyncs and renames, in order.
    std::istringstream in(read_file(trace));
    std::vector<std::string> steps;
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("fsync", 0) == 0 || line == "rename") steps.push_back(line);
    }
    auto find = [&](const std::string& what, std::size_t from) {
      for (std::size_t i = from; i < steps.size(); ++i) {
        if (steps[i] == what) return i;
      }
      return steps.size();
    };
    std::string all;
    for (const auto& s : steps) all += s + "; ";
    const std::size_t file_sync = find("fsync file", 0);
    const std::size_t rename = find("rename", file_sync);
    const std::size_t dir_sync = find("fsync dir", rename);
    EXPECT_LT(file_sync, steps.size()) << "no fsync of the file: " << all;
    EXPECT_LT(rename, steps.size()) << "no rename after the file's fsync: " << all;
    EXPECT_LT(dir_sync, steps.size()) << "no directory fsync after the rename: " << all;
  }
}

}  // namespace
}  // namespace ops::test
