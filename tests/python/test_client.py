"""The Python client against the real opserver (started by server_fixture): every
standard operation, payloads from bytes, files and pipes, pipelining, and one test per
error class it can provoke."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import unittest

import opsclient
from server_fixture import ServerProcess, default_operations


class ClientTest(unittest.TestCase):
    server: ServerProcess
    key: str

    @classmethod
    def setUpClass(cls) -> None:
        ops = default_operations()
        ops["upload"]["max_payload"] = 64 << 20
        cls.server = ServerProcess(ops)
        with cls.admin() as admin:
            cls.key = admin.register("alice")["key"]

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    @classmethod
    def admin(cls) -> opsclient.Client:
        return opsclient.Client("127.0.0.1", cls.server.port, "admin", cls.server.admin_key,
                                timeout=30)

    def alice(self) -> opsclient.Client:
        return opsclient.Client("127.0.0.1", self.server.port, "alice", self.key, timeout=30)

    # --- the standard operations ---

    def test_describe(self) -> None:
        with self.alice() as c:
            self.assertTrue(c.server_version.startswith("opserver/"))
            names = {op["name"] for op in c.describe()}
            self.assertTrue({"upload", "download", "list"} <= names)
            self.assertNotIn("register", names)  # §7: not listed for who may not call it
        with self.admin() as c:
            self.assertIn("register", {op["name"] for op in c.describe()})

    def test_upload_download_bytes(self) -> None:
        with self.alice() as c:
            r = c.upload("bytes/a.txt", b"hello")
            self.assertEqual(r["size"], 5)
            self.assertEqual(r["sha256"], hashlib.sha256(b"hello").hexdigest())
            d = c.download("bytes/a.txt")
            self.assertEqual(d.payload, b"hello")
            self.assertEqual(d["length"], 5)
            part = c.download("bytes/a.txt", offset=1, length=3)
            self.assertEqual(part.payload, b"ell")

    def test_call_with_file_objects_and_progress(self) -> None:
        data = os.urandom(3 * opsclient.CHUNK + 123)
        seen = []
        with tempfile.TemporaryFile() as src, tempfile.TemporaryFile() as dst, self.alice() as c:
            src.write(data)
            src.seek(0)
            r = c.call("upload", {"path": "files/blob"}, payload=src,
                       progress=lambda done, total: seen.append((done, total)))
            self.assertEqual(r["size"], len(data))
            self.assertEqual(seen[-1], (len(data), len(data)))
            r = c.call("download", {"path": "files/blob"}, out=dst)
            self.assertIsNone(r.payload)
            dst.seek(0)
            self.assertEqual(dst.read(), data)

    def test_payload_from_a_pipe_is_spooled(self) -> None:
        data = os.urandom(200_000)
        read_fd, write_fd = os.pipe()

        def feed() -> None:
            with os.fdopen(write_fd, "wb") as w:
                w.write(data)
        feeder = threading.Thread(target=feed)
        feeder.start()
        with os.fdopen(read_fd, "rb") as pipe, self.alice() as c:
            r = c.call("upload", {"path": "pipe.bin",
                                  "sha256": hashlib.sha256(data).hexdigest()}, payload=pipe)
        feeder.join()
        self.assertEqual(r["size"], len(data))

    def test_non_seekable_stream_object(self) -> None:
        class Stream(io.RawIOBase):
            def __init__(self, data: bytes) -> None:
                self.buf = io.BytesIO(data)

            def readable(self) -> bool:
                return True

            def readinto(self, b) -> int:  # type: ignore[override]
                chunk = self.buf.read(min(len(b), 1000))
                b[:len(chunk)] = chunk
                return len(chunk)
        with self.alice() as c:
            r = c.call("upload", {"path": "stream.bin"}, payload=Stream(b"x" * 5000))
            self.assertEqual(r["size"], 5000)

    def test_large_transfer_sha256(self) -> None:
        size = 20 << 20
        with tempfile.TemporaryFile() as src, tempfile.TemporaryFile() as dst, self.alice() as c:
            digest = hashlib.sha256()
            for _ in range(size // opsclient.CHUNK):
                chunk = os.urandom(opsclient.CHUNK)
                digest.update(chunk)
                src.write(chunk)
            src.seek(0)
            r = c.upload("large.bin", src)
            self.assertEqual(r["sha256"], digest.hexdigest())
            c.download("large.bin", dst)
            dst.seek(0)
            back = hashlib.sha256()
            for chunk in iter(lambda: dst.read(1 << 20), b""):
                back.update(chunk)
            self.assertEqual(back.hexdigest(), digest.hexdigest())

    def test_list(self) -> None:
        with self.alice() as c:
            c.upload("tree/x/y.txt", b"y", overwrite=True)
            flat = c.list("tree")
            self.assertEqual([(e["name"], e["type"]) for e in flat["entries"]], [("x", "dir")])
            deep = c.list("tree", recursive=True)
            self.assertIn("x/y.txt", [e["name"] for e in deep["entries"]])

    def test_register_and_login_with_the_new_key(self) -> None:
        with self.admin() as admin:
            r = admin.register("carol")
        self.assertRegex(r["key"], r"^[0-9a-f]{64}$")
        with opsclient.Client("127.0.0.1", self.server.port, "carol", r["key"]) as c:
            self.assertEqual(c.list()["entries"], [])

    def test_pipelining(self) -> None:
        with self.alice() as c:
            ids = [c.send("upload", {"path": f"pipelined/{i}", "overwrite": True},
                          payload=str(i).encode()) for i in range(10)]
            ids.append(c.send("download", {"path": "pipelined/7"}))
            ids.append(c.send("download", {"path": "pipelined/missing"}))
            ids.append(c.send("list", {"path": "pipelined"}))
            answers = []
            for _ in ids[:-2]:
                answers.append(c.recv())
            self.assertEqual([a.id for a in answers], ids[:-2])
            self.assertEqual(answers[-1].payload, b"7")
            with self.assertRaises(opsclient.NotFound) as caught:
                c.recv()
            self.assertEqual(caught.exception.id, ids[-2])
            listing = c.recv()  # the connection survives a request error
            self.assertEqual(len(listing.result["entries"]), 10)

    # --- the file operations (§10) and paging ---

    def test_mkdir_stat_move_remove(self) -> None:
        with self.alice() as c:
            self.assertTrue(c.mkdir("fops/a/b")["created"])
            self.assertFalse(c.mkdir("fops/a/b")["created"])
            with self.assertRaises(opsclient.NotFound):
                c.mkdir("fops/x/y", parents=False)
            c.upload("fops/a/f", b"data", overwrite=True)
            st = c.stat("fops/a/f", sha256=True)
            self.assertEqual((st["type"], st["size"]), ("file", 4))
            self.assertEqual(st["sha256"], hashlib.sha256(b"data").hexdigest())
            listed = {e["name"]: e for e in c.list("fops/a")["entries"]}
            self.assertEqual(listed["f"]["mtime"], st["mtime"])
            self.assertNotIn("sha256", c.stat("fops/a", sha256=True))
            self.assertEqual(c.stat()["type"], "dir")

            self.assertEqual(c.move("fops/a/f", "fops/moved/g"),
                             {"from": "fops/a/f", "to": "fops/moved/g"})
            self.assertEqual(c.download("fops/moved/g").payload, b"data")
            c.upload("fops/other", b"other", overwrite=True)
            with self.assertRaises(opsclient.AlreadyExists):
                c.move("fops/other", "fops/moved/g")
            c.move("fops/other", "fops/moved/g", overwrite=True)
            self.assertEqual(c.download("fops/moved/g").payload, b"other")
            with self.assertRaises(opsclient.InvalidArgs):
                c.move("fops/a", "fops/a/b/c")

            with self.assertRaises(opsclient.Conflict):
                c.remove("fops")
            self.assertEqual(c.remove("fops", recursive=True)["removed"], 5)
            with self.assertRaises(opsclient.NotFound):
                c.stat("fops")
            with self.assertRaises(opsclient.InvalidArgs):
                c.remove("")

    def test_list_paging(self) -> None:
        with self.alice() as c:
            names = sorted(f"n{i:03d}" for i in range(37))
            for name in names:
                c.upload(f"paged/{name}", b"", overwrite=True)
            first = c.list("paged", limit=10)
            self.assertEqual([e["name"] for e in first["entries"]], names[:10])
            self.assertTrue(first["truncated"])
            self.assertEqual(first["next"], names[9])
            second = c.list("paged", limit=10, after=first["next"])
            self.assertEqual([e["name"] for e in second["entries"]], names[10:20])
            self.assertEqual([e["name"] for e in c.list_all("paged", page_size=7)], names)
            deep = [e["name"] for e in c.list_all("", recursive=True, page_size=5)]
            self.assertEqual(deep, sorted(deep, key=lambda n: n.encode()))
            self.assertTrue({"paged", "paged/n000", "paged/n036"} <= set(deep))

    def test_download_sha256(self) -> None:
        data = os.urandom(100000)
        with self.alice() as c:
            c.upload("sums/file", data, overwrite=True)
            whole = c.download("sums/file", sha256=True)
            self.assertEqual(whole["sha256"], hashlib.sha256(data).hexdigest())
            part = c.download("sums/file", offset=10, length=5, sha256=True)
            self.assertEqual(part.payload, data[10:15])
            self.assertEqual(part["sha256"], hashlib.sha256(data).hexdigest())
            self.assertNotIn("sha256", c.download("sums/file"))

    # --- errors, one per class ---

    def test_errors(self) -> None:
        with self.alice() as c:
            c.upload("err/file", b"f", overwrite=True)
            cases = [
                (opsclient.NotFound, "download", {"path": "err/nope"}, None),
                (opsclient.AlreadyExists, "upload", {"path": "err/file"}, b"x"),
                (opsclient.Conflict, "upload", {"path": "err/file/below"}, b"x"),
                (opsclient.InvalidArgs, "list", {"recursive": "yes"}, None),
                (opsclient.InvalidArgs, "download", {"path": "../etc/passwd"}, None),
                (opsclient.UnknownOperation, "no_such_op", None, None),
                (opsclient.Forbidden, "register", {"user": "mallory"}, None),
                (opsclient.ChecksumMismatch, "upload",
                 {"path": "err/sum", "sha256": "0" * 64}, b"data"),
            ]
            for cls, op, args, payload in cases:
                with self.subTest(op=op, args=args):
                    with self.assertRaises(cls) as caught:
                        c.call(op, args, payload)
                    self.assertTrue(caught.exception.message)
                    self.assertFalse(c.broken)  # all of these leave the connection usable
            self.assertEqual(c.list("err")["entries"][0]["name"], "file")

    def test_payload_too_large(self) -> None:
        with self.alice() as c:
            with self.assertRaises(opsclient.PayloadTooLarge):
                c.call("upload", {"path": "too/big"}, payload_size=(64 << 20) + 1,
                       payload=io.BytesIO(b"\0" * ((64 << 20) + 1)))

    def test_wrong_key(self) -> None:
        with self.assertRaises(opsclient.AuthFailed):
            opsclient.Client("127.0.0.1", self.server.port, "alice", "wrong")
        with self.assertRaises(opsclient.AuthFailed):
            opsclient.Client("127.0.0.1", self.server.port, "nobody", self.key)

    def test_bad_arguments_are_refused_before_sending(self) -> None:
        with self.alice() as c:
            with self.assertRaises(TypeError):
                c.call("list", ["not", "an", "object"])  # type: ignore[arg-type]
            with self.assertRaises(ValueError):
                c.call("list", {"path": "\ud800"})
            with self.assertRaises(TypeError):
                c.call("upload", {"path": "t"}, payload="text")  # type: ignore[arg-type]
            self.assertFalse(c.broken)
            c.list()

    def test_closed_client_raises_connection_lost(self) -> None:
        c = self.alice()
        c.close()
        with self.assertRaises(opsclient.ConnectionLost):
            c.list()


if __name__ == "__main__":
    unittest.main()
