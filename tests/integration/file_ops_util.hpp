// Helpers for the tests of the §10 file operations under races, injected faults and
// naughty paths: one-call wrappers for remove, move, mkdir, stat and usage, and the
// user's usage as the disk sees it (the number §10's `usage` must equal).
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <set>
#include <string>

#include "ops_test_util.hpp"

namespace ops::test::fileops {

inline Outcome remove_op(client::Client& c, const std::string& path, bool recursive = false) {
  return call_op(c, "remove",
                 jobj({{"path", jstr(path)}, {"recursive", recursive ? "true" : "false"}}));
}
inline Outcome move_op(client::Client& c, const std::string& from, const std::string& to,
                       bool overwrite = false) {
  return call_op(
      c, "move",
      jobj({{"from", jstr(from)}, {"to", jstr(to)}, {"overwrite", overwrite ? "true" : "false"}}));
}
inline Outcome mkdir_op(client::Client& c, const std::string& path, bool parents = true) {
  return call_op(c, "mkdir", jobj({{"path", jstr(path)}, {"parents", parents ? "true" : "false"}}));
}
inline Outcome stat_op(client::Client& c, const std::string& path) {
  return call_op(c, "stat", jobj({{"path", jstr(path)}}));
}

// Bytes and regular files: what `usage` reports, or what lies on disk.
struct Usage {
  std::uint64_t bytes = 0;
  std::uint64_t files = 0;
  bool operator==(const Usage&) const = default;
};
inline std::ostream& operator<<(std::ostream& out, const Usage& u) {
  return out << u.bytes << " bytes in " << u.files << " files";
}

// The regular files under `home` and their sizes (symlinks not followed).
inline Usage usage_on_disk(const std::filesystem::path& home) {
  Usage u;
  for (const std::string& rel : tree(home)) {
    struct stat st {};
    if (::lstat((home / rel).c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      u.bytes += static_cast<std::uint64_t>(st.st_size);
      ++u.files;
    }
  }
  return u;
}

// The `usage` operation's bytes and files; files = UINT64_MAX when the call failed.
inline Usage usage_reported(client::Client& c) {
  Outcome r = call_op(c, "usage", "{}");
  EXPECT_TRUE(r.ok) << r.code << ": " << r.message;
  if (!r.ok) return Usage{0, UINT64_MAX};
  auto d = r.result();
  return Usage{d["bytes"].GetUint64(), d["files"].GetUint64()};
}

// The error codes of OPS/1 §3 (the complete set).
inline bool is_documented_code(const std::string& code) {
  static const std::set<std::string> codes = {
      "bad_frame", "bad_request",       "auth_failed",       "unknown_operation",
      "forbidden", "invalid_args",      "not_found",         "already_exists",
      "conflict",  "payload_too_large", "checksum_mismatch", "quota_exceeded",
      "timeout",   "unavailable",       "internal"};
  return codes.count(code) != 0;
}

// Bytes that differ from round to round, so a file from one round never passes for another.
inline std::string round_body(int round, std::size_t size) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) {
    s[i] = static_cast<char>((i * 131 + static_cast<std::size_t>(round) * 7919 + (i >> 10)) & 0xff);
  }
  return s;
}

}  // namespace ops::test::fileops
