// The ownership and mode rule for plugin_dir and every .so (case 105,
// core/plugin_host/plugin_loader.hpp), fed owners and modes no test could chown to
// without root; tests/integration/startup_test.cpp runs it through the server.
#include <gtest/gtest.h>
#include <pwd.h>
#include <unistd.h>

#include <optional>
#include <string>

#include "plugin_host/plugin_loader.hpp"

namespace ops::core {
namespace {

constexpr uid_t kServer = 1000;

struct stat stat_of(uid_t uid, gid_t gid, mode_t mode) {
  struct stat st {};
  st.st_uid = uid;
  st.st_gid = gid;
  st.st_mode = mode;
  return st;
}

std::string problem(const struct stat& st, bool acl = false, bool group_trusted = false) {
  return plugin_trust_problem(st, kServer, acl, [&](gid_t) { return group_trusted; });
}

TEST(PluginTrust, TheOwnerIsRootOrTheServersUser) {
  EXPECT_EQ(problem(stat_of(kServer, 1000, S_IFDIR | 0755)), "");
  EXPECT_EQ(problem(stat_of(0, 0, S_IFREG | 0644)), "");
  EXPECT_EQ(problem(stat_of(1001, 1000, S_IFREG | 0755)),
            "owned by uid 1001, not by root or the server's user (uid 1000)");
  // Even a read-only file: its owner can chmod it and write.
  EXPECT_NE(problem(stat_of(1001, 1000, S_IFREG | 0444)), "");
}

TEST(PluginTrust, WritableByOthersIsRefusedStickyOrNot) {
  EXPECT_EQ(problem(stat_of(kServer, 1000, S_IFDIR | 0777)), "writable by others (mode 0777)");
  EXPECT_EQ(problem(stat_of(0, 0, S_IFDIR | 01777)), "writable by others (mode 1777)");
  EXPECT_EQ(problem(stat_of(kServer, 1000, S_IFREG | 0602)), "writable by others (mode 0602)");
  // Only the write bit matters.
  EXPECT_EQ(problem(stat_of(kServer, 1000, S_IFREG | 0755)), "");
}

TEST(PluginTrust, GroupWriteOnlyForAGroupOfRootAndTheServer) {
  gid_t asked = 0;
  auto trusted_if_50 = [&](gid_t gid) {
    asked = gid;
    return gid == 50;
  };
  EXPECT_EQ(
      plugin_trust_problem(stat_of(kServer, 50, S_IFDIR | 0775), kServer, false, trusted_if_50),
      "");
  EXPECT_EQ(asked, 50u);
  EXPECT_EQ(
      plugin_trust_problem(stat_of(kServer, 100, S_IFREG | 0664), kServer, false, trusted_if_50),
      "writable by its group (gid 100), which has members other than root and the "
      "server's user (mode 0664)");
}

TEST(PluginTrust, TheGroupIsOnlyLookedUpForGroupWrite) {
  bool asked = false;
  auto ask = [&](gid_t) {
    asked = true;
    return false;
  };
  EXPECT_EQ(plugin_trust_problem(stat_of(kServer, 100, S_IFDIR | 0755), kServer, false, ask), "");
  EXPECT_FALSE(asked);
}

TEST(PluginTrust, GroupWriteUnderAnExtendedAclIsRefused) {
  // With an ACL the group bits are its mask: some named user or group may write.
  EXPECT_EQ(problem(stat_of(kServer, 50, S_IFDIR | 0775), true, true),
            "writable through a POSIX ACL entry (mode 0775, the group bits are the ACL mask)");
  // A mask without write lets no named entry write.
  EXPECT_EQ(problem(stat_of(kServer, 50, S_IFDIR | 0755), true, true), "");
}

TEST(PluginTrust, AGroupWithAStrangerInItIsNotTrusted) {
  EXPECT_FALSE(group_members_are_trusted(static_cast<gid_t>(4000000000u), ::geteuid()));
  std::optional<passwd> stranger;
  ::setpwent();
  while (passwd* pw = ::getpwent()) {
    if (pw->pw_uid != 0 && pw->pw_uid != ::geteuid()) {
      stranger = *pw;
      break;
    }
  }
  ::endpwent();
  if (!stranger) GTEST_SKIP() << "no account other than root and us";
  // The stranger's login group counts the stranger as a member.
  EXPECT_FALSE(group_members_are_trusted(stranger->pw_gid, ::geteuid()));
}

}  // namespace
}  // namespace ops::core
