// The opclient verbs. Each returns the process exit status (exit_codes.hpp) and has
// printed whatever it had to say. No protocol code here: only the client library.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "connection.hpp"

namespace ops::opclient {

struct CallFlags {
  std::string operation;
  std::string args_json;             // --args
  std::vector<std::string> assigns;  // -a key=value
  std::string in;                    // --in FILE|-
  std::string out;                   // --out FILE|-
};
int run_call(const ConnectionFlags& conn, const CallFlags& flags);

struct DescribeFlags {
  std::string operation;  // optional: details of one operation
  bool json = false;
};
int run_describe(const ConnectionFlags& conn, const DescribeFlags& flags);

struct UploadFlags {
  std::string local;
  std::string remote;
  bool overwrite = false;
  bool resume = false;                              // --resume: continue an open upload
  bool recursive = false;                           // -r: LOCAL is a directory tree
  std::uint64_t resumable_threshold = 64ull << 20;  // larger files go resumable (§11)
  std::uint64_t chunk = 8ull << 20;                 // bytes per upload_append
};
int run_upload(const ConnectionFlags& conn, const UploadFlags& flags);

struct DownloadFlags {
  std::string remote;
  std::string local;
  bool resume = false;     // --continue
  bool sha256 = false;     // --sha256: check the whole file against the server's SHA-256
  bool force = false;      // --force: replace an existing LOCAL
  bool recursive = false;  // -r: REMOTE is a directory tree
};
int run_download(const ConnectionFlags& conn, const DownloadFlags& flags);

struct LsFlags {
  std::string path;
  bool recursive = false;
  bool json = false;
  bool human = false;       // -h: sizes as 1.5K, 20.0M
  std::uint64_t limit = 0;  // --limit: one page of at most this many (0: every page)
  std::string after;        // --after: start after this name
};
int run_ls(const ConnectionFlags& conn, const LsFlags& flags);

struct RmFlags {
  std::string path;
  bool recursive = false;
};
int run_rm(const ConnectionFlags& conn, const RmFlags& flags);

struct MvFlags {
  std::string from;
  std::string to;
  bool overwrite = false;
};
int run_mv(const ConnectionFlags& conn, const MvFlags& flags);

struct MkdirFlags {
  std::string path;
  bool parents = true;  // OPS/1 §10's default; --no-parents turns it off
};
int run_mkdir(const ConnectionFlags& conn, const MkdirFlags& flags);

struct StatFlags {
  std::string path;
  bool sha256 = false;
};
int run_stat(const ConnectionFlags& conn, const StatFlags& flags);

struct RegisterFlags {
  std::string name;
  std::string key_file_out;
  bool json = false;
};
int run_register(const ConnectionFlags& conn, const RegisterFlags& flags);

struct UsageFlags {
  bool json = false;
};
int run_usage(const ConnectionFlags& conn, const UsageFlags& flags);

struct SetQuotaFlags {
  std::string user;
  std::string bytes;  // "" (unchanged), "none", or a count
  std::string files;
  bool json = false;
};
int run_set_quota(const ConnectionFlags& conn, const SetQuotaFlags& flags);

struct UnregisterFlags {
  std::string user;
  bool json = false;
};
int run_unregister(const ConnectionFlags& conn, const UnregisterFlags& flags);

struct RekeyFlags {
  std::string user;  // "": yourself
  std::string key_file_out;
  bool json = false;
};
int run_rekey(const ConnectionFlags& conn, const RekeyFlags& flags);

// Builds the args object for `call` from --args and -a key=value (JSON if it parses,
// else a string). Returns false with a message in `error` on bad input.
bool build_call_args(const std::string& args_json, const std::vector<std::string>& assigns,
                     std::string& out, std::string& error);

}  // namespace ops::opclient
