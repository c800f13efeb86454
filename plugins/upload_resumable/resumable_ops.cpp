// Resumable uploads (OPS/1 §11): upload_open, upload_append, upload_status, upload_commit
// and upload_abort, in one plugin because they share the in-process state of every open
// upload (upload_state.hpp: the durable offset and the running SHA-256), which separate
// .so files, each loaded RTLD_LOCAL, could not share.
//
// Rules kept here, and why:
// - An append is accepted only at the server's current end, and is answered only after its
//   bytes are fsynced: the offset a client is told is never lost by a crash. A client that
//   vanishes mid-append keeps what arrived (fsynced, then reported by upload_status); if
//   that cannot be made durable the partial is cut back to the previous end.
// - Every append and commit holds the partial's exclusive flock. A second one arriving
//   meanwhile does not wait (it could wait for a whole slow transfer): it gets `conflict`
//   with details {"offset": the durable end before the running append}.
// - upload_commit publishes exactly as `upload` does (the SDK's publish.hpp). Until then
//   the partial lives in server-private scratch, invisible to list/stat/download.
// - After a restart the durable offset is re-learned (fsync, then size) on first contact,
//   and the SHA-256 is re-computed once, by the first commit.
// - Any server sharing the storage directory may serve any call of an upload: the partial
//   and its files are in the shared scratch directory, the flock on the partial is the one
//   writer across servers, this process's state is only a cache checked against the file
//   under that lock (upload_state.hpp), and what the lock holder has made durable is
//   published in the upload's mark, which a status on another server reads while the lock
//   is held (upload_store.hpp).
// Settings (upload_open's "settings" in ops.json): upload_expiry (seconds, default 86400)
// and max_open_uploads (per user, default 64). The expiry is recorded in each upload at open.
#include <fcntl.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "opserver/paths.hpp"
#include "opserver/plugin.hpp"
#include "opserver/publish.hpp"
#include "upload_state.hpp"
#include "upload_store.hpp"

namespace {

using ops::ErrorCode;
using ops::Result;
using ops::Status;
using ops::resumable::FoundUpload;
using ops::resumable::UploadMeta;
using ops::resumable::UploadState;
using ops::resumable::UploadStore;
using ops::sdk::Call;

constexpr std::size_t kChunk = std::size_t{1} << 20;
constexpr std::uint64_t kDefaultExpirySeconds = 24 * 3600;
constexpr std::uint64_t kDefaultMaxOpen = 64;

// upload_open's "settings" in ops.json, checked by the server at start-up and reload.
constexpr const char* kOpenSettingsSchema = R"json({
  "type": "object",
  "properties": {
    "upload_expiry": {"type": "integer", "minimum": 1, "maximum": 1099511627776},
    "max_open_uploads": {"type": "integer", "minimum": 1}
  },
  "additionalProperties": false
})json";
constexpr const char* kOpenSchema = R"json({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "properties": {
    "path": {"type": "string", "minLength": 1, "maxLength": 4096,
             "description": "where the file is published at commit, relative to your directory"},
    "size": {"type": "integer", "minimum": 0, "maximum": 9007199254740991,
             "description": "the total size, if known: appends past it are refused"},
    "overwrite": {"type": "boolean", "default": false,
                  "description": "replace an existing file at commit"},
    "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$",
               "description": "expected SHA-256 of the whole file, hex"}
  },
  "required": ["path"],
  "additionalProperties": false
})json";

constexpr const char* kAppendSchema = R"json({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "properties": {
    "upload": {"type": "string", "maxLength": 128, "description": "the id from upload_open"},
    "offset": {"type": "integer", "minimum": 0, "maximum": 9007199254740991,
               "description": "where these bytes go: must be the server's current end"}
  },
  "required": ["upload", "offset"],
  "additionalProperties": false
})json";

constexpr const char* kStatusSchema = R"json({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "properties": {
    "upload": {"type": "string", "maxLength": 128, "description": "the id from upload_open"},
    "path": {"type": "string", "minLength": 1, "maxLength": 4096,
             "description": "or: your most recently opened upload to this path"}
  },
  "additionalProperties": false
})json";

constexpr const char* kCommitSchema = R"json({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "properties": {
    "upload": {"type": "string", "maxLength": 128, "description": "the id from upload_open"},
    "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$",
               "description": "expected SHA-256 of the whole file, hex"}
  },
  "required": ["upload"],
  "additionalProperties": false
})json";

constexpr const char* kAbortSchema = R"json({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "properties": {
    "upload": {"type": "string", "maxLength": 128, "description": "the id from upload_open"}
  },
  "required": ["upload"],
  "additionalProperties": false
})json";

// --- small helpers ---

std::optional<std::string> string_arg(const rapidjson::Value& args, const char* name) {
  auto it = args.FindMember(name);
  if (it == args.MemberEnd() || !it->value.IsString()) return std::nullopt;
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

// The tag an upload's quota room is held under (ops_host_v1::quota_hold).
std::string quota_tag(const std::string& id) {
  return "upload:" + id;
}

std::optional<std::uint64_t> uint_arg(const rapidjson::Value& args, const char* name) {
  auto it = args.FindMember(name);
  if (it == args.MemberEnd() || !it->value.IsUint64()) return std::nullopt;
  return it->value.GetUint64();
}

std::string lowercase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string offset_details(std::uint64_t offset) {
  return "{\"offset\":" + std::to_string(offset) + "}";
}

ops::Error io_error(int err, const std::string& what) {
  if (err == ENOSPC || err == EDQUOT) return ops::fail(ErrorCode::unavailable, "no space left");
  return ops::fail(ErrorCode::unavailable, what + ": " + std::strerror(err));
}

std::uint64_t expiry_ms_setting(Call& call) {
  std::uint64_t seconds = call.setting_u64("upload_expiry", kDefaultExpirySeconds);
  if (seconds == 0 || seconds > (std::uint64_t{1} << 40)) seconds = kDefaultExpirySeconds;
  return seconds * 1000;
}

// Every call first removes what has expired, for every user (rate-limited): expiry must
// not depend on a client naming the expired id.
Result<UploadStore> open_store(Call& call) {
  UploadStore::sweep_if_due(call.scratch_dir(), kDefaultExpirySeconds * 1000);
  // §11: an expired upload's reserved quota is returned (in a call of its own user).
  for (const std::string& id : UploadStore::take_expired(std::string(call.user()))) {
    call.quota_release_held(quota_tag(id));
  }
  return UploadStore::open(call.scratch_dir(), std::string(call.user()), call.user_dir());
}

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;
void put(Writer& w, const std::string& s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

// The partial's exclusive flock, held by an append or a commit for its whole run.
bool try_lock(int fd) {
  return ::flock(fd, LOCK_EX | LOCK_NB) == 0;
}

// While another call, here or on another server, holds the partial's lock: the durable end
// it published in the mark (never less than an offset acknowledged, never more than is
// durable). This process's own state may be stale: another server may have appended since.
// An upload from before marks existed: the partial's size.
std::uint64_t durable_while_busy(const UploadStore& store, const FoundUpload& up) {
  return store.read_mark(up.meta.id).value_or(up.file_size);
}

ops::Error busy(const UploadStore& store, const FoundUpload& up) {
  const std::uint64_t durable = durable_while_busy(store, up);
  return ops::fail_with_details(
      ErrorCode::conflict, "another append or commit of upload " + up.meta.id + " is in progress",
      offset_details(durable));
}

// Takes the lock of a found upload: `conflict` while another append or commit holds it,
// `not_found` if an abort or the expiry sweep removed the upload between the find and the
// lock (the partial this call opened would otherwise be an unlinked file).
Status lock_upload(const UploadStore& store, const FoundUpload& up) {
  if (!try_lock(up.part.get())) return busy(store, up);
  struct stat st {};
  if (::fstatat(store.dir(), UploadStore::meta_name(up.meta.id).c_str(), &st,
                AT_SYMLINK_NOFOLLOW) != 0) {
    return ops::fail(ErrorCode::not_found, "no such upload: " + up.meta.id);
  }
  return ops::ok_status();
}

// Under the lock: the durable end. This process's state is trusted only for the very
// partial it was recorded on at the very size (upload_state.hpp); otherwise (first contact
// after a restart, or another server appended or cut back since) the partial is fsynced
// first, so what is reported is what is on disk and stays there, and the running hash is
// dropped (re-hashed at commit). The mark is brought up to date for status calls made
// elsewhere while this lock is held.
Result<std::uint64_t> settle(const UploadStore& store, const FoundUpload& up, UploadState& state) {
  struct stat st {};
  if (::fstat(up.part.get(), &st) != 0) return io_error(errno, "cannot read the upload");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const auto inode = static_cast<std::uint64_t>(st.st_ino);
  if (state.inode != inode) {
    state.durable.store(ops::resumable::kUnknownOffset);
    state.hash.reset();
    state.inode = inode;
  }
  if (state.durable.load() != size) {
    if (::fsync(up.part.get()) != 0) return io_error(errno, "cannot sync the upload");
    state.durable.store(size);
  }
  if (state.hash && state.hashed != size) state.hash.reset();  // re-hash at commit
  if (store.read_mark(up.meta.id) != size) {
    if (Status marked = store.write_mark(up.meta.id, size); !marked) return marked.error();
  }
  return size;
}

// Cuts the partial back to `end` after a failed append, so that nothing undurable is ever
// counted; the running hash no longer matches and is dropped.
void roll_back(const FoundUpload& up, UploadState& state, std::uint64_t end) {
  if (::ftruncate(up.part.get(), static_cast<off_t>(end)) == 0) ::fsync(up.part.get());
  state.hash.reset();
  state.durable.store(end);
}

Status pwrite_all(int fd, const unsigned char* data, std::size_t size, std::uint64_t offset) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error(errno, "cannot store the bytes");
    }
    data += n;
    size -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
  return ops::ok_status();
}

// Reads the partial from the start to hash it (after a restart). Measured in
// docs/OPERATIONS.md: about the speed of SHA-256 over a page-cache read.
Result<ops::resumable::EvpCtx> rehash(int fd, std::uint64_t end) {
  auto ctx = ops::resumable::new_sha256();
  if (!ctx) return ops::fail(ErrorCode::internal, "cannot compute sha256");
  std::unique_ptr<unsigned char[]> buf(new unsigned char[kChunk]);
  std::uint64_t done = 0;
  while (done < end) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, end - done));
    ssize_t n = ::pread(fd, buf.get(), want, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return io_error(errno, "cannot read the upload");
    if (n == 0) return ops::fail(ErrorCode::internal, "the upload shrank while it was hashed");
    if (EVP_DigestUpdate(ctx.get(), buf.get(), static_cast<std::size_t>(n)) != 1) {
      return ops::fail(ErrorCode::internal, "cannot compute sha256");
    }
    done += static_cast<std::uint64_t>(n);
  }
  return ctx;
}

// --- the operations ---

std::mutex g_open_mutex;  // the per-user cap is counted and used under it

Status handle_open(Call& call, const rapidjson::Value& args) {
  UploadMeta meta;
  meta.path = *string_arg(args, "path");
  if (Status v = ops::sdk::validate_path(meta.path); !v) return v;
  meta.size = uint_arg(args, "size");
  if (auto it = args.FindMember("overwrite"); it != args.MemberEnd() && it->value.IsBool()) {
    meta.overwrite = it->value.GetBool();
  }
  if (auto sha = string_arg(args, "sha256")) meta.sha256 = lowercase(*sha);
  meta.user = std::string(call.user());
  meta.expiry_ms = expiry_ms_setting(call);
  const std::uint64_t max_open = call.setting_u64("max_open_uploads", kDefaultMaxOpen);

  auto store = open_store(call);
  if (!store) return std::move(store).error();
  {
    std::lock_guard lock(g_open_mutex);
    if (store->list().size() >= max_open) {
      return ops::fail(ErrorCode::unavailable, "too many open uploads (at most " +
                                                   std::to_string(max_open) +
                                                   "); commit or abort one first");
    }
    // Quota (§10, §11): the declared size (0 when undeclared) and one file, before anything
    // is created; held under the upload's tag once it has an id.
    auto room = ops::sdk::QuotaReservation::reserve(call, meta.size.value_or(0), 1);
    if (!room) return std::move(room).error();
    meta.created_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    if (Status created = store->create(meta); !created) return created;
    if (Status held = room->hold(quota_tag(meta.id)); !held) {
      (void)store->remove(meta.id);  // nothing may stay open without its room
      return held;
    }
  }
  auto state = ops::resumable::state_of(meta.id);
  state->hash = ops::resumable::new_sha256();
  state->hashed = 0;
  state->durable.store(0);
  struct stat part {};
  if (::fstatat(store->dir(), UploadStore::part_name(meta.id).c_str(), &part,
                AT_SYMLINK_NOFOLLOW) == 0) {
    state->inode = static_cast<std::uint64_t>(part.st_ino);
  }

  rapidjson::StringBuffer out;
  Writer w(out);
  w.StartObject();
  w.Key("upload");
  put(w, meta.id);
  w.Key("path");
  put(w, meta.path);
  w.Key("offset");
  w.Uint64(0);
  w.Key("expires");
  put(w, ops::resumable::rfc3339_utc(ops::resumable::now_ms() +
                                     static_cast<std::int64_t>(meta.expiry_ms)));
  w.EndObject();
  return call.send_result(std::string_view(out.GetString(), out.GetSize()));
}

Status handle_append(Call& call, const rapidjson::Value& args) {
  const std::string id = *string_arg(args, "upload");
  const std::uint64_t offset = *uint_arg(args, "offset");
  auto store = open_store(call);
  if (!store) return std::move(store).error();
  auto found = store->find(id);
  if (!found) return std::move(found).error();
  FoundUpload& up = *found;
  auto state = ops::resumable::state_of(id);
  if (Status locked = lock_upload(*store, up); !locked) return locked;

  auto settled = settle(*store, up, *state);
  if (!settled) return std::move(settled).error();
  const std::uint64_t end = *settled;
  // Decided before any payload byte is read (the host discards the rest).
  if (offset != end) {
    return ops::fail_with_details(ErrorCode::conflict,
                                  "upload " + id + " continues at offset " + std::to_string(end) +
                                      ", not " + std::to_string(offset),
                                  offset_details(end));
  }
  const std::uint64_t size = call.payload_size();
  if (up.meta.size && size > *up.meta.size - end) {
    return ops::fail(ErrorCode::payload_too_large,
                     "append of " + std::to_string(size) + " bytes at " + std::to_string(end) +
                         " goes past the declared size " + std::to_string(*up.meta.size) + " of " +
                         up.meta.path);
  }
  // Quota (§10): without a declared size the open reserved no bytes, so each append
  // reserves its own before a payload byte is read, and adds them to the upload's hold.
  if (!up.meta.size && size > 0) {
    auto room = ops::sdk::QuotaReservation::reserve(call, size, 0);
    if (!room) return std::move(room).error();
    if (Status held = room->hold(quota_tag(id)); !held) return held;
  }

  std::unique_ptr<unsigned char[]> buf(
      new unsigned char[std::min<std::uint64_t>(kChunk, size + 1)]);
  const std::size_t cap = std::min<std::uint64_t>(kChunk, size + 1);
  std::uint64_t received = 0;
  bool vanished = false;
  while (received < size) {
    std::int64_t n = call.read_payload(buf.get(), cap);
    if (n <= 0) {
      vanished = true;
      break;
    }
    if (static_cast<std::uint64_t>(n) > size - received) {
      roll_back(up, *state, end);
      return ops::fail(ErrorCode::internal, "payload longer than declared");  // host bug
    }
    if (Status w =
            pwrite_all(up.part.get(), buf.get(), static_cast<std::size_t>(n), end + received);
        !w) {
      roll_back(up, *state, end);
      return w;
    }
    // Start the write-back of what was just written, so the fsync at the end of the append
    // waits only for the last piece instead of the whole chunk (the connection is not read
    // while that fsync runs). Advisory: errors surface from fsync.
    ::sync_file_range(up.part.get(), static_cast<off_t>(end + received), n, SYNC_FILE_RANGE_WRITE);
    if (state->hash &&
        EVP_DigestUpdate(state->hash.get(), buf.get(), static_cast<std::size_t>(n)) != 1) {
      state->hash.reset();
    }
    received += static_cast<std::uint64_t>(n);
  }
  if (size == 0) {
    if (Status t = UploadStore::touch(up.part.get()); !t) return t;
  } else if (::fsync(up.part.get()) != 0) {
    // fsyncgate: after a failed fsync the written pages may be gone; keep none of them.
    int err = errno;
    roll_back(up, *state, end);
    return io_error(err, "cannot make the bytes durable");
  }
  state->durable.store(end + received);
  if (state->hash) state->hashed = end + received;
  if (vanished) {
    // Kept: the bytes that arrived, now durable; the next upload_status, which settles under
    // the lock, reports them (and marks them). Not marked here: nothing acknowledges them,
    // and a status must not report them while this call still holds the lock, or the
    // client's append from that offset would meet the lock (conflict).
    return ops::fail(ErrorCode::unavailable, "payload did not arrive");
  }
  // Before the answer: a status on another server during the next append reports at least
  // this. If it cannot be written, no answer acknowledges the bytes (they are durable, and
  // the next upload_status, which settles under the lock, reports them).
  if (Status marked = store->write_mark(id, end + received); !marked) return marked;

  rapidjson::StringBuffer out;
  Writer w(out);
  w.StartObject();
  w.Key("upload");
  put(w, id);
  w.Key("offset");
  w.Uint64(end + received);
  w.EndObject();
  return call.send_result(std::string_view(out.GetString(), out.GetSize()));
}

Status handle_status(Call& call, const rapidjson::Value& args) {
  auto id = string_arg(args, "upload");
  auto path = string_arg(args, "path");
  if (id.has_value() == path.has_value()) {
    return ops::fail(ErrorCode::invalid_args, "give either upload or path");
  }
  auto store = open_store(call);
  if (!store) return std::move(store).error();
  if (path) {
    if (Status v = ops::sdk::validate_path(*path); !v) return v;
    std::optional<UploadMeta> latest;
    for (UploadMeta& m : store->list()) {
      if (m.path == *path && (!latest || m.created_ns > latest->created_ns)) latest = std::move(m);
    }
    if (!latest) return ops::fail(ErrorCode::not_found, "no open upload to " + *path);
    id = latest->id;
  }
  auto found = store->find(*id);
  if (!found) return std::move(found).error();
  FoundUpload& up = *found;
  auto state = ops::resumable::state_of(*id);
  std::uint64_t offset = 0;
  std::int64_t touched = ops::resumable::now_ms();
  Status locked = lock_upload(*store, up);
  if (!locked && locked.error().code == ErrorCode::not_found) return locked;
  if (locked) {
    auto settled = settle(*store, up, *state);
    if (!settled) return std::move(settled).error();
    offset = *settled;
    if (Status t = UploadStore::touch(up.part.get()); !t) return t;
  } else {
    // An append is running (and touching), maybe on another server: what it published.
    offset = durable_while_busy(*store, up);
  }

  rapidjson::StringBuffer out;
  Writer w(out);
  w.StartObject();
  w.Key("upload");
  put(w, *id);
  w.Key("path");
  put(w, up.meta.path);
  w.Key("offset");
  w.Uint64(offset);
  if (up.meta.size) {
    w.Key("size");
    w.Uint64(*up.meta.size);
  }
  w.Key("expires");
  put(w, ops::resumable::rfc3339_utc(touched + static_cast<std::int64_t>(up.meta.expiry_ms)));
  w.EndObject();
  return call.send_result(std::string_view(out.GetString(), out.GetSize()));
}

Status handle_commit(Call& call, const rapidjson::Value& args) {
  const std::string id = *string_arg(args, "upload");
  auto store = open_store(call);
  if (!store) return std::move(store).error();
  auto found = store->find(id);
  if (!found) return std::move(found).error();
  FoundUpload& up = *found;
  std::optional<std::string> expected = up.meta.sha256;
  if (auto given = string_arg(args, "sha256")) {
    std::string g = lowercase(*given);
    if (expected && *expected != g) {
      return ops::fail(ErrorCode::invalid_args,
                       "sha256 differs from the one given at upload_open (" + *expected + ")");
    }
    expected = g;
  }
  auto state = ops::resumable::state_of(id);
  if (Status locked = lock_upload(*store, up); !locked) return locked;
  auto settled = settle(*store, up, *state);
  if (!settled) return std::move(settled).error();
  const std::uint64_t end = *settled;
  if (Status t = UploadStore::touch(up.part.get()); !t) return t;
  if (up.meta.size && end != *up.meta.size) {
    return ops::fail_with_details(ErrorCode::conflict,
                                  "upload " + id + " has " + std::to_string(end) + " of " +
                                      std::to_string(*up.meta.size) + " bytes",
                                  offset_details(end));
  }

  // The common case: the running hash covers the file. After a restart: read it once.
  if (!state->hash || state->hashed != end) {
    auto ctx = rehash(up.part.get(), end);
    if (!ctx) return std::move(ctx).error();
    state->hash = std::move(*ctx);
    state->hashed = end;
  }
  auto actual = ops::resumable::peek_digest(state->hash.get());
  if (!actual) return std::move(actual).error();
  if (expected && *expected != *actual) {
    return ops::fail(ErrorCode::checksum_mismatch, "sha256 mismatch: expected " + *expected +
                                                       ", received " + *actual + " for " +
                                                       up.meta.path);
  }

  // Published exactly as `upload` publishes (publish.hpp).
  const int root = call.user_dir();
  auto target = ops::sdk::check_publish_target(root, up.meta.path, up.meta.overwrite);
  if (!target) return std::move(target).error();
  // Claim the answer before publishing: a session that has already answered `timeout`
  // (the operation's time limit ran out during a long re-hash) must not see the file
  // appear anyway. Reading the (empty) payload claims the connection, after which the
  // session waits for this handler; -1 means it has given up, and the upload stays open.
  unsigned char no_payload = 0;
  if (call.read_payload(&no_payload, 1) < 0) {
    return ops::fail(ErrorCode::timeout, "upload_commit gave up before publishing; the upload " +
                                             id + " is still open");
  }
  ops::sdk::PublishOutcome outcome;
  Status published = ops::sdk::publish_file(call, root, store->dir(), UploadStore::part_name(id),
                                            up.meta.path, up.meta.overwrite, *target, outcome);
  if (!outcome.visible) return published;  // still open (its room still held), for a retry
  // The hold becomes usage: the file's size less what it replaced, and a file unless it
  // replaced one (what the rename itself displaced, not a look before it).
  call.quota_commit_held(
      quota_tag(id),
      static_cast<std::int64_t>(end) - static_cast<std::int64_t>(outcome.replaced_bytes),
      outcome.replaced ? 0 : 1);
  // The file has its name: the upload is over whatever happens next.
  if (Status removed = store->remove(id); !removed) {
    call.log(OPS_LOG_WARN, "upload " + id + " published, but its state was not removed");
  }
  if (!published) return published;

  rapidjson::StringBuffer out;
  Writer w(out);
  w.StartObject();
  w.Key("path");
  put(w, up.meta.path);
  w.Key("size");
  w.Uint64(end);
  w.Key("sha256");
  put(w, *actual);
  w.EndObject();
  return call.send_result(std::string_view(out.GetString(), out.GetSize()));
}

Status handle_abort(Call& call, const rapidjson::Value& args) {
  const std::string id = *string_arg(args, "upload");
  auto store = open_store(call);
  if (!store) return std::move(store).error();
  auto found = store->find(id);
  if (!found) return std::move(found).error();
  if (Status locked = lock_upload(*store, *found); !locked) return locked;
  if (Status removed = store->remove(id); !removed) return removed;
  call.quota_release_held(quota_tag(id));

  rapidjson::StringBuffer out;
  Writer w(out);
  w.StartObject();
  w.Key("upload");
  put(w, id);
  w.EndObject();
  return call.send_result(std::string_view(out.GetString(), out.GetSize()));
}

}  // namespace

OPS_EXPORT_PLUGIN("upload_resumable", "1.0.0",
                  OPS_OPERATION_HOOKS("upload_open", "Start a resumable upload (its id and expiry)",
                                      "1.0.0", OPS_PAYLOAD_NONE, kOpenSchema, handle_open,
                                      kOpenSettingsSchema, nullptr, nullptr, nullptr),
                  OPS_OPERATION("upload_append",
                                "Append the payload at the upload's current end (fsynced)", "1.0.0",
                                OPS_PAYLOAD_IN, kAppendSchema, handle_append),
                  OPS_OPERATION("upload_status", "Where an open upload stands (by id, or by path)",
                                "1.0.0", OPS_PAYLOAD_NONE, kStatusSchema, handle_status),
                  OPS_OPERATION("upload_commit",
                                "Publish a resumable upload like upload does (atomic)", "1.0.0",
                                OPS_PAYLOAD_NONE, kCommitSchema, handle_commit),
                  OPS_OPERATION("upload_abort", "Drop an open resumable upload and its bytes",
                                "1.0.0", OPS_PAYLOAD_NONE, kAbortSchema, handle_abort))
