"""The Python client's user and quota methods (§10) against the real opserver: usage,
set_quota, register with quotas, rekey (own and another's) and unregister."""

from __future__ import annotations

import unittest

import opsclient
from server_fixture import ServerProcess, default_operations


def user_operations() -> dict:
    ops = default_operations()
    ops.update({
        "usage": {"allow": ["*"]},
        "rekey": {"allow": ["*"]},
        "set_quota": {"allow": ["admin"]},
        "unregister": {"allow": ["admin"]},
    })
    return ops


class UsersTest(unittest.TestCase):
    server: ServerProcess

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = ServerProcess(user_operations())

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def connect(self, user: str, key: str) -> opsclient.Client:
        return opsclient.Client("127.0.0.1", self.server.port, user, key, timeout=30)

    def admin(self) -> opsclient.Client:
        return self.connect("admin", self.server.admin_key)

    def test_quota_usage_and_set_quota(self) -> None:
        with self.admin() as admin:
            key = admin.register("quser", quota_bytes=10, quota_files=None)["key"]
            with self.connect("quser", key) as c:
                c.upload("a", b"0123456789")
                self.assertEqual(dict(c.usage()), {
                    "user": "quser", "bytes": 10, "files": 1, "reserved_bytes": 0,
                    "quota_bytes": 10, "quota_files": None})
                with self.assertRaises(opsclient.QuotaExceeded):
                    c.upload("b", b"x")
                r = admin.set_quota("quser", bytes=None, files=1)
                self.assertEqual(dict(r), {"user": "quser", "quota_bytes": None,
                                           "quota_files": 1})
                self.assertEqual(admin.set_quota("quser")["quota_files"], 1)  # unchanged
                with self.assertRaises(opsclient.QuotaExceeded):
                    c.upload("b", b"x")  # the file quota now
            with self.assertRaises(opsclient.NotFound):
                admin.set_quota("nobody", bytes=1)

    def test_rekey_and_unregister(self) -> None:
        with self.admin() as admin:
            key = admin.register("ruser")["key"]
            with self.connect("ruser", key) as c:
                new_key = c.rekey()["key"]
                self.assertRegex(new_key, "^[0-9a-f]{64}$")
                c.usage()  # this connection stays
                with self.assertRaises(opsclient.Forbidden):
                    c.rekey("admin")
            with self.assertRaises(opsclient.AuthFailed):
                self.connect("ruser", key).close()
            self.assertEqual(admin.rekey("ruser", "chosen")["key"], "chosen")
            self.connect("ruser", "chosen").close()
            self.assertEqual(dict(admin.unregister("ruser")), {"user": "ruser"})
            with self.assertRaises(opsclient.AuthFailed):
                self.connect("ruser", "chosen").close()
            with self.assertRaises(opsclient.Forbidden):
                admin.unregister("admin")
            with self.assertRaises(opsclient.NotFound):
                admin.unregister("ruser")


if __name__ == "__main__":
    unittest.main()
