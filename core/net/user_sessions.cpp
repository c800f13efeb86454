#include "net/user_sessions.hpp"

#include <algorithm>

#include "net/session.hpp"

namespace ops::core {

std::uint64_t UserSessions::epoch() const {
  std::lock_guard lock(mutex_);
  return epoch_;
}

bool UserSessions::add(const std::string& user, const Connection* id,
                       std::weak_ptr<Session> session, std::uint64_t epoch_before_auth) {
  std::lock_guard lock(mutex_);
  if (auto it = closed_at_.find(user); it != closed_at_.end() && it->second > epoch_before_auth) {
    return false;
  }
  if (disabled_.contains(user)) return false;
  by_user_[user].push_back(Entry{id, std::move(session)});
  return true;
}

void UserSessions::remove(const std::string& user, const Connection* id) {
  std::lock_guard lock(mutex_);
  auto it = by_user_.find(user);
  if (it == by_user_.end()) return;
  std::erase_if(it->second, [id](const Entry& e) { return e.id == id; });
  if (it->second.empty()) by_user_.erase(it);
}

std::size_t UserSessions::close_user(const std::string& user, const Connection* except) {
  std::vector<std::shared_ptr<Session>> victims;
  {
    std::lock_guard lock(mutex_);
    closed_at_[user] = ++epoch_;
    if (auto it = by_user_.find(user); it != by_user_.end()) {
      for (const Entry& e : it->second) {
        if (e.id == except) continue;
        if (auto s = e.session.lock()) victims.push_back(std::move(s));
      }
    }
  }
  // Outside the lock: a session's destructor (if this was its last reference) removes
  // itself from this registry.
  for (auto& s : victims) s->force_close();
  return victims.size();
}

void UserSessions::disable(const std::string& user) {
  std::lock_guard lock(mutex_);
  ++disabled_[user];
}

void UserSessions::enable(const std::string& user) {
  std::lock_guard lock(mutex_);
  auto it = disabled_.find(user);
  if (it != disabled_.end() && --it->second <= 0) disabled_.erase(it);
}

std::size_t UserSessions::count(const std::string& user) const {
  std::lock_guard lock(mutex_);
  auto it = by_user_.find(user);
  return it == by_user_.end() ? 0 : it->second.size();
}

}  // namespace ops::core
