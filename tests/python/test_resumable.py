"""Client.upload_resumable and error details (OPS/1 §9, §11) against the real opserver:
a pipelined upload in small chunks, a resume from the server's offset after an upload was
left part-way, the refusals, and the details of a conflict."""

from __future__ import annotations

import hashlib
import os
import tempfile
import unittest

import opsclient
from server_fixture import ServerProcess, default_operations

RESUMABLE_OPS = ("upload_open", "upload_append", "upload_status", "upload_commit",
                 "upload_abort")


class ResumableTest(unittest.TestCase):
    server: ServerProcess
    key: str

    @classmethod
    def setUpClass(cls) -> None:
        ops = default_operations()
        for name in RESUMABLE_OPS:
            ops[name] = {"allow": ["*"]}
        cls.server = ServerProcess(ops)
        with opsclient.Client("127.0.0.1", cls.server.port, "admin", cls.server.admin_key,
                              timeout=30) as admin:
            cls.key = admin.register("paula")["key"]

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def paula(self) -> opsclient.Client:
        return opsclient.Client("127.0.0.1", self.server.port, "paula", self.key, timeout=30)

    def local_file(self, data: bytes) -> str:
        fd, path = tempfile.mkstemp(prefix="opsresumable-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self.addCleanup(os.unlink, path)
        return path

    def test_upload_resumable_round_trip(self) -> None:
        data = os.urandom(3 * 1024 * 1024 + 11)
        local = self.local_file(data)
        seen = []
        with self.paula() as c:
            result = c.upload_resumable(local, "r/one.bin", chunk=256 * 1024,
                                        progress=lambda done, total: seen.append(done))
            self.assertEqual(result["size"], len(data))
            self.assertEqual(result["sha256"], hashlib.sha256(data).hexdigest())
            self.assertEqual(c.download("r/one.bin").payload, data)
            self.assertEqual(seen[-1], len(data))
            # Nothing is left open.
            with self.assertRaises(opsclient.NotFound):
                c.call("upload_status", {"path": "r/one.bin"})
            # overwrite is passed on to the publish.
            with self.assertRaises(opsclient.AlreadyExists):
                c.upload_resumable(local, "r/one.bin")
            c.upload_resumable(local, "r/one.bin", overwrite=True)

    def test_resume_continues_from_the_servers_offset(self) -> None:
        data = os.urandom(2 * 1024 * 1024 + 5)
        local = self.local_file(data)
        with self.paula() as c:
            opened = c.call("upload_open", {"path": "r/two.bin", "size": len(data),
                                            "sha256": hashlib.sha256(data).hexdigest()})
            c.call("upload_append", {"upload": opened["upload"], "offset": 0},
                   data[:700000])
        with self.paula() as c:
            result = c.upload_resumable(local, "r/two.bin", chunk=300000, resume=True)
            self.assertEqual(result["size"], len(data))
            self.assertEqual(c.download("r/two.bin").payload, data)

    def test_resume_refusals(self) -> None:
        data = os.urandom(1000)
        local = self.local_file(data)
        with self.paula() as c:
            with self.assertRaises(opsclient.NotFound):
                c.upload_resumable(local, "r/none.bin", resume=True)
            c.call("upload_open", {"path": "r/three.bin", "size": 999})
            with self.assertRaises(ValueError):
                c.upload_resumable(local, "r/three.bin", resume=True)
            with self.assertRaises(ValueError):
                c.upload_resumable(local, "r/three.bin", chunk=0)
            # Opened for another file (its sha256): the commit says so, and the id is kept.
            c.call("upload_open", {"path": "r/four.bin",
                                   "sha256": hashlib.sha256(b"other").hexdigest()})
            with self.assertRaises(opsclient.InvalidArgs) as caught:
                c.upload_resumable(local, "r/four.bin", resume=True)
            upload_id = caught.exception.upload  # type: ignore[attr-defined]
            self.assertEqual(c.call("upload_status", {"upload": upload_id})["offset"], 1000)

    def test_conflict_carries_details(self) -> None:
        with self.paula() as c:
            upload_id = c.call("upload_open", {"path": "r/five.bin"})["upload"]
            c.call("upload_append", {"upload": upload_id, "offset": 0}, b"12345")
            with self.assertRaises(opsclient.Conflict) as caught:
                c.call("upload_append", {"upload": upload_id, "offset": 2}, b"xyz")
            self.assertEqual(caught.exception.details, {"offset": 5})
            # Errors without details have an empty dict, and the connection stays usable.
            with self.assertRaises(opsclient.NotFound) as missing:
                c.call("upload_status", {"upload": "0" * 32})
            self.assertEqual(missing.exception.details, {})
            c.call("upload_abort", {"upload": upload_id})


if __name__ == "__main__":
    unittest.main()
