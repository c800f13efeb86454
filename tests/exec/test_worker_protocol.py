"""Exec plugins against the worker protocol (docs/PLUGINS.md, "The worker protocol"), the server side played by
worker_server.py: examples/exec/wordcount.py, examples/exec/hello.sh, and the helper module
sdk/python/opserver_plugin.py through tests/exec/probe_plugin.py.

Each test spawns the real program with a socketpair as its stdin and stdout, passes real
directory fds with each call, and checks what it answers and what it did on disk."""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SDK = os.path.join(ROOT, "sdk", "python")
EXAMPLES = os.path.join(ROOT, "examples", "exec")
sys.path.insert(0, HERE)
sys.path.insert(0, SDK)

import opserver_plugin  # noqa: E402
from worker_server import WorkerServer  # noqa: E402

# The interpreter that runs the plugins: Debian's /usr/bin/python3 (what the ops.json entries
# name) when CMake found it, else the one running the tests.
PYTHON = os.environ.get("OPS_EXEC_PYTHON") or sys.executable
BASH = shutil.which("bash") or "/bin/bash"


def env_with(pythonpath: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class Dirs:
    """A user directory, a scratch directory and an "outside" directory next to them,
    with O_DIRECTORY fds for the first two."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="ops-exec-")
        self.user = os.path.join(self.base, "alice")
        self.scratch = os.path.join(self.base, "scratch")
        self.outside = os.path.join(self.base, "outside")
        for d in (self.user, self.scratch, self.outside):
            os.mkdir(d)
        self.user_fd = os.open(self.user, os.O_RDONLY | os.O_DIRECTORY)
        self.scratch_fd = os.open(self.scratch, os.O_RDONLY | os.O_DIRECTORY)

    def close(self):
        os.close(self.user_fd)
        os.close(self.scratch_fd)
        shutil.rmtree(self.base)

    def tree(self, top: str) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(top):
            rel = os.path.relpath(dirpath, top)
            out += [os.path.normpath(os.path.join(rel, n)) for n in dirnames + filenames]
        return sorted(out)


class WorkerTestCase(unittest.TestCase):
    argv: list[str] = []
    pythonpath: str | None = SDK
    operation = "op"

    def setUp(self):
        self.dirs = Dirs()
        self.addCleanup(self.dirs.close)
        self.server = WorkerServer(self.argv, cwd=EXAMPLES, env=env_with(self.pythonpath))
        self.addCleanup(self._stop)
        self.ready = self.server.start(self.operation, {"color": "blue"})

    def _stop(self):
        if self.server.proc.poll() is None:
            self.server.close()
        self.server.stderr.close()

    def call(self, **kw):
        return self.server.call(self.dirs.user_fd, self.dirs.scratch_fd, **kw)


def text_payload(size: int, seed: int = 7) -> bytes:
    """Words of 1-12 letters separated by runs of every ASCII whitespace byte."""
    rng = random.Random(seed)
    parts, total = [], 0
    seps = [b" ", b"\n", b"\t", b"  ", b"\r\n", b"\x0b", b"\x0c", b" \n\n"]
    while total < size:
        word = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz\xc3\xa9") for _ in range(rng.randint(1, 12)))
        sep = rng.choice(seps)
        parts += [word, sep]
        total += len(word) + len(sep)
    return b"".join(parts)[:size]


def expected_counts(data: bytes) -> dict:
    return {"bytes": len(data), "lines": data.count(b"\n"), "words": len(data.split())}


# ---------------------------------------------------------------------------------------

class WordcountTest(WorkerTestCase):
    argv = [PYTHON, "wordcount.py"]
    pythonpath = None  # the example finds sdk/python from the source tree itself
    operation = "wordcount"

    def test_ready_describes_the_operation(self):
        self.assertEqual(self.ready["payload"], "in")
        self.assertEqual(self.ready["version"], "1.0.0")
        self.assertIn("save", self.ready["args_schema"]["properties"])

    def test_counts_a_multi_mib_payload_fed_in_chunks(self):
        data = text_payload(5 * 1024 * 1024 + 12345)
        # 65537: an odd size, so that words and "\r\n" straddle chunk boundaries.
        out = self.call(payload=data, chunk=65537)
        self.assertEqual(out.done, 0, self.server.err())
        self.assertEqual(out.result, expected_counts(data))
        reads = [r for r in out.requests if r["host"] == "read_payload"]
        self.assertGreater(len(reads), len(data) // 65537)  # streamed, not one read
        self.assertTrue(all(0 < r["cap"] <= 1 << 20 for r in reads))
        self.assertEqual(out.payload_served, len(data))

    def test_word_boundaries_across_chunks(self):
        for data in (b"ab cd", b"abcdef", b" a b ", b"a\nb\n", b"\n\n", b"x"):
            for chunk in (1, 2, 3):
                out = self.call(payload=data, chunk=chunk)
                self.assertEqual(out.result, expected_counts(data), (data, chunk))

    def test_empty_payload(self):
        out = self.call(payload=b"")
        self.assertEqual(out.done, 0)
        self.assertEqual(out.result, {"bytes": 0, "lines": 0, "words": 0})
        self.assertEqual([r["host"] for r in out.requests], ["send_result"])

    def test_save_stores_the_payload_inside_the_user_dir(self):
        os.mkdir(os.path.join(self.dirs.user, "copies"))
        data = text_payload(3 * 1024 * 1024 + 1, seed=3)
        out = self.call(args={"save": "copies/notes.txt"}, payload=data, chunk=100003)
        self.assertEqual(out.done, 0, self.server.err())
        self.assertEqual(out.result, {**expected_counts(data), "saved": "copies/notes.txt"})
        with open(os.path.join(self.dirs.user, "copies", "notes.txt"), "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(os.listdir(self.dirs.scratch), [])  # the temporary file is gone
        self.assertEqual(self.dirs.tree(self.dirs.outside), [])
        hosts = [r["host"] for r in out.requests]
        self.assertLess(hosts.index("quota_reserve"), hosts.index("read_payload"))
        reserve = out.requests[hosts.index("quota_reserve")]
        self.assertEqual((reserve["reserve_bytes"], reserve["reserve_files"]), (len(data), 1))
        commit = out.requests[hosts.index("quota_commit")]
        self.assertEqual((commit["bytes_delta"], commit["files_delta"]), (len(data), 1))

    def test_save_replaces_a_file_and_commits_the_difference(self):
        with open(os.path.join(self.dirs.user, "f.txt"), "wb") as f:
            f.write(b"x" * 1000)
        out = self.call(args={"save": "f.txt"}, payload=b"one two\n")
        self.assertEqual(out.done, 0, self.server.err())
        with open(os.path.join(self.dirs.user, "f.txt"), "rb") as f:
            self.assertEqual(f.read(), b"one two\n")
        commit = [r for r in out.requests if r["host"] == "quota_commit"][0]
        self.assertEqual((commit["bytes_delta"], commit["files_delta"]), (8 - 1000, 0))

    def assert_refused(self, save, code, data=b"secret words\n"):
        before_user = self.dirs.tree(self.dirs.user)
        out = self.call(args={"save": save}, payload=data)
        self.assertEqual(out.done, opserver_plugin.CODES[code], (save, out.fail))
        self.assertEqual(out.fail["host"], "fail")
        self.assertEqual(out.fail["code"], opserver_plugin.CODES[code])
        self.assertIsNone(out.result)
        self.assertEqual(out.payload_served, 0, "refused before reading the payload")
        self.assertEqual(self.dirs.tree(self.dirs.outside), [])
        self.assertEqual(self.dirs.tree(self.dirs.user), before_user)
        self.assertEqual(os.listdir(self.dirs.scratch), [])
        self.assertNotIn(self.dirs.base, out.fail["message"])  # never a host path
        return out

    def test_save_refuses_dot_dot(self):
        out = self.assert_refused("../outside/x.txt", "invalid_args")
        self.assertIn("'..'", out.fail["message"])
        self.assert_refused("a/../../outside/x.txt", "invalid_args")
        self.assert_refused("./x.txt", "invalid_args")
        self.assertFalse(os.path.exists(os.path.join(self.dirs.base, "x.txt")))

    def test_save_refuses_an_absolute_path(self):
        self.assert_refused(os.path.join(self.dirs.outside, "abs.txt"), "invalid_args")
        self.assert_refused("/etc/passwd", "invalid_args")

    def test_save_refuses_a_path_through_a_planted_symlink(self):
        os.symlink(self.dirs.outside, os.path.join(self.dirs.user, "link"))
        out = self.assert_refused("link/x.txt", "forbidden")
        self.assertIn("link/x.txt", out.fail["message"])
        os.mkdir(os.path.join(self.dirs.user, "d"))
        os.symlink("../../outside", os.path.join(self.dirs.user, "d", "up"))
        self.assert_refused("d/up/x.txt", "forbidden")

    def test_save_refuses_a_symlink_as_the_file_itself(self):
        target = os.path.join(self.dirs.outside, "target.txt")
        os.symlink(target, os.path.join(self.dirs.user, "evil.txt"))
        self.assert_refused("evil.txt", "forbidden")
        self.assertTrue(os.path.islink(os.path.join(self.dirs.user, "evil.txt")))
        self.assertFalse(os.path.lexists(target))

    def test_save_refuses_missing_parents_and_directories(self):
        self.assert_refused("no/such/dir/x.txt", "not_found")
        os.mkdir(os.path.join(self.dirs.user, "adir"))
        self.assert_refused("adir", "conflict")
        with open(os.path.join(self.dirs.user, "afile"), "wb"):
            pass
        self.assert_refused("afile/x.txt", "conflict")

    def test_save_over_quota_writes_nothing(self):
        self.server.reserve_code = opserver_plugin.CODES["quota_exceeded"]
        self.assert_refused("big.txt", "quota_exceeded")

    def test_a_payload_lost_midway_leaves_nothing_behind(self):
        with open(os.path.join(self.dirs.user, "keep.txt"), "wb") as f:
            f.write(b"old")
        out = self.call(args={"save": "keep.txt"}, payload=b"w " * 300000, chunk=65536,
                        payload_lost_at=200000)
        self.assertEqual(out.done, opserver_plugin.CODES["unavailable"])
        self.assertIsNone(out.result)
        with open(os.path.join(self.dirs.user, "keep.txt"), "rb") as f:
            self.assertEqual(f.read(), b"old")
        self.assertEqual(os.listdir(self.dirs.scratch), [])
        hosts = [r["host"] for r in out.requests]
        self.assertIn("quota_release", hosts)
        self.assertNotIn("quota_commit", hosts)
        out = self.call(payload=b"still serving", call_id=2)
        self.assertEqual(out.result["words"], 2)

    def test_the_call_fds_are_closed_after_each_call(self):
        fd_dir = f"/proc/{self.server.proc.pid}/fd"
        out = self.call(payload=b"a b c")
        self.assertEqual(out.done, 0)
        before = len(os.listdir(fd_dir))
        for i in range(5):
            self.call(payload=b"a b c", call_id=i + 2)
            self.call(args={"save": "../x"}, payload=b"a", call_id=i + 100)
        self.assertEqual(len(os.listdir(fd_dir)), before)

    def test_exits_0_at_eof(self):
        self.call(payload=b"hello world")
        self.assertEqual(self.server.close(), 0)


# ---------------------------------------------------------------------------------------

class HelloShellTest(WorkerTestCase):
    argv = [BASH, "hello.sh"]
    operation = "hello"

    def test_ready_schema_allows_only_json_safe_names(self):
        self.assertEqual(self.ready["payload"], "none")
        pattern = self.ready["args_schema"]["properties"]["name"]["pattern"]
        self.assertIsNotNone(re.search(pattern, "Ada Lovelace-2.0_x"))
        for bad in ('a"b', "a\\b", "a\nb", "", "x" * 65, "é"):
            self.assertIsNone(re.search(pattern, bad), bad)
        self.assertFalse(self.ready["args_schema"]["additionalProperties"])

    def test_greets_by_name(self):
        out = self.call(user="alice", args={"name": "Ada Lovelace"})
        self.assertEqual(out.done, 0, self.server.err())
        self.assertEqual(out.result, {"greeting": "hello Ada Lovelace", "user": "alice"})
        self.assertEqual(out.payload_size, 0)

    def test_greets_the_user_without_a_name_and_serves_many_calls(self):
        for i, user in enumerate(["bob", "_x.y-z", "carol"]):
            out = self.call(user=user, call_id=i)
            self.assertEqual(out.result, {"greeting": f"hello {user}", "user": user})
            self.assertEqual(out.done, 0)

    def test_the_call_fds_never_reach_the_script(self):
        # read(2) without room for ancillary data: the kernel closes the passed fds.
        fd_dir = f"/proc/{self.server.proc.pid}/fd"
        before = sorted(os.listdir(fd_dir))
        for i in range(5):
            self.assertEqual(self.call(user="alice", call_id=i).done, 0)
        self.assertEqual(sorted(os.listdir(fd_dir)), before)

    def test_reads_call_lines_with_spaces(self):
        # A server may format its JSON with spaces; the script must not care.
        self.server.sock.sendmsg(
            [b'{"call": {"id": 9, "user": "dave", "args": {"name": "Bo"}, "payload": 0}}\n'])
        msg = self.server.read_line()
        self.assertEqual(msg["result"], {"greeting": "hello Bo", "user": "dave"})
        self.server.send_line('{"ret": 0}')
        self.assertEqual(self.server.read_line(), {"done": 0})

    def test_send_result_failure_ends_the_call_unavailable(self):
        self.server.send_ret = -1
        out = self.call(user="alice", args={"name": "x"})
        self.assertEqual(out.done, "unavailable")

    def test_exits_0_at_eof(self):
        self.call(user="alice")
        self.assertEqual(self.server.close(), 0)

    def test_exits_0_at_eof_before_any_call(self):
        self.assertEqual(self.server.close(), 0)


class HelloShellStartTest(unittest.TestCase):
    def test_refuses_anything_but_init_first(self):
        server = WorkerServer([BASH, "hello.sh"], cwd=EXAMPLES)
        self.addCleanup(server.stderr.close)
        server.send({"call": {"id": 1}})
        self.assertIn("error", server.read_line())
        self.assertEqual(server.close(), 1)


# ---------------------------------------------------------------------------------------

class HelperModuleTest(WorkerTestCase):
    argv = [PYTHON, os.path.join(HERE, "probe_plugin.py")]
    operation = "probe"

    def test_call_fields_and_directory_fds(self):
        out = self.call(user="alice", args={"do": "echo"}, payload=b"12345", call_id=42)
        self.assertEqual(out.done, 0, self.server.err())
        self.assertEqual(out.result["user"], "alice")
        self.assertEqual(out.result["id"], 42)
        self.assertEqual(out.result["operation"], "probe")
        self.assertEqual(out.result["settings"], {"color": "blue"})
        self.assertEqual(out.result["payload_size"], 5)
        self.assertEqual(out.result["dirs_open"], [True, True])
        self.assertEqual(out.result["user_dir_ino"], os.stat(self.dirs.user).st_ino)

    def test_an_exception_is_internal_and_the_next_call_works(self):
        out = self.call(args={"do": "raise"})
        self.assertEqual(out.done, 15)
        self.assertEqual(out.fail["host"], "fail")
        self.assertEqual(out.fail["code"], 15)
        self.assertNotIn("deliberate", out.fail["message"])  # the details stay in the log
        self.assertIn("KeyError: 'deliberate bug'", self.server.err())
        self.assertIn("Traceback", self.server.err())
        out = self.call(args={"do": "echo"}, call_id=2)
        self.assertEqual(out.done, 0)
        self.assertEqual(out.result["id"], 2)

    def test_a_result_that_is_not_a_dict_is_internal(self):
        for do in ("not_a_dict", "nothing"):
            out = self.call(args={"do": do})
            self.assertEqual((out.done, out.fail["code"]), (15, 15), do)
            self.assertIsNone(out.result)
        self.assertIn("not a dict", self.server.err())

    def test_failure_with_details_and_codes_by_name_or_number(self):
        out = self.call(args={"do": "failure"})
        self.assertEqual(out.done, 9)
        self.assertEqual(out.fail, {"host": "fail_details", "code": 9, "message": "it changed",
                                    "details": {"offset": 42}})
        out = self.call(args={"do": "failure_number"})
        self.assertEqual((out.done, out.fail["host"], out.fail["code"]), (9, "fail", 9))
        out = self.call(args={"do": "fail_by_name"})
        self.assertEqual((out.done, out.fail["code"]), (7, 7))
        self.assertEqual(out.fail["message"], "no such file: x")

    def test_print_goes_to_stderr_not_the_protocol(self):
        out = self.call(args={"do": "print"})
        self.assertEqual((out.done, out.result), (0, {"printed": True}))
        self.assertIn("this goes to stderr", self.server.err())

    def test_payload_out_with_write_and_send_file(self):
        out = self.call(args={"do": "payload_out"})
        self.assertEqual(out.done, 0, self.server.err())
        data = bytes(range(256)) * (6 * 1024 + 1) + b"from a file\n"
        self.assertEqual(out.payload_size, len(data))
        self.assertEqual(bytes(out.out_payload), data)
        writes = [r for r in out.requests if r["host"] == "write_payload"]
        self.assertEqual(len(writes), 2)  # split at 1 MiB
        self.assertTrue(all(r["bytes"] <= 1 << 20 for r in writes))
        send_file = [r for r in out.requests if r["host"] == "send_file"][0]
        self.assertEqual((send_file["offset"], send_file["len"]), (2, 12))

    def test_every_host_request_has_the_spec_shape(self):
        out = self.call(user="alice", args={"do": "hosts"})
        self.assertEqual(out.done, 0, self.server.err())
        r = out.result
        self.assertEqual(r["reserve"], [0, 1])
        self.assertEqual([r["commit"], r["release"], r["hold"], r["commit_held"]], [0] * 4)
        self.assertEqual(r["release_held"], 7)
        self.assertEqual([r["exists_self"], r["exists_other"]], [True, False])
        self.assertEqual(r["usage_self"]["user"], "alice")
        self.assertIsNone(r["usage_unknown"])
        expected = [
            {"host": "quota_reserve", "reserve_bytes": 100, "reserve_files": 1},
            {"host": "quota_commit", "token": 1, "bytes_delta": 10, "files_delta": 1},
            {"host": "quota_release", "token": 5},
            {"host": "quota_hold", "token": 6, "tag": "up-1"},
            {"host": "quota_commit_held", "tag": "up-1", "bytes_delta": 3, "files_delta": 0},
            {"host": "quota_release_held", "tag": "nope"},
            {"host": "user_exists", "name": "alice"},
            {"host": "user_exists", "name": "zed"},
            {"host": "create_user", "name": "bob", "key": "k1"},
            {"host": "create_user_with_quota", "name": "carol", "key": "k2",
             "quota_bytes": 1000, "quota_files": -1},
            {"host": "remove_user", "name": "bob"},
            {"host": "rekey_user", "name": "carol", "key": "k3"},
            {"host": "set_quota", "name": "carol", "quota_bytes": -3, "quota_files": 5},
            {"host": "get_usage", "name": None},
            {"host": "get_usage", "name": "nobody"},
            {"host": "close_user_connections", "name": "carol", "except_this_connection": False},
            {"host": "usage_adjust", "bytes_delta": -4, "files_delta": -1},
            {"host": "log", "level": 1, "message": "hosts done"},
            {"host": "log", "level": 3, "message": "an error line"},
            {"host": "send_result", "result": r, "payload_size": 0},
        ]
        self.assertEqual(out.requests, expected)

    def test_an_unknown_host_function_gets_ret_minus_1(self):
        out = self.call(args={"do": "unknown_host"})
        self.assertEqual((out.done, out.result), (0, {"ret": -1}))

    def test_eof_exits_0(self):
        self.call(args={"do": "echo"})
        self.assertEqual(self.server.close(), 0)


class HelperStartTest(unittest.TestCase):
    def start(self, first: dict):
        server = WorkerServer([PYTHON, os.path.join(HERE, "probe_plugin.py")],
                              env=env_with(SDK))
        self.addCleanup(server.stderr.close)
        server.send(first)
        return server, server.read_line()

    def test_on_init_can_refuse_to_start(self):
        server, msg = self.start({"init": {"operation": "probe", "settings": {"refuse": 1}}})
        self.assertEqual(msg, {"error": "refused: settings.refuse is set"})
        self.assertEqual(server.close(), 1)

    def test_anything_but_init_first_is_an_error(self):
        server, msg = self.start({"call": {"id": 1}})
        self.assertIn("error", msg)
        self.assertNotEqual(server.close(), 0)


# ---------------------------------------------------------------------------------------

class SafePathTest(unittest.TestCase):
    """opserver_plugin's path rules, directly (the rules of sdk/include/opserver/paths.hpp)."""

    def setUp(self):
        self.dirs = Dirs()
        self.addCleanup(self.dirs.close)
        os.makedirs(os.path.join(self.dirs.user, "a", "b"))
        with open(os.path.join(self.dirs.user, "a", "b", "f.txt"), "w") as f:
            f.write("inside")
        with open(os.path.join(self.dirs.outside, "secret"), "w") as f:
            f.write("outside")
        os.symlink(self.dirs.outside, os.path.join(self.dirs.user, "a", "out"))
        os.symlink(os.path.join(self.dirs.outside, "secret"),
                   os.path.join(self.dirs.user, "a", "s"))
        os.symlink(os.path.join(self.dirs.outside, "new"),
                   os.path.join(self.dirs.user, "dangling"))

    def code(self, path, flags=os.O_RDONLY):
        try:
            fd = opserver_plugin.open_beneath(self.dirs.user_fd, path, flags, 0o600)
        except opserver_plugin.Failure as f:
            self.assertNotIn(self.dirs.base, f.message)
            return f.code
        os.close(fd)
        return 0

    def test_valid_paths_open(self):
        self.assertEqual(self.code("a/b/f.txt"), 0)
        self.assertEqual(self.code("a/b/new.txt", os.O_WRONLY | os.O_CREAT), 0)
        self.assertTrue(os.path.isfile(os.path.join(self.dirs.user, "a", "b", "new.txt")))
        self.assertEqual(self.code("é/x"), opserver_plugin.CODES["not_found"])

    def test_invalid_paths(self):
        bad = ["", "/etc/passwd", "..", "../outside/secret", "a/../../outside/secret", ".",
               "./a", "a/./b", "a//b", "a/b/", "a\0b", "a\nb", "a\x7fb", "x" * 256,
               "a/" * 2049 + "b", "\ud800"]
        for path in bad:
            self.assertEqual(self.code(path), opserver_plugin.CODES["invalid_args"], repr(path))
        with self.assertRaises(opserver_plugin.Failure):
            opserver_plugin.open_beneath(self.dirs.user_fd, b"a", os.O_RDONLY)

    def test_symlinks_are_never_followed(self):
        forbidden = opserver_plugin.CODES["forbidden"]
        self.assertEqual(self.code("a/out/secret"), forbidden)
        self.assertEqual(self.code("a/s"), forbidden)
        self.assertEqual(self.code("a/out"), forbidden)
        self.assertEqual(self.code("dangling", os.O_WRONLY | os.O_CREAT), forbidden)
        self.assertFalse(os.path.lexists(os.path.join(self.dirs.outside, "new")))
        with self.assertRaises(opserver_plugin.Failure) as cm:
            opserver_plugin.open_dir_beneath(self.dirs.user_fd, "a/out/x", create=True)
        self.assertEqual(cm.exception.code, forbidden)
        self.assertEqual(sorted(os.listdir(self.dirs.outside)), ["secret"])

    def test_files_in_the_way_and_missing_components(self):
        self.assertEqual(self.code("a/b/f.txt/x"), opserver_plugin.CODES["conflict"])
        self.assertEqual(self.code("a/nope/x"), opserver_plugin.CODES["not_found"])
        self.assertEqual(self.code("a/b", os.O_WRONLY), opserver_plugin.CODES["conflict"])

    def test_open_dir_and_parent(self):
        fd = opserver_plugin.open_dir_beneath(self.dirs.user_fd, "")
        self.assertEqual(os.fstat(fd).st_ino, os.stat(self.dirs.user).st_ino)
        os.close(fd)
        fd = opserver_plugin.open_dir_beneath(self.dirs.user_fd, "n1/n2", create=True)
        os.close(fd)
        self.assertTrue(os.path.isdir(os.path.join(self.dirs.user, "n1", "n2")))
        fd, leaf = opserver_plugin.open_parent_beneath(self.dirs.user_fd, "a/b/f.txt")
        self.assertEqual(leaf, "f.txt")
        self.assertEqual(os.fstat(fd).st_ino, os.stat(os.path.join(self.dirs.user, "a", "b")).st_ino)
        os.close(fd)

    def test_codes(self):
        self.assertEqual(opserver_plugin.code_number("ok"), 0)
        self.assertEqual(opserver_plugin.code_number("internal"), 15)
        self.assertEqual(opserver_plugin.code_number(12), 12)
        for bad in ("nope", 16, -1, True, None, 1.0):
            with self.assertRaises(ValueError):
                opserver_plugin.code_number(bad)
        self.assertEqual(len(opserver_plugin.CODES), 16)
        self.assertEqual(opserver_plugin.error_from_errno(errno.ELOOP, "p").code, 5)


if __name__ == "__main__":
    unittest.main()
