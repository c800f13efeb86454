// In-memory state of the open resumable uploads, shared by every call in this process (the
// five operations live in one plugin for this): per upload id, the offset known durable and
// the running SHA-256 of the bytes so far, so that upload_commit need not re-read the file.
//
// A cache, never the truth: the partial is on storage that other servers (nodes sharing
// the storage directory, or other worker processes) append to as well, so whatever this
// process recorded may be stale. Under the partial's flock it is checked against the file
// (resumable_ops.cpp, settle()): it is used only while the partial is the same file
// (inode) of the same size as recorded. Bytes below the recorded size never change once
// they were recorded (appends only add at the end, and a failed append cuts back only to
// where it began, at or past that size), so equal size means equal content. Anything else
// and the state is dropped, exactly as after a restart: the partial is fsynced and its size
// taken as the durable end, and the first commit re-hashes it once.
//
// Threads: `durable` may be read by anyone; the other fields only by the thread that holds
// the partial's exclusive flock (every append and commit takes it first).
#pragma once

#include <openssl/evp.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "opserver/error.hpp"

namespace ops::resumable {

struct EvpCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const noexcept { EVP_MD_CTX_free(ctx); }
};
using EvpCtx = std::unique_ptr<EVP_MD_CTX, EvpCtxDeleter>;

inline constexpr std::uint64_t kUnknownOffset = std::numeric_limits<std::uint64_t>::max();

struct UploadState {
  std::atomic<std::uint64_t> durable{kUnknownOffset};
  EvpCtx hash;               // null: unknown, re-hash at commit
  std::uint64_t hashed = 0;  // bytes the hash covers
  std::uint64_t inode = 0;   // the partial these were recorded on (0: none yet)
  std::int64_t created_ms = 0;
};

// The state of `id`, created empty on first use.
std::shared_ptr<UploadState> state_of(const std::string& id);
// The state of `id` if there is one (no creation).
std::shared_ptr<UploadState> find_state(const std::string& id);
// Forgets `id` (commit, abort, expiry).
void drop_state(const std::string& id);
// Forgets every state older than `min_age_ms` whose id is not in `live` (the uploads still
// on the storage): uploads committed, aborted or expired through another server.
void keep_only(const std::vector<std::string>& live, std::int64_t now_ms, std::int64_t min_age_ms);

// A fresh SHA-256 context, or null when OpenSSL fails.
EvpCtx new_sha256();
// Lowercase hex digest of a copy of `ctx` (the context itself keeps going).
Result<std::string> peek_digest(const EVP_MD_CTX* ctx);

}  // namespace ops::resumable
