// The audit log (audit_log in server.json, --audit-log): one JSON line per request and per
// failed login, built with RapidJSON's Writer (every string escaped) on the calling thread,
// written by a background thread, so an I/O thread never waits on the disk. The queue
// between them is bounded: when it is full a line is dropped and counted
// (opserver_audit_dropped_total) instead of blocking or growing. reopen() (SIGUSR1) makes
// the writer close and reopen the file by name, for logrotate. Keys and proofs are never
// written: only the fields below. docs/OPERATING.md has the line format.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "metrics/request_record.hpp"
#include "opserver/error.hpp"

namespace ops::core {

class Metrics;

class AuditLog {
 public:
  // Opens (creates, 0600, appending) `path` and starts the writer.
  static Result<std::unique_ptr<AuditLog>> open(const std::filesystem::path& path, Metrics* metrics,
                                                std::size_t max_queued = 65536);
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;
  // Writes what is queued, then stops the writer.
  ~AuditLog();

  // Any thread, never blocks on the disk.
  void request(std::uint64_t connection, std::string_view peer, std::string_view user,
               const RequestRecord& record, std::chrono::steady_clock::duration took);
  void failed_login(std::uint64_t connection, std::string_view peer, std::string_view user_tried);
  // Any thread (a signal handler's strand): the writer reopens the file before its next write.
  void reopen();

  std::uint64_t dropped() const;

  AuditLog(std::filesystem::path path, int fd, Metrics* metrics, std::size_t max_queued);

 private:
  void enqueue(std::string line);
  void write_loop();

  const std::filesystem::path path_;
  int fd_;  // writer thread only (after construction)
  Metrics* metrics_;
  const std::size_t max_queued_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::string> queue_;
  bool reopen_ = false;
  bool stopping_ = false;
  std::uint64_t dropped_ = 0;
  std::thread writer_;
};

// "2026-12-03T08:39:17.123Z"
std::string rfc3339_utc_ms(std::chrono::system_clock::time_point t);

}  // namespace ops::core
