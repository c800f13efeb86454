// Helpers for the fault and resource tests (reliability.md §3.5, §3.6): waiting for a
// condition, the storage tree's fingerprint from outside the server, the §3 invariant S
// (a fresh client is served), and a ServerOptions with a plugin directory of our own.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "opserver/proof.hpp"
#include "scratch_util.hpp"

namespace ops::test {

// True in an ASan or TSan build (scripts/sanitize): the server then keeps freed memory in
// quarantine, so RSS bounds do not apply, and it reports a SIGSEGV itself and aborts.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitizerBuild = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitizerBuild = true;
#else
inline constexpr bool kSanitizerBuild = false;
#endif
#else
inline constexpr bool kSanitizerBuild = false;
#endif

// Polls `done` until it holds or `limit` passes; every wait has a condition to reach.
inline bool eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

// Every entry under `dir` with its type, mode bits, size and content hash, in order: two
// equal fingerprints mean nothing was created, removed or changed (invariant N).
inline std::string tree_fingerprint(const fs::path& dir) {
  std::string out;
  for (const std::string& rel : tree(dir)) {
    struct stat st {};
    fs::path p = dir / rel;
    if (::lstat(p.c_str(), &st) != 0) continue;
    out += rel + " " + std::to_string(st.st_mode) + " " + std::to_string(st.st_size);
    if (S_ISREG(st.st_mode)) {
      out += ' ';  // not " " + ...: GCC 12's -Wrestrict false positive
      out += proof::sha256_hex(read_file(p));
    }
    out += "\n";
  }
  return out;
}

// tree_fingerprint without directories that hold no file anywhere below them.
inline std::string tree_fingerprint_of_files(const fs::path& dir) {
  std::string out;
  for (const std::string& rel : tree(dir)) {
    struct stat st {};
    fs::path p = dir / rel;
    if (::lstat(p.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      bool holds_file = false;
      for (const std::string& below : tree(p)) {
        holds_file = holds_file || !fs::is_directory(fs::symlink_status(p / below));
      }
      if (!holds_file) continue;
    }
    out += rel + " " + std::to_string(st.st_mode) + " " + std::to_string(st.st_size);
    if (S_ISREG(st.st_mode)) {
      out += ' ';  // not " " + ...: GCC 12's -Wrestrict false positive
      out += proof::sha256_hex(read_file(p));
    }
    out += "\n";
  }
  return out;
}

// The server-private scratch directory: empty means no temporary file is left.
inline bool scratch_empty(const ServerProcess& server) {
  return scratch_clean(server.storage_dir());
}

// Invariant S: a fresh client authenticates, describes, and round-trips 1 KiB within
// `limit`. Returns an empty string, or what went wrong.
inline std::string serves_a_healthy_client(
    const ServerProcess& server, const std::string& user, const std::string& key,
    std::chrono::milliseconds limit = std::chrono::milliseconds(1000)) {
  const auto start = std::chrono::steady_clock::now();
  auto opts = server.options(user, key);
  opts.timeout = limit;
  auto c = client::Client::connect(opts);
  if (!c) return "connect: " + c.error().message;
  auto d = (*c)->call("describe");
  if (!d || !d->ok) return "describe failed";
  std::string body(1024, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 7 + 3);
  std::string path = "healthy/" + proof::random_hex(6);
  if (auto up = upload(**c, path, body); !up.ok) return "upload: " + up.code + " " + up.message;
  auto down = download(**c, path);
  if (!down.ok || down.payload != body) return "download: " + down.code + " " + down.message;
  auto took = std::chrono::steady_clock::now() - start;
  if (took > limit) {
    return "took " +
           std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()) +
           " ms";
  }
  return {};
}

// A plugin directory with the four standard plugins and the named test plugins, and the
// ops.json enabling `extra_ops` (raw JSON members, e.g. R"("crash": {"allow": ["*"]})").
inline std::string ops_json_with(const fs::path& dir, const std::vector<std::string>& test_plugins,
                                 const std::string& extra_ops,
                                 const std::string& upload_extra = "") {
  fs::create_directories(dir);
  for (const char* name : {"libupload.so", "libdownload.so", "liblist.so", "libregister.so"}) {
    fs::copy_file(fs::path(OPS_PLUGIN_DIR) / name, dir / name,
                  fs::copy_options::overwrite_existing);
  }
  for (const std::string& name : test_plugins) {
    fs::copy_file(fs::path(OPS_TEST_PLUGIN_DIR) / ("lib" + name + ".so"),
                  dir / ("lib" + name + ".so"), fs::copy_options::overwrite_existing);
  }
  return R"({"plugin_dir": ")" + dir.string() + R"(", "operations": {
    "upload": {"allow": ["*"])" +
         upload_extra + R"(},
    "download": {"allow": ["*"]},
    "list": {"allow": ["*"]},
    "register": {"allow": ["admin"]})" +
         (extra_ops.empty() ? "" : ",\n    " + extra_ops) + "\n  }}";
}

}  // namespace ops::test
