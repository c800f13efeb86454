// UserSessions: a login that checked its key before a close_user (rekey, unregister) is
// refused; a disabled user (being unregistered) is refused whatever the epoch; close_user
// spares the connection it is told to and counts only live sessions.
#include "net/user_sessions.hpp"

#include <gtest/gtest.h>

namespace ops::core {
namespace {

const Connection* conn(int n) {
  return reinterpret_cast<const Connection*>(static_cast<std::uintptr_t>(0x1000 + n));
}

TEST(UserSessions, ALoginThatCheckedTheKeyBeforeACloseIsRefused) {
  UserSessions s;
  std::uint64_t before = s.epoch();
  EXPECT_EQ(s.close_user("alice", nullptr), 0u);  // a rekey while alice was logging in
  EXPECT_FALSE(s.add("alice", conn(1), {}, before));
  EXPECT_TRUE(s.add("bob", conn(2), {}, before));       // other users are not affected
  EXPECT_TRUE(s.add("alice", conn(3), {}, s.epoch()));  // a login with the new key
  EXPECT_EQ(s.count("alice"), 1u);
  s.remove("alice", conn(3));
  EXPECT_EQ(s.count("alice"), 0u);
}

TEST(UserSessions, ADisabledUserIsRefusedUntilEnabled) {
  UserSessions s;
  s.disable("alice");
  EXPECT_FALSE(s.add("alice", conn(1), {}, s.epoch()));
  s.enable("alice");
  EXPECT_TRUE(s.add("alice", conn(1), {}, s.epoch()));
}

TEST(UserSessions, CloseUserClosesOnlyLiveSessionsAndSparesTheCaller) {
  UserSessions s;
  // Entries whose session is gone (expired weak_ptr) are not counted as closed.
  EXPECT_TRUE(s.add("alice", conn(1), {}, s.epoch()));
  EXPECT_TRUE(s.add("alice", conn(2), {}, s.epoch()));
  EXPECT_EQ(s.close_user("alice", conn(1)), 0u);
  EXPECT_EQ(s.count("alice"), 2u);  // entries leave when their sessions end
}

}  // namespace
}  // namespace ops::core
