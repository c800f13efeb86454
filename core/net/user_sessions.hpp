// The authenticated connections, by user name, so that `unregister` and `rekey` can
// close a user's connections at once (OPS/1 §10). A session registers right after its
// handshake succeeds and unregisters when it ends. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace ops::core {

class Session;
class Connection;

class UserSessions {
 public:
  // Read by a session before it checks a key. close_user() moves it on, so a session
  // whose key was checked before a close (a rekey racing a handshake) is refused by add().
  std::uint64_t epoch() const;

  // Records an authenticated session, identified by its connection. False, and nothing
  // recorded, when the user's connections were closed after `epoch_before_auth`: the key
  // that session proved may no longer be valid, so it must not go on.
  bool add(const std::string& user, const Connection* id, std::weak_ptr<Session> session,
           std::uint64_t epoch_before_auth);
  void remove(const std::string& user, const Connection* id);

  // Closes every connection of `user` (breaking any read or write in progress, even in
  // the middle of a request) except `except` (may be null). Returns how many it closed.
  std::size_t close_user(const std::string& user, const Connection* except);
  // While a user is disabled (being unregistered), add() refuses it whatever the epoch.
  void disable(const std::string& user);
  void enable(const std::string& user);
  std::size_t count(const std::string& user) const;

 private:
  struct Entry {
    const Connection* id;
    std::weak_ptr<Session> session;
  };
  mutable std::mutex mutex_;
  std::uint64_t epoch_ = 0;
  std::map<std::string, std::vector<Entry>, std::less<>> by_user_;
  std::map<std::string, std::uint64_t, std::less<>> closed_at_;  // user -> epoch of last close
  std::map<std::string, int, std::less<>> disabled_;             // user -> nesting count
};

}  // namespace ops::core
