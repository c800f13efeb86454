// list (OPS/1 §5, §7): the files and directories under a directory of the caller's.
//
// Decisions:
//  - Only regular files ("file") and directories ("dir") are shown. Symlinks, fifos,
//    sockets and devices (which no operation creates, but which may be planted on disk)
//    are hidden and never followed: listing them would advertise names that every other
//    operation refuses. Names that are not valid UTF-8 or contain a control character are
//    hidden for the same reason (§5/§7 paths cannot name them, and JSON cannot carry
//    invalid UTF-8).
//  - `size` is the file size in bytes (0 for a directory); `mtime` is the last
//    modification time in whole seconds since the Unix epoch.
//  - With `recursive`, names are paths relative to the listed directory ("sub/f.txt");
//    directories are walked without following symlinks, each opened beneath the listed
//    directory (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS).
//  - Entries are sorted by name as bytes (memcmp order), whole relative paths when
//    recursive. At most `max_list_entries` entries (setting, default 10,000) are returned,
//    and the response also stays under `max_list_bytes` of JSON (setting, default
//    960 KiB, so it fits the default 1 MiB frame of §1). When either cap cut the list,
//    `"truncated": true`, and the entries returned are the first ones in sort order.
//    `truncated` is always present.
//  - A path naming a file is `conflict`; "" or absent lists the user's root.
//  - Paging (§10): `limit` (at least 1, at most `max_list_entries`) caps the page, and
//    `after` skips every entry whose name (relative path when recursive) is not strictly
//    after it in the same byte order. A cut page carries `"next"`: the name of its last
//    entry, to pass as `after`. `after` is only a position, so it need not exist. A
//    subtree whose every path sorts at or before `after` is not walked.
// Memory stays O(cap) however large the directory: entries are kept to the smallest names
// seen so far, and subtrees that sort after the cut are not walked.
#include <dirent.h>
#include <fcntl.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "opserver/files.hpp"
#include "opserver/paths.hpp"
#include "opserver/plugin.hpp"

namespace {

using ops::ErrorCode;
using ops::Status;
using ops::sdk::Call;
using ops::sdk::Fd;

constexpr const char* kSchema = R"json({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "properties": {
    "path": {"type": "string", "maxLength": 4096, "default": "",
             "description": "the directory to list, relative to yours (default: yours)"},
    "recursive": {"type": "boolean", "default": false,
                  "description": "list subdirectories too, as relative paths"},
    "limit": {"type": "integer", "minimum": 1,
              "description": "at most this many entries (the server caps it at its maximum)"},
    "after": {"type": "string", "maxLength": 4096,
              "description": "only entries after this name (relative path when recursive)"}
  },
  "additionalProperties": false
})json";

// The "settings" of list in ops.json, checked by the server at start-up and reload.
constexpr const char* kSettingsSchema = R"json({
  "type": "object",
  "properties": {
    "max_list_entries": {"type": "integer", "minimum": 1},
    "max_list_bytes": {"type": "integer", "minimum": 1024}
  },
  "additionalProperties": false
})json";
constexpr std::uint64_t kDefaultMaxEntries = 10000;
constexpr std::uint64_t kDefaultMaxBytes = 960 * 1024;

struct Entry {
  std::string name;
  bool dir = false;
  std::uint64_t size = 0;
  std::int64_t mtime = 0;
};

struct DirCloser {
  void operator()(DIR* d) const noexcept { ::closedir(d); }
};

class Collector {
 public:
  explicit Collector(std::size_t cap) : cap_(cap) {}

  // Whether a name can still make the final list (it sorts before the current cut). With
  // cap 0 nothing can (every name is >= "").
  bool may_keep(const std::string& name) const { return !cut_ || name < cut_name_; }

  void add(Entry entry) {
    if (!may_keep(entry.name)) {
      truncated_ = true;
      return;
    }
    entries_.push_back(std::move(entry));
    if (entries_.size() >= std::max<std::size_t>(2 * cap_, 1024) && entries_.size() > cap_) {
      compact();
    }
  }

  // Keeps the `cap` smallest names; the largest kept one becomes the cut.
  void compact() {
    if (entries_.size() <= cap_) return;
    truncated_ = true;
    auto by_name = [](const Entry& a, const Entry& b) { return a.name < b.name; };
    std::nth_element(entries_.begin(), entries_.begin() + static_cast<std::ptrdiff_t>(cap_),
                     entries_.end(), by_name);
    entries_.resize(cap_);
    cut_ = true;
    // Names are unique, so a later name can only displace a kept one if it sorts before
    // the largest kept name.
    cut_name_ = entries_.empty()
                    ? std::string()
                    : std::max_element(entries_.begin(), entries_.end(), by_name)->name;
  }

  std::vector<Entry> finish() {
    compact();
    std::sort(entries_.begin(), entries_.end(),
              [](const Entry& a, const Entry& b) { return a.name < b.name; });
    return std::move(entries_);
  }
  bool truncated() const noexcept { return truncated_; }

 private:
  std::size_t cap_;
  std::vector<Entry> entries_;
  bool truncated_ = false;
  bool cut_ = false;
  std::string cut_name_;
};

// A name that every other operation could address (see the decisions above).
bool presentable(const std::string& relative) {
  return ops::sdk::validate_path(relative).ok();
}

// Whether every path beneath directory `dir` ("dir/...") sorts at or before `after`, so
// that a page starting after `after` needs nothing from it. All of them start with
// "dir/"; they are all <= after exactly when after > "dir/" and does not start with it.
bool subtree_before(const std::string& dir, const std::string& after) {
  const std::string prefix = dir + "/";
  return prefix < after && after.compare(0, prefix.size(), prefix) != 0;
}

// Lists one directory (already open as `dir_fd`, owned here) into `out`, skipping entries
// at or before `after`; subdirectories to visit are appended to `pending` as paths
// relative to the listed root.

Status scan(Fd dir_fd, const std::string& prefix, bool recursive, const std::string& after,
            Collector& out, std::vector<std::string>& pending, const std::string& user_path) {
  std::unique_ptr<DIR, DirCloser> dir(::fdopendir(dir_fd.get()));
  if (!dir) return ops::sdk::error_from_errno(errno, user_path);
  dir_fd.release();  // the DIR owns it now
  const int fd = ::dirfd(dir.get());
  while (true) {
    errno = 0;
    dirent* de = ::readdir(dir.get());
    if (de == nullptr) {
      if (errno != 0) return ops::sdk::error_from_errno(errno, user_path);
      break;
    }
    const std::string name = de->d_name;
    if (name == "." || name == "..") continue;
    if (de->d_type == DT_LNK || de->d_type == DT_FIFO || de->d_type == DT_SOCK ||
        de->d_type == DT_CHR || de->d_type == DT_BLK) {
      continue;
    }
    std::string relative = prefix.empty() ? name : prefix + "/" + name;
    if (!presentable(relative)) continue;
    if (!out.may_keep(relative)) {
      // Neither it nor anything beneath it ("relative/...", which sorts after it) can
      // make the list.
      if (after < relative) out.add(Entry{std::move(relative)});
      continue;
    }
    struct stat st {};
    if (::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;  // removed meanwhile
      return ops::sdk::error_from_errno(errno, user_path);
    }
    auto info = ops::sdk::entry_info(st);
    if (!info) continue;  // a symlink or special file (d_type was DT_UNKNOWN)
    if (info->dir && recursive && !subtree_before(relative, after)) pending.push_back(relative);
    if (!(after < relative)) continue;  // at or before the page's start
    out.add(Entry{std::move(relative), info->dir, info->size, info->mtime});
  }
  return ops::ok_status();
}

void write_entry(rapidjson::Writer<rapidjson::StringBuffer>& w, const Entry& e) {
  w.StartObject();
  w.Key("name");
  w.String(e.name.data(), static_cast<rapidjson::SizeType>(e.name.size()));
  w.Key("type");
  w.String(e.dir ? "dir" : "file");
  w.Key("size");
  w.Uint64(e.size);
  w.Key("mtime");
  w.Int64(e.mtime);
  w.EndObject();
}

Status handle_list(Call& call, const rapidjson::Value& args) {
  std::string path;
  if (auto it = args.FindMember("path"); it != args.MemberEnd() && it->value.IsString()) {
    path.assign(it->value.GetString(), it->value.GetStringLength());
  }
  bool recursive = false;
  if (auto it = args.FindMember("recursive"); it != args.MemberEnd() && it->value.IsBool()) {
    recursive = it->value.GetBool();
  }
  std::string after;
  if (auto it = args.FindMember("after"); it != args.MemberEnd() && it->value.IsString()) {
    after.assign(it->value.GetString(), it->value.GetStringLength());
  }
  std::uint64_t max_entries = call.setting_u64("max_list_entries", kDefaultMaxEntries);
  if (auto it = args.FindMember("limit"); it != args.MemberEnd()) {
    if (!it->value.IsUint64() || it->value.GetUint64() < 1) {
      return ops::fail(ErrorCode::invalid_args, "limit must be an integer of at least 1");
    }
    max_entries = std::min(max_entries, it->value.GetUint64());
  }
  const std::uint64_t max_bytes = call.setting_u64("max_list_bytes", kDefaultMaxBytes);

  auto root = ops::sdk::open_dir_beneath(call.user_dir(), path, /*create_missing=*/false);
  if (!root) return std::move(root).error();

  Collector collector(static_cast<std::size_t>(std::min<std::uint64_t>(max_entries, 1u << 30)));
  std::vector<std::string> pending;
  // The listed directory itself; later ones are re-opened beneath it by relative path.
  Fd first(::openat(root->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!first.valid()) return ops::sdk::error_from_errno(errno, path);
  if (Status s = scan(std::move(first), "", recursive, after, collector, pending, path); !s)
    return s;
  while (!pending.empty()) {
    std::string sub = std::move(pending.back());
    pending.pop_back();
    if (!collector.may_keep(sub)) continue;  // its contents sort after the cut
    auto dir = ops::sdk::open_beneath(root->get(), sub, O_RDONLY | O_DIRECTORY);
    if (!dir) {
      // Removed, or swapped for a symlink or a file since it was read: skip it, as a
      // listing taken a moment later would.
      ErrorCode c = dir.error().code;
      if (c == ErrorCode::not_found || c == ErrorCode::forbidden || c == ErrorCode::conflict) {
        continue;
      }
      return std::move(dir).error();
    }
    if (Status s = scan(std::move(*dir), sub, recursive, after, collector, pending, path); !s)
      return s;
  }

  std::vector<Entry> entries = collector.finish();
  bool truncated = collector.truncated();

  // Serialise under the byte budget: the envelope first, then each entry while it fits.
  rapidjson::StringBuffer head;
  {
    rapidjson::Writer<rapidjson::StringBuffer> w(head);
    w.StartObject();
    w.Key("path");
    w.String(path.data(), static_cast<rapidjson::SizeType>(path.size()));
    w.EndObject();
  }
  std::string result(head.GetString(), head.GetSize() - 1);  // drop the closing brace
  result += ",\"entries\":[";
  // The tail of a cut page names its last entry; reserve room for it as each entry is
  // added, so the answer never outgrows max_bytes.
  constexpr std::size_t kTail = sizeof("],\"truncated\":false}") - 1;
  constexpr std::size_t kCutTail = sizeof("],\"truncated\":true,\"next\":}") - 1;
  bool first_entry = true;
  std::string next;  // JSON string of the last entry's name
  // One pair of buffers and writers for every entry: a page of small entries spent more
  // on allocating them than on writing.
  rapidjson::StringBuffer one;
  rapidjson::Writer<rapidjson::StringBuffer> w(one);
  rapidjson::StringBuffer name;
  rapidjson::Writer<rapidjson::StringBuffer> nw(name);
  result.reserve(std::min<std::size_t>(max_bytes, 128 + entries.size() * 96));
  for (const Entry& e : entries) {
    one.Clear();
    w.Reset(one);
    write_entry(w, e);
    name.Clear();
    nw.Reset(name);
    nw.String(e.name.data(), static_cast<rapidjson::SizeType>(e.name.size()));
    if (result.size() + 1 + one.GetSize() + std::max(kTail, kCutTail + name.GetSize()) >
        max_bytes) {
      truncated = true;
      break;
    }
    if (!first_entry) result += ',';
    first_entry = false;
    result.append(one.GetString(), one.GetSize());
    next.assign(name.GetString(), name.GetSize());
  }
  if (truncated && next.empty() && !entries.empty()) {
    // Not one entry fits max_bytes: a misconfiguration, not a page a client can go on from.
    return ops::fail(ErrorCode::internal, "max_list_bytes is too small for one entry");
  }
  result += truncated ? "],\"truncated\":true,\"next\":" + next + "}" : "],\"truncated\":false}";
  return call.send_result(result);
}

}  // namespace

OPS_EXPORT_PLUGIN("list", "1.0.0",
                  OPS_OPERATION_HOOKS("list",
                                      "List a directory (name, type, size, mtime), optionally "
                                      "recursively",
                                      "1.0.0", OPS_PAYLOAD_NONE, kSchema, handle_list,
                                      kSettingsSchema, nullptr, nullptr, nullptr))
