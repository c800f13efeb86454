#include "metrics/audit_log.hpp"

#include <fcntl.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <vector>

#include "metrics/metrics.hpp"

namespace ops::core {

namespace {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

// Client-chosen names are cut to this many bytes (at a UTF-8 character boundary).
constexpr std::size_t kMaxNameBytes = 256;

std::string_view cut(std::string_view text, std::size_t max) {
  if (text.size() <= max) return text;
  std::size_t end = max;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

void put(JsonWriter& w, std::string_view key, std::string_view value) {
  w.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

void begin(JsonWriter& w, std::string_view event, std::uint64_t connection, std::string_view peer) {
  w.StartObject();
  put(w, "time", rfc3339_utc_ms(std::chrono::system_clock::now()));
  put(w, "event", event);
  w.Key("connection");
  w.Uint64(connection);
  put(w, "peer", peer);
}

// A string member of the args object, if it has one.
void put_arg(JsonWriter& w, const rapidjson::Value* args, const char* name) {
  if (args == nullptr || !args->IsObject()) return;
  auto it = args->FindMember(name);
  if (it == args->MemberEnd() || !it->value.IsString()) return;
  put(w, name, std::string_view(it->value.GetString(), it->value.GetStringLength()));
}

int open_file(const std::filesystem::path& path) {
  return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
}

}  // namespace

std::string rfc3339_utc_ms(std::chrono::system_clock::time_point t) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&seconds, &tm);
  char out[32];
  const std::size_t n = std::strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(out + n, sizeof out - n, ".%03dZ", static_cast<int>(ms % 1000));
  return out;
}

Result<std::unique_ptr<AuditLog>> AuditLog::open(const std::filesystem::path& path,
                                                 Metrics* metrics, std::size_t max_queued) {
  const int fd = open_file(path);
  if (fd < 0) {
    return Error{ErrorCode::internal,
                 "cannot open the audit log " + path.string() + ": " + std::strerror(errno)};
  }
  return std::make_unique<AuditLog>(path, fd, metrics, max_queued);
}

AuditLog::AuditLog(std::filesystem::path path, int fd, Metrics* metrics, std::size_t max_queued)
    : path_(std::move(path)), fd_(fd), metrics_(metrics), max_queued_(max_queued) {
  writer_ = std::thread([this] { write_loop(); });
}

AuditLog::~AuditLog() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  writer_.join();
  if (fd_ >= 0) ::close(fd_);
}

void AuditLog::enqueue(std::string line) {
  line.push_back('\n');
  {
    std::lock_guard lock(mutex_);
    if (queue_.size() >= max_queued_) {
      ++dropped_;
      if (metrics_) metrics_->on_audit_dropped();
      return;
    }
    queue_.push_back(std::move(line));
  }
  wake_.notify_one();
}

void AuditLog::request(std::uint64_t connection, std::string_view peer, std::string_view user,
                       const RequestRecord& record, std::chrono::steady_clock::duration took) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  begin(w, "request", connection, peer);
  put(w, "user", user);
  put(w, "operation", cut(record.operation, kMaxNameBytes));
  w.Key("id");
  if (record.id) {
    w.Uint64(*record.id);
  } else {
    w.Null();
  }
  put(w, "code", record.error ? wire_name(record.error->code) : "ok");
  w.Key("bytes_in");
  w.Uint64(record.bytes_in);
  w.Key("bytes_out");
  w.Uint64(record.bytes_out);
  w.Key("duration_ms");
  w.Double(std::chrono::duration<double, std::milli>(took).count());
  // File operations: the user's paths (never a host path), and the content's hash.
  put_arg(w, record.args, "path");
  put_arg(w, record.args, "from");
  put_arg(w, record.args, "to");
  if (!record.result_sha256.empty()) put(w, "sha256", record.result_sha256);
  w.EndObject();
  enqueue(std::string(buffer.GetString(), buffer.GetSize()));
}

void AuditLog::failed_login(std::uint64_t connection, std::string_view peer,
                            std::string_view user_tried) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  begin(w, "login_failed", connection, peer);
  w.Key("user");
  if (user_tried.data() != nullptr) {
    w.String(cut(user_tried, kMaxNameBytes).data(),
             static_cast<rapidjson::SizeType>(cut(user_tried, kMaxNameBytes).size()));
  } else {
    w.Null();
  }
  w.EndObject();
  enqueue(std::string(buffer.GetString(), buffer.GetSize()));
}

void AuditLog::reopen() {
  {
    std::lock_guard lock(mutex_);
    reopen_ = true;
  }
  wake_.notify_one();
}

std::uint64_t AuditLog::dropped() const {
  std::lock_guard lock(mutex_);
  return dropped_;
}

void AuditLog::write_loop() {
  std::vector<std::string> batch;
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || reopen_ || !queue_.empty(); });
    const bool reopen = std::exchange(reopen_, false);
    batch.clear();
    while (!queue_.empty()) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    const bool stop = stopping_;
    lock.unlock();
    if (reopen) {
      // logrotate has renamed the file: later lines go to a new one under the old name.
      const int fd = open_file(path_);
      if (fd >= 0) {
        ::close(fd_);
        fd_ = fd;
      } else {
        spdlog::error("cannot reopen the audit log {}: {}", path_.string(), std::strerror(errno));
      }
    }
    // One writev per (at most IOV_MAX) lines; O_APPEND keeps each write whole at the end.
    std::vector<iovec> iov;
    for (std::size_t i = 0; i < batch.size();) {
      iov.clear();
      for (; i < batch.size() && iov.size() < 1024; ++i) {
        iov.push_back(iovec{batch[i].data(), batch[i].size()});
      }
      std::size_t at = 0;
      while (at < iov.size()) {
        const ssize_t n = ::writev(fd_, iov.data() + at, static_cast<int>(iov.size() - at));
        if (n < 0) {
          if (errno == EINTR) continue;
          spdlog::error("audit log {}: write failed: {}", path_.string(), std::strerror(errno));
          break;
        }
        std::size_t left = static_cast<std::size_t>(n);
        while (at < iov.size() && left >= iov[at].iov_len) left -= iov[at++].iov_len;
        if (at < iov.size() && left > 0) {
          iov[at].iov_base = static_cast<char*>(iov[at].iov_base) + left;
          iov[at].iov_len -= left;
        }
      }
    }
    lock.lock();
    if (stop && queue_.empty()) return;
  }
}

}  // namespace ops::core
