// Where resumable uploads (OPS/1 §11) live between calls, and how they are found.
//
// Layout, all server-private (never reachable through a user's path, §7):
//   <scratch>/uploads/<user>/<id>.part   the bytes received so far
//   <scratch>/uploads/<user>/<id>.meta   what upload_open was told (JSON, written once,
//                                        atomically: .tmp, fsync, rename, fsync dir)
//   <scratch>/uploads/<user>/<id>.mark   the durable end as last published by the holder
//                                        of the partial's lock (decimal; replaced by
//                                        rename, never fsynced: see write_mark)
// <scratch> is shared by every server using the storage directory and nothing in it is
// removed at start-up, so partials survive a restart and any server continues any upload
// (one writer at a time: the partial's flock). An upload exists once its .meta does; a
// .part without one (a crash inside upload_open) is swept like an expired upload.
// The last-touched time is the .part's mtime: an append's write(2) moves it, status and
// commit set it (futimens + fsync), so touching costs no metadata rewrite.
// Binding to the user is by directory: another user's id is simply not in yours. Each
// upload also records the identity of its owner's storage directory (device, inode,
// birth time), so that a user removed and registered again under the same name does not
// inherit the old one's uploads.
// Stateless apart from the files; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "opserver/error.hpp"
#include "opserver/paths.hpp"

namespace ops::resumable {

inline constexpr std::size_t kIdBytes = 16;  // 128 random bits, 32 lowercase hex digits

// True only for exactly 32 lowercase hex digits: anything else never reaches a file name.
bool valid_id(std::string_view id) noexcept;

std::int64_t now_ms() noexcept;
// "2026-12-03T07:30:00Z" (UTC, RFC 3339, whole seconds rounded up so that a client that
// waits until then is never early).
std::string rfc3339_utc(std::int64_t ms);

struct UploadMeta {
  std::string id;
  std::string user;
  std::string path;                   // the user's path it is published to
  std::optional<std::uint64_t> size;  // declared total
  std::optional<std::string> sha256;  // declared at open, lowercase hex
  bool overwrite = false;
  std::int64_t created_ns = 0;  // CLOCK_REALTIME; orders uploads to one path
  std::uint64_t expiry_ms = 0;  // untouched this long = gone (upload_open's setting then)
  std::string home;             // identity of the owner's storage directory at open
};

// One open upload, found and checked: the caller's, present, not expired.
struct FoundUpload {
  UploadMeta meta;
  sdk::Fd part;  // O_RDWR, the caller's own open file description (flock works per fd)
  std::uint64_t file_size = 0;
  std::int64_t touched_ms = 0;
  std::int64_t expires_ms() const { return touched_ms + static_cast<std::int64_t>(meta.expiry_ms); }
};

class UploadStore {
 public:
  // Opens (creating as needed) <scratch>/uploads and <scratch>/uploads/<user>; `user_dir`
  // is the user's storage directory (its identity binds the uploads, see above).
  static Result<UploadStore> open(int scratch_dir, const std::string& user, int user_dir);

  int dir() const noexcept { return user_dir_.get(); }
  static std::string part_name(const std::string& id) { return id + ".part"; }
  static std::string meta_name(const std::string& id) { return id + ".meta"; }
  static std::string mark_name(const std::string& id) { return id + ".mark"; }

  // The mark: what upload_status answers while another call (on any server) holds the
  // partial's lock. Written only by the lock holder, only with an offset already fsynced,
  // and after every append before its answer: so it is never more than is durable and
  // never less than any offset acknowledged. Replaced whole by rename (readers never see
  // half of it); not fsynced: after a crash the next lock holder rewrites it.
  Status write_mark(const std::string& id, std::uint64_t offset) const;
  std::optional<std::uint64_t> read_mark(const std::string& id) const;

  // Creates the empty partial and then its metadata, both durable. `meta.id` is chosen here.
  Status create(UploadMeta& meta);
  // The caller's upload `id`, or not_found alike for a malformed, unknown, expired (then
  // removed) or foreign id.
  Result<FoundUpload> find(const std::string& id);
  // The caller's open (unexpired) uploads.
  std::vector<UploadMeta> list();
  // Removes the partial and the metadata, durably. Missing files are fine.
  Status remove(const std::string& id);
  // Sets the last-touched time to now, durably.
  static Status touch(int part_fd);

  // Removes every expired upload of every user (and orphaned partials/temporaries), at most
  // once per second across the process, however many calls come. Uploads with an append
  // in progress (their partial is locked) are left alone.
  static void sweep_if_due(int scratch_dir, std::uint64_t default_expiry_ms);
  // The ids of `user`'s uploads the sweep removed since the last call, whose held quota
  // room the caller (a call of that user) must release.
  static std::vector<std::string> take_expired(const std::string& user);

 private:
  UploadStore(sdk::Fd uploads, sdk::Fd user_dir, std::string user, std::string home)
      : uploads_(std::move(uploads)),
        user_dir_(std::move(user_dir)),
        user_(std::move(user)),
        home_(std::move(home)) {}
  bool owned(const UploadMeta& meta) const { return meta.user == user_ && meta.home == home_; }
  Result<UploadMeta> read_meta(const std::string& id);

  sdk::Fd uploads_;
  sdk::Fd user_dir_;
  std::string user_;
  std::string home_;
};

}  // namespace ops::resumable
