"""The server side of the worker protocol (docs/PLUGINS.md, "The worker protocol"), played by a test.

Starts an exec plugin with one end of a socketpair as its stdin and stdout, sends `init`,
checks `ready`, then sends calls (with the two directory fds as SCM_RIGHTS) and answers the
plugin's host requests the way the spec says, recording every request so that a test can
assert on the conversation. Nothing here is clever: it is the spec, read literally.
"""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field

MAX_LINE = 1 << 20
READ_CAP = 1 << 20  # the server caps read_payload at 1 MiB


@dataclass
class CallOutcome:
    done: object = None                       # the done code, as sent (int or name)
    result: dict | None = None                # send_result's object
    payload_size: int = 0                     # send_result's payload_size
    out_payload: bytearray = field(default_factory=bytearray)
    fail: dict | None = None                  # the fail/fail_details request
    requests: list = field(default_factory=list)   # every host request, in order
    payload_served: int = 0                   # bytes handed out by read_payload


class WorkerServer:
    """One worker process and our end of its socket."""

    def __init__(self, argv: list[str], cwd: str | None = None, env: dict | None = None,
                 timeout: float = 20.0):
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(argv, stdin=child, stdout=child, stderr=self.stderr,
                                         cwd=cwd, env=env, close_fds=True)
        finally:
            child.close()
        self.sock.settimeout(timeout)
        self._buf = bytearray()
        self._fds: list[int] = []   # fds received from the worker, not yet claimed
        # quota answers a test may change: code of quota_reserve and its token
        self.reserve_code = 0
        self.next_token = 1
        # the reply to send_result / write_payload (0 or -1)
        self.send_ret = 0

    # -- framing -------------------------------------------------------------------------
    def send(self, obj: dict, raw: bytes = b"", fds: list[int] | None = None) -> None:
        line = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        if fds:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
            sent = self.sock.sendmsg([line], anc)
            line = line[sent:]
        self.sock.sendall(line + raw)

    def send_line(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def _recv(self) -> bool:
        data, anc, _, _ = self.sock.recvmsg(1 << 16, socket.CMSG_SPACE(4 * 8))
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                self._fds.extend(fds)
        if not data:
            return False
        self._buf += data
        return True

    def read_line(self) -> dict | None:
        """One message line as an object; None at EOF. Raises on a line > 1 MiB."""
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_LINE:
                raise AssertionError("the worker sent a line longer than 1 MiB")
            if not self._recv():
                if self._buf:
                    raise AssertionError(f"EOF inside a line: {bytes(self._buf[:200])!r}")
                return None
        nl = self._buf.index(b"\n")
        line = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        assert b"\r" not in line
        obj = json.loads(line.decode("utf-8"))
        assert isinstance(obj, dict), line
        return obj

    def read_raw(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._recv():
                raise AssertionError("EOF inside raw bytes")
        raw = bytes(self._buf[:n])
        del self._buf[:n]
        return raw

    def take_fds(self) -> list[int]:
        fds, self._fds = self._fds, []
        return fds

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, operation: str = "op", settings: dict | None = None) -> dict:
        """init -> ready; returns the ready object (asserting its shape)."""
        self.send({"init": {"operation": operation, "settings": settings or {}}})
        msg = self.read_line()
        assert msg is not None, "the worker closed the socket instead of ready: " + self.err()
        assert "ready" in msg, msg
        ready = msg["ready"]
        assert isinstance(ready.get("summary"), str) and ready["summary"], ready
        assert isinstance(ready.get("version"), str), ready
        assert ready.get("payload") in ("none", "in", "out"), ready
        assert isinstance(ready.get("args_schema"), dict), ready
        return ready

    def call(self, user_dir: int, scratch_dir: int, *, user: str = "alice",
             args: dict | None = None, payload: bytes = b"", call_id: int = 1,
             chunk: int = READ_CAP, payload_lost_at: int | None = None) -> CallOutcome:
        """One call: sends it with [user_dir, scratch_dir], answers host requests until
        done. `chunk` caps what each read_payload reply carries (to split the payload);
        from byte `payload_lost_at` on, read_payload answers -1 (the client went away)."""
        out = CallOutcome()
        self.send({"call": {"id": call_id, "user": user, "args": args or {},
                            "payload": len(payload)}}, fds=[user_dir, scratch_dir])
        pos = 0
        held: dict[str, int] = {}
        while True:
            msg = self.read_line()
            assert msg is not None, "EOF before done: " + self.err()
            if "done" in msg:
                out.done = msg["done"]
                assert set(msg) == {"done"}, msg
                out.payload_served = pos
                return out
            host = msg.get("host")
            assert isinstance(host, str), msg
            assert "bytes" not in msg or host == "write_payload", msg
            out.requests.append(msg)
            fds = self.take_fds()
            if host == "read_payload":
                cap = min(int(msg["cap"]), READ_CAP, chunk)
                assert cap > 0
                n = min(cap, len(payload) - pos)
                if payload_lost_at is not None and pos >= payload_lost_at:
                    self.send({"ret": -1})
                elif n > 0:
                    self.send({"ret": n, "bytes": n}, payload[pos:pos + n])
                    pos += n
                else:
                    self.send({"ret": 0})
            elif host == "send_result":
                assert isinstance(msg["result"], dict), msg
                out.result = msg["result"]
                out.payload_size = msg["payload_size"]
                self.send({"ret": self.send_ret})
            elif host == "write_payload":
                out.out_payload += self.read_raw(int(msg["bytes"]))
                self.send({"ret": self.send_ret})
            elif host == "send_file":
                assert len(fds) == 1, f"send_file came with {len(fds)} fds"
                out.out_payload += os.pread(fds[0], int(msg["len"]), int(msg["offset"]))
                self.send({"ret": 0})
            elif host in ("fail", "fail_details"):
                out.fail = msg
                self.send({"ret": 0})
            elif host in ("log", "usage_adjust"):
                self.send({"ret": 0})
            elif host == "quota_reserve":
                assert isinstance(msg["reserve_bytes"], int) and msg["reserve_bytes"] >= 0
                assert isinstance(msg["reserve_files"], int) and msg["reserve_files"] >= 0
                assert "bytes" not in msg, "only write_payload is followed by raw bytes"
                token = self.next_token if self.reserve_code == 0 else 0
                self.next_token += 1
                self.send({"ret": self.reserve_code, "token": token})
            elif host in ("quota_commit", "quota_release"):
                self.send({"ret": 0})
            elif host == "quota_hold":
                held[msg["tag"]] = msg["token"]
                self.send({"ret": 0})
            elif host in ("quota_commit_held", "quota_release_held"):
                self.send({"ret": 0 if held.pop(msg["tag"], None) else 7})
            elif host == "user_exists":
                self.send({"ret": 1 if msg["name"] == user else 0})
            elif host == "get_usage":
                if msg["name"] in (None, user):
                    self.send({"ret": 0, "usage": {"user": user, "bytes": 0, "files": 0}})
                else:
                    self.send({"ret": -7})
            elif host in ("create_user", "create_user_with_quota", "remove_user",
                          "rekey_user", "set_quota"):
                self.send({"ret": 0})
            elif host == "close_user_connections":
                self.send({"ret": 0})
            else:
                self.send({"ret": -1, "error": f"unknown host function {host}"})
            for fd in fds:
                os.close(fd)

    def close(self, timeout: float = 10.0) -> int:
        """EOF to the worker; returns its exit status."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def err(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")
