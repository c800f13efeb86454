// The server-private scratch area, <storage>/.ops-tmp, when several servers (nodes) share
// one storage directory (docs/SCALING.md, "Scratch layout"):
//
//   .ops-tmp/                  shared by every node: uploads/ (resumable partials, which
//                              any node continues) and the replace lock (flock on .ops-tmp)
//   .ops-tmp/node-<id>/        one node's temporaries: upload-* files, remove asides,
//                              unregistered-* trees, claimed-* (stale dirs taken over)
//   .ops-tmp/node-<id>/.owner  its owner's lock file: flock(LOCK_EX) held while the node
//                              runs, its mtime touched every minute (the heartbeat)
//
// Why: a node's start used to empty .ops-tmp, deleting the temporary files of uploads that
// other nodes were running. Now each node empties only its own directory (its own crash
// leftovers), and the directory of a node that is gone (its lock free AND its heartbeat
// older than `stale`) is claimed by whichever node looks next: renamed into the claimer's
// own directory (rename is atomic, so exactly one node wins) and deleted there. Trees are
// thus only ever deleted by the node whose directory holds them, never by two at once.
// Everything stays on the storage filesystem, so publishing a temporary is a rename.
#pragma once

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "opserver/error.hpp"
#include "opserver/fd.hpp"

namespace ops::core {

inline constexpr std::string_view kNodeDirPrefix = "node-";
inline constexpr const char* kNodeOwnerFile = ".owner";
inline constexpr std::string_view kClaimedPrefix = "claimed-";

// 1 to 64 of [A-Za-z0-9._-], not starting with '.': one safe path component.
bool valid_node_id(std::string_view id) noexcept;
// "<host name>-<8 hex of SHA-256 of the absolute state directory>": stable across restarts,
// distinct for two servers on one host (each has its own state directory).
std::string default_node_id(const std::filesystem::path& state_dir);

struct ScratchTiming {
  std::chrono::milliseconds heartbeat{std::chrono::seconds(60)};
  // Another node's directory is taken over only when its lock is free and its heartbeat
  // is older than this (the lock alone is not trusted: NFS mounted with local_lock=flock
  // keeps locks per client). Also the age of a legacy file directly in .ops-tmp.
  std::chrono::milliseconds stale{std::chrono::minutes(10)};
  std::chrono::milliseconds scan{std::chrono::minutes(5)};  // how often others are looked at
  // How long open() waits for the owner lock (a node claiming the directory holds it for a
  // moment) before concluding that a running server uses this id.
  std::chrono::milliseconds lock_wait{5000};
};

class NodeScratch {
 public:
  // Creates or opens <root>/node-<id>, takes its owner lock (waiting up to about 5 s for a
  // node that is claiming it; then refusing: another running server uses this id) and
  // removes the files it holds: this node's temporaries left by a crash.
  static Result<std::unique_ptr<NodeScratch>> open(int root_fd, const std::string& id,
                                                   ScratchTiming timing = {});
  ~NodeScratch();  // stops the janitor after the tree in progress; releases the lock
  NodeScratch(const NodeScratch&) = delete;
  NodeScratch& operator=(const NodeScratch&) = delete;

  int fd() const noexcept { return dir_.get(); }
  const std::string& id() const noexcept { return id_; }
  std::string dir_name() const { return std::string(kNodeDirPrefix) + id_; }

  // Starts the janitor thread: deletes the directories left in this node's directory by a
  // crash, then claims and deletes stale directories of other nodes (and legacy leftovers
  // directly in .ops-tmp) at once and every `scan`, and keeps the heartbeat.
  void start_janitor();

  // One pass over .ops-tmp (what the janitor does every `scan`): claims what is stale into
  // this node's directory and deletes it. Returns how many entries it claimed or removed.
  std::size_t collect_stale();

 private:
  NodeScratch(int root_fd, std::string id, Fd dir, Fd owner, ScratchTiming timing)
      : root_fd_(root_fd),
        id_(std::move(id)),
        dir_(std::move(dir)),
        owner_(std::move(owner)),
        timing_(timing) {}
  void run();
  void heartbeat();
  // Renames <root>/<name> into this node's directory; the new name, or "" if another node
  // was first (or it failed).
  std::string claim(const std::string& name, const std::string& what);
  // Deletes these trees in this node's directory, stopping early when asked to stop.
  void remove_trees(const std::vector<std::string>& names);

  int root_fd_;
  std::string id_;
  Fd dir_;
  Fd owner_;
  ScratchTiming timing_;
  // Directories found in this node's directory at open (its earlier life's unregistered-*
  // and claimed-* trees), listed before any new one can appear, deleted by the janitor.
  std::vector<std::string> leftovers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace ops::core
