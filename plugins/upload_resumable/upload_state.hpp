// In-memory state of the open resumable uploads, shared by every call in this process (the
// five operations live in one plugin for this): per upload id, the offset known durable and
// the running SHA-256 of the bytes so far, so that upload_commit need not re-read the file.
//
// Threads: `durable` may be read by anyone; the hash fields only by the thread that holds
// the partial's exclusive flock (every append and commit takes it first). After a restart
// there is no state: the first call that locks the partial fsyncs it and records its size,
// and the first commit re-hashes the partial once.
#pragma once

#include <openssl/evp.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

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
};

// The state of `id`, created empty on first use.
std::shared_ptr<UploadState> state_of(const std::string& id);
// The state of `id` if there is one (no creation).
std::shared_ptr<UploadState> find_state(const std::string& id);
// Forgets `id` (commit, abort, expiry).
void drop_state(const std::string& id);

// A fresh SHA-256 context, or null when OpenSSL fails.
EvpCtx new_sha256();
// Lowercase hex digest of a copy of `ctx` (the context itself keeps going).
Result<std::string> peek_digest(const EVP_MD_CTX* ctx);

}  // namespace ops::resumable
