// The in-memory usage ledger: UsageTracker (quota/usage_tracker.hpp) behind the
// UsageLedger seam, unchanged. One process; the default with the file user store.
#pragma once

#include "quota/usage_ledger.hpp"
#include "quota/usage_tracker.hpp"

namespace ops::core {

class MemoryUsageLedger final : public UsageLedger {
 public:
  explicit MemoryUsageLedger(int storage_fd) : tracker_(storage_fd) {}

  Result<Usage> usage(const std::string& user) override { return tracker_.usage(user); }
  std::optional<Usage> usage_if_known(const std::string& user) override {
    return tracker_.usage_if_counted(user);
  }
  Result<std::uint64_t> reserve(const std::string& user, std::uint64_t bytes, std::uint64_t files,
                                const QuotaLimits& limits) override {
    return tracker_.reserve(user, bytes, files, limits);
  }
  bool commit(const std::string& user, std::uint64_t id, std::int64_t bytes_delta,
              std::int64_t files_delta) override {
    return tracker_.commit(user, id, bytes_delta, files_delta);
  }
  Status hold(const std::string& user, std::uint64_t id, const std::string& tag) override {
    if (tracker_.hold(user, id, tag)) return ok_status();
    return fail(ErrorCode::not_found, "no such reservation");
  }
  bool commit_held(const std::string& user, const std::string& tag, std::int64_t bytes_delta,
                   std::int64_t files_delta) override {
    return tracker_.commit_held(user, tag, bytes_delta, files_delta);
  }
  void adjust(const std::string& user, std::int64_t bytes_delta,
              std::int64_t files_delta) override {
    tracker_.adjust(user, bytes_delta, files_delta);
  }
  void forget(const std::string& user) override { tracker_.forget(user); }

 private:
  UsageTracker tracker_;
};

}  // namespace ops::core
