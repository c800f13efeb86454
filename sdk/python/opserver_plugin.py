"""Write an opserver operation in Python: the plugin side of the worker protocol.

An exec operation is a program the server starts with ONE connected AF_UNIX stream
socket as both its stdin (fd 0) and its stdout (fd 1); stderr goes to the server's log.
This module speaks the protocol on that socket (docs/PLUGINS.md, "Operations in any language", describes
it), so a plugin is a handler function:

    from opserver_plugin import Operation, Failure

    op = Operation(summary="Counts words", version="1.0.0", payload="in",
                   args_schema={"type": "object", "additionalProperties": False})

    @op.handler
    def wordcount(call):
        words = sum(len(chunk.split()) for chunk in call.payload_chunks())  # (naive)
        return {"words": words}          # the success result (one JSON object)

    op.run()                             # init -> ready -> one call at a time until EOF

A handler receives a Call (call.user, call.args, call.settings, call.payload_size,
call.id, call.operation, call.user_dir, call.scratch_dir) and either
  - returns a dict: it is sent as the result (payload "none" and "in" operations), or
  - calls call.send_result(obj, payload_size) then call.write(...) / call.send_file(...)
    and returns None (payload "out" operations), or
  - raises Failure(code, message, details=None): the client gets that error, or
  - calls call.fail(...) itself and returns None.
Any other exception is logged with its traceback on stderr and answered
`internal`; the worker then serves the next call. Codes are OPS/1 error codes, by name
("not_found") or number (7); see CODES.

stdout belongs to the protocol. run() moves the socket to a private descriptor and points
fd 1 (and sys.stdout) at stderr, and fd 0 at /dev/null, so a stray print() ends up in the
server's log instead of corrupting the conversation.

SAFE PATHS. A path that comes from a client is the user's path: it must never lead out
of the user's directory. Never pass it to open() or os.path.join(); use
call.open(path, flags), call.open_dir(path), call.open_parent(path), call.stat(path) or
call.mkdir(path), which follow the rules of the C++ SDK (sdk/include/opserver/paths.hpp):
  - the path is valid UTF-8, relative ('/'-separated, no leading '/'), not empty, at most
    4096 bytes, each component at most 255 bytes, no empty, "." or ".." component, and no
    control character (U+0000-U+001F, U+007F, so no NUL); otherwise `invalid_args`;
  - it is resolved one component at a time from call.user_dir, each os.open(...,
    dir_fd=previous, O_NOFOLLOW) (O_DIRECTORY for the directories on the way), so no
    symlink is ever followed, not even as the last component, and a directory renamed
    or swapped for a symlink while we walk cannot redirect us: a symlink anywhere gives
    `forbidden`, a missing component `not_found`, a file where a directory is needed
    `conflict`.
Errors raised as Failure name the user's path, never a host path.

Python 3.11, standard library only. One call at a time per process (the server starts
several processes for concurrent calls).
"""

from __future__ import annotations

import array
import errno
import json
import os
import secrets
import socket
import stat as _stat
import sys
import traceback
from typing import Any, Callable, Iterator

__all__ = ["Operation", "Call", "Failure", "ConnectionLost", "CODES", "code_number",
           "LIMIT_NONE", "LIMIT_DEFAULT", "LIMIT_KEEP"]

# OPS/1 error codes (plugin_abi.h ops_code), by name.
CODES = {
    "ok": 0, "bad_frame": 1, "bad_request": 2, "auth_failed": 3, "unknown_operation": 4,
    "forbidden": 5, "invalid_args": 6, "not_found": 7, "already_exists": 8, "conflict": 9,
    "payload_too_large": 10, "checksum_mismatch": 11, "quota_exceeded": 12, "timeout": 13,
    "unavailable": 14, "internal": 15,
}
_CODE_NAMES = {v: k for k, v in CODES.items()}

# Special quota values of create_user_with_quota and set_quota (plugin_abi.h).
LIMIT_NONE = -1     # no limit, whatever the server's default
LIMIT_DEFAULT = -2  # the server's default applies
LIMIT_KEEP = -3     # set_quota only: leave as it is

_LOG_LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3}
MAX_LINE = 1 << 20          # the protocol's longest line, either way
MAX_CHUNK = 1 << 20         # the server caps read_payload at 1 MiB; writes are split alike
MAX_PATH_BYTES = 4096
MAX_COMPONENT_BYTES = 255


def code_number(code: int | str) -> int:
    """The number of an OPS/1 code given by name or number; ValueError if unknown."""
    if isinstance(code, bool):
        raise ValueError(f"not an OPS/1 code: {code!r}")
    if isinstance(code, int):
        if code in _CODE_NAMES:
            return code
    elif isinstance(code, str) and code in CODES:
        return CODES[code]
    raise ValueError(f"not an OPS/1 code: {code!r}")


class Failure(Exception):
    """Raise from a handler to answer the client with an OPS/1 error.

    code: a name ("not_found") or number; message: for people (the user's path, never a
    host path, never a key); details: an optional JSON object the client receives as
    error.details."""

    def __init__(self, code: int | str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code_number(code)
        self.message = message
        self.details = details


class ConnectionLost(Failure):
    """The server side is gone (EOF), or it said a send can no longer reach the client."""

    def __init__(self, message: str = "the connection was lost"):
        super().__init__("unavailable", message)


class _ServerGone(Exception):
    """EOF on the socket: the worker must stop."""


class ProtocolError(Exception):
    """The server sent something the protocol does not allow."""


# ---------------------------------------------------------------------------------------
# The socket: lines (plus raw bytes when "bytes") with file descriptors alongside.

class _Channel:
    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buf = bytearray()
        self._fds: list[int] = []   # received, not yet claimed by a message
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        fd_space = socket.CMSG_SPACE(16 * array.array("i").itemsize)
        while True:
            try:
                data, anc, flags, _ = self._sock.recvmsg(256 * 1024, fd_space)
                break
            except InterruptedError:
                continue
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                self._fds.extend(fds)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def read_message(self) -> tuple[dict, bytes, list[int]]:
        """One message: (object, raw bytes if it had "bytes", fds that came with it).
        Raises _ServerGone at EOF, ProtocolError on a bad line."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                break
            if len(self._buf) > MAX_LINE:
                raise ProtocolError("a line longer than 1 MiB")
            if not self._fill():
                raise _ServerGone()
        line = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        if nl > MAX_LINE:
            raise ProtocolError("a line longer than 1 MiB")
        try:
            msg = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ProtocolError(f"a line that is not JSON: {e}") from None
        if not isinstance(msg, dict):
            raise ProtocolError("a line that is not a JSON object")
        raw = b""
        n = msg.get("bytes", 0)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ProtocolError('"bytes" is not a count')
        if n > 0:
            while len(self._buf) < n:
                if not self._fill():
                    raise _ServerGone()
            raw = bytes(self._buf[:n])
            del self._buf[:n]
        # The server sends one message and waits for the answer, so every descriptor
        # received since the previous message came with this one.
        fds, self._fds = self._fds, []
        return msg, raw, fds

    def send(self, obj: dict, raw: bytes | bytearray | memoryview = b"",
             fds: list[int] | None = None) -> None:
        line = _encode(obj)
        if len(line) > MAX_LINE:
            raise ValueError("a protocol line longer than 1 MiB (result too large?)")
        try:
            if fds:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
                sent = self._sock.sendmsg([line], anc)
                line = line[sent:]
            if line:
                self._sock.sendall(line)
            if raw:
                self._sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            raise _ServerGone() from None


def _encode(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            + "\n").encode("utf-8")


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------
# Safe paths (the rules of sdk/include/opserver/paths.hpp)

def _invalid(why: str) -> Failure:
    return Failure("invalid_args", "invalid path: " + why)


def validate_path(path: Any) -> list[str]:
    """The components of a valid user path; Failure(invalid_args) otherwise."""
    if not isinstance(path, str):
        raise _invalid("it is not a string")
    if path == "":
        raise _invalid("it is empty")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid("it is not valid UTF-8") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise _invalid("it is longer than 4096 bytes")
    if path.startswith("/"):
        raise _invalid("it must be relative (no leading '/')")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise _invalid("it contains a control character")
    comps = path.split("/")
    for comp in comps:
        if comp == "":
            raise _invalid("it has an empty component ('//' or a trailing '/')")
        if comp == ".":
            raise _invalid("it has a '.' component")
        if comp == "..":
            raise _invalid("it has a '..' component")
        if len(comp.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise _invalid("a component is longer than 255 bytes")
    return comps


def error_from_errno(err: int, path: str) -> Failure:
    """The OPS/1 error for an errno met on the user's `path` (the message names it)."""
    p = path or "(root)"
    if err == errno.ENOENT:
        return Failure("not_found", "no such file or directory: " + p)
    if err == errno.ENOTDIR:
        return Failure("conflict", "a file is where a directory is needed: " + p)
    if err == errno.EISDIR:
        return Failure("conflict", "is a directory: " + p)
    if err in (errno.ELOOP, errno.EXDEV):
        return Failure("forbidden", "path crosses a symbolic link: " + p)
    if err == errno.EEXIST:
        return Failure("already_exists", "already exists: " + p)
    if err in (errno.ENOSPC, errno.EDQUOT):
        return Failure("unavailable", "no space left")
    if err in (errno.EACCES, errno.EPERM):
        return Failure("forbidden", "permission denied: " + p)
    if err == errno.ENAMETOOLONG:
        return Failure("invalid_args", "path too long: " + p)
    if err == errno.EROFS:
        return Failure("unavailable", "storage is read-only")
    if err in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN):
        return Failure("unavailable", "server is out of resources, retry later")
    if err == errno.EFBIG:
        return Failure("payload_too_large", "file too large: " + p)
    return Failure("internal", f"i/o error on {p}: {os.strerror(err)}")


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _reopen_dir(dir_fd: int) -> int:
    # A new open file description, never a dup (a dup would share the readdir offset).
    return os.open(".", _DIR_FLAGS, dir_fd=dir_fd)


def _walk_dirs(root: int, comps: list[str], create: bool) -> int:
    """Opens the directory comps[0]/.../comps[-1] beneath root, one component at a time
    with O_NOFOLLOW; with create, makes the missing ones (0750). Returns a new fd; raises
    OSError."""
    cur = _reopen_dir(root)
    try:
        for comp in comps:
            if create:
                try:
                    os.mkdir(comp, 0o750, dir_fd=cur)
                except FileExistsError:
                    pass  # a concurrent creator's directory, or a file/symlink (refused below)
            nxt = os.open(comp, _DIR_FLAGS, dir_fd=cur)
            os.close(cur)
            cur = nxt
        return cur
    except BaseException:
        os.close(cur)
        raise


def _refine_enotdir(root: int, comps: list[str]) -> int:
    """ENOTDIR from an O_DIRECTORY|O_NOFOLLOW open may really be a symlink: say ELOOP then."""
    try:
        cur = _reopen_dir(root)
    except OSError:
        return errno.ENOTDIR
    try:
        for i, comp in enumerate(comps):
            try:
                st = os.stat(comp, dir_fd=cur, follow_symlinks=False)
            except OSError:
                return errno.ENOTDIR
            if _stat.S_ISLNK(st.st_mode):
                return errno.ELOOP
            if not _stat.S_ISDIR(st.st_mode) or i + 1 == len(comps):
                return errno.ENOTDIR
            nxt = os.open(comp, _DIR_FLAGS, dir_fd=cur)
            os.close(cur)
            cur = nxt
        return errno.ENOTDIR
    except OSError:
        return errno.ENOTDIR
    finally:
        os.close(cur)


def _path_error(err: int, root: int, comps: list[str], path: str) -> Failure:
    if err == errno.ENOTDIR:
        err = _refine_enotdir(root, comps)
    return error_from_errno(err, path)


def open_beneath(root: int, path: str, flags: int, mode: int = 0o640) -> int:
    """An fd for the user path `path` beneath the directory fd `root` (see SAFE PATHS)."""
    comps = validate_path(path)
    try:
        parent = _walk_dirs(root, comps[:-1], create=False)
    except OSError as e:
        raise _path_error(e.errno, root, comps, path) from None
    try:
        return os.open(comps[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
    except OSError as e:
        raise _path_error(e.errno, root, comps, path) from None
    finally:
        os.close(parent)


def open_dir_beneath(root: int, path: str, create: bool = False) -> int:
    """An O_DIRECTORY fd for `path` beneath `root`; "" is the root itself (a new open file
    description). With create, missing directories are made one at a time (0750)."""
    comps = [] if path == "" else validate_path(path)
    try:
        return _walk_dirs(root, comps, create)
    except OSError as e:
        raise _path_error(e.errno, root, comps, path) from None


def open_parent_beneath(root: int, path: str, create: bool = False) -> tuple[int, str]:
    """(fd of the directory holding `path`, its last component); the path is validated."""
    comps = validate_path(path)
    try:
        return _walk_dirs(root, comps[:-1], create), comps[-1]
    except OSError as e:
        raise _path_error(e.errno, root, comps, path) from None


# ---------------------------------------------------------------------------------------
# A call

class Call:
    """One request, valid only while the handler runs (its directory fds are closed after)."""

    def __init__(self, op: "Operation", body: dict, fds: list[int]):
        self._op = op
        self._ch = op._channel
        self.id = body.get("id")
        self.user: str = body.get("user", "")
        self.args: dict = body.get("args") or {}
        size = body.get("payload", 0)
        self.payload_size: int = size if isinstance(size, int) and size > 0 else 0
        self.operation: str = op.name
        self.settings: dict = op.settings
        self.user_dir: int = fds[0] if len(fds) > 0 else -1
        self.scratch_dir: int = fds[1] if len(fds) > 1 else -1
        # This server's own part of scratch_dir, for temporary files (servers sharing one
        # storage directory each have theirs); an older server sends none: scratch_dir.
        self.node_scratch_dir: int = fds[2] if len(fds) > 2 else -1
        for extra in fds[3:]:
            _close_quietly(extra)
        self._payload_done = self.payload_size == 0
        self.result_sent = False
        self.failed_code: int | None = None

    # -- host requests ------------------------------------------------------------------
    def host(self, function: str, raw: bytes = b"", fds: list[int] | None = None,
             **named: Any) -> tuple[dict, bytes]:
        """Sends one host request and returns (reply, raw bytes of the reply)."""
        req = {"host": function, **named}
        if raw:
            req["bytes"] = len(raw)
        self._ch.send(req, raw, fds)
        reply, data, stray = self._ch.read_message()
        for fd in stray:
            _close_quietly(fd)
        ret = reply.get("ret")
        if not isinstance(ret, int) or isinstance(ret, bool):
            raise ProtocolError(f"a reply to {function} without an integer \"ret\"")
        if "error" in reply and ret == -1:
            print(f"opserver_plugin: the server refused {function}: {reply['error']}",
                  file=sys.stderr, flush=True)
        return reply, data

    def read_payload(self, cap: int | None = None) -> bytes:
        """With cap: the next chunk of the request payload (at most cap bytes, at most
        1 MiB), b"" once all of it was read. Without: the whole rest of the payload (use
        payload_chunks() for a large one). Raises ConnectionLost if it can no longer
        arrive."""
        if cap is None:
            return b"".join(self.payload_chunks())
        if self._payload_done:
            return b""
        cap = max(1, min(int(cap), MAX_CHUNK))
        reply, data = self.host("read_payload", cap=cap)
        ret = reply["ret"]
        if ret < 0:
            raise ConnectionLost("the payload did not arrive")
        if ret == 0:
            self._payload_done = True
            return b""
        if len(data) != ret:
            raise ProtocolError("read_payload: \"ret\" and \"bytes\" differ")
        return data

    def payload_chunks(self, cap: int = MAX_CHUNK) -> Iterator[bytes]:
        """The request payload in chunks of at most cap bytes (bounded memory)."""
        while True:
            chunk = self.read_payload(cap)
            if not chunk:
                return
            yield chunk

    def send_result(self, result: dict, payload_size: int = 0) -> None:
        """The success answer; for a payload "out" operation exactly payload_size bytes
        must then follow (write / send_file). ConnectionLost if it could not be sent."""
        if not isinstance(result, dict):
            raise TypeError("a result must be a dict (one JSON object)")
        reply, _ = self.host("send_result", result=result, payload_size=int(payload_size))
        self.result_sent = True
        if reply["ret"] != 0:
            raise ConnectionLost("the result could not be sent")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Response payload bytes (write_payload, split into requests of at most 1 MiB)."""
        view = memoryview(data).cast("B")
        for start in range(0, len(view), MAX_CHUNK):
            reply, _ = self.host("write_payload", raw=view[start:start + MAX_CHUNK])
            if reply["ret"] != 0:
                raise ConnectionLost("the payload could not be sent")

    write_payload = write

    def send_file(self, fd: int, offset: int, length: int) -> None:
        """Sends length bytes of the open file fd from offset; fd stays yours."""
        reply, _ = self.host("send_file", fds=[fd], offset=int(offset), len=int(length))
        if reply["ret"] != 0:
            raise ConnectionLost("the file could not be sent")

    def fail(self, code: int | str, message: str) -> None:
        """Records the error answer; return None from the handler afterwards."""
        n = code_number(code)
        self.host("fail", code=n, message=str(message))
        self.failed_code = n

    def fail_details(self, code: int | str, message: str, details: dict) -> None:
        """fail() plus machine-readable facts (one JSON object) for error.details."""
        n = code_number(code)
        self.host("fail_details", code=n, message=str(message), details=details)
        self.failed_code = n

    def log(self, level: int | str, message: str) -> None:
        """A line in the server log, tagged with the operation and the user."""
        if isinstance(level, str):
            level = _LOG_LEVELS[level]
        self.host("log", level=int(level), message=str(message))

    # Quotas: each returns the OPS/1 code number (0 = ok), quota_reserve (code, token).
    def quota_reserve(self, bytes: int, files: int) -> tuple[int, int]:
        # "reserve_bytes": a plain "bytes" member would announce raw bytes after the line.
        reply, _ = self.host("quota_reserve", reserve_bytes=int(bytes), reserve_files=int(files))
        return reply["ret"], int(reply.get("token", 0))

    def quota_commit(self, token: int, bytes_delta: int, files_delta: int) -> int:
        return self.host("quota_commit", token=int(token), bytes_delta=int(bytes_delta),
                         files_delta=int(files_delta))[0]["ret"]

    def quota_release(self, token: int) -> int:
        return self.host("quota_release", token=int(token))[0]["ret"]

    def quota_hold(self, token: int, tag: str) -> int:
        return self.host("quota_hold", token=int(token), tag=str(tag))[0]["ret"]

    def quota_commit_held(self, tag: str, bytes_delta: int, files_delta: int) -> int:
        return self.host("quota_commit_held", tag=str(tag), bytes_delta=int(bytes_delta),
                         files_delta=int(files_delta))[0]["ret"]

    def quota_release_held(self, tag: str) -> int:
        return self.host("quota_release_held", tag=str(tag))[0]["ret"]

    def usage_adjust(self, bytes_delta: int, files_delta: int) -> None:
        self.host("usage_adjust", bytes_delta=int(bytes_delta), files_delta=int(files_delta))

    # Users (who may call an operation using these is its "allow" list).
    def create_user(self, name: str, key: str) -> int:
        return self.host("create_user", name=name, key=key)[0]["ret"]

    def create_user_with_quota(self, name: str, key: str, quota_bytes: int,
                               quota_files: int) -> int:
        return self.host("create_user_with_quota", name=name, key=key,
                         quota_bytes=int(quota_bytes), quota_files=int(quota_files))[0]["ret"]

    def user_exists(self, name: str) -> bool:
        return self.host("user_exists", name=name)[0]["ret"] == 1

    def remove_user(self, name: str) -> int:
        return self.host("remove_user", name=name)[0]["ret"]

    def rekey_user(self, name: str, key: str) -> int:
        return self.host("rekey_user", name=name, key=key)[0]["ret"]

    def set_quota(self, name: str, quota_bytes: int, quota_files: int) -> int:
        return self.host("set_quota", name=name, quota_bytes=int(quota_bytes),
                         quota_files=int(quota_files))[0]["ret"]

    def get_usage(self, name: str | None = None) -> dict | None:
        """The usage object of name (None: the caller), or None for an unknown user."""
        reply, _ = self.host("get_usage", name=name)
        return reply.get("usage") if reply["ret"] == 0 else None

    def close_user_connections(self, name: str, except_this_connection: bool = True) -> int:
        return self.host("close_user_connections", name=name,
                         except_this_connection=bool(except_this_connection))[0]["ret"]

    # -- safe paths beneath the user's directory (see SAFE PATHS above) ---------------
    def open(self, path: str, flags: int = os.O_RDONLY, mode: int = 0o640) -> int:
        """An fd for the user's path (yours to close); Failure on any refusal."""
        return open_beneath(self.user_dir, path, flags, mode)

    def open_dir(self, path: str = "", create: bool = False) -> int:
        """An O_DIRECTORY fd for the user's directory path ("" = the user's root)."""
        return open_dir_beneath(self.user_dir, path, create)

    def open_parent(self, path: str, create: bool = False) -> tuple[int, str]:
        """(fd of the directory holding path, last component), for *at() calls."""
        return open_parent_beneath(self.user_dir, path, create)

    def stat(self, path: str) -> os.stat_result:
        """lstat of the user's path (a symlink is reported, never followed)."""
        parent, leaf = self.open_parent(path)
        try:
            return os.stat(leaf, dir_fd=parent, follow_symlinks=False)
        except OSError as e:
            raise error_from_errno(e.errno, path) from None
        finally:
            os.close(parent)

    def mkdir(self, path: str, parents: bool = False) -> None:
        """Makes the user's directory path (0750), durably (the parent is fsynced)."""
        parent, leaf = self.open_parent(path, create=parents)
        try:
            os.mkdir(leaf, 0o750, dir_fd=parent)
            os.fsync(parent)
        except OSError as e:
            raise error_from_errno(e.errno, path) from None
        finally:
            os.close(parent)

    def scratch_name(self, prefix: str = "tmp") -> str:
        """A fresh file name for call.temp_dir() (never visible to users)."""
        return f".{prefix}-{os.getpid()}-{secrets.token_hex(8)}"

    def _close_fds(self) -> None:
        for fd in (self.user_dir, self.scratch_dir, self.node_scratch_dir):
            if fd >= 0:
                _close_quietly(fd)
        self.user_dir = self.scratch_dir = self.node_scratch_dir = -1

    def temp_dir(self) -> int:
        """Where temporary files go: node_scratch_dir, or scratch_dir from an older server."""
        return self.node_scratch_dir if self.node_scratch_dir >= 0 else self.scratch_dir


# ---------------------------------------------------------------------------------------
# The operation and its loop

class Operation:
    """What `describe` shows, and the handler. payload: "none", "in" or "out"."""

    def __init__(self, summary: str, version: str, payload: str = "none",
                 args_schema: dict | None = None):
        if payload not in ("none", "in", "out"):
            raise ValueError('payload must be "none", "in" or "out"')
        if args_schema is None:
            args_schema = {"type": "object"}
        if not isinstance(args_schema, dict):
            raise TypeError("args_schema must be a dict (a JSON Schema object)")
        self.summary = summary
        self.version = version
        self.payload = payload
        self.args_schema = args_schema
        self.name = ""
        self.settings: dict = {}
        self._handler: Callable[[Call], dict | None] | None = None
        self._on_init: Callable[[str, dict], None] | None = None
        self._channel: _Channel | None = None

    def handler(self, fn: Callable[[Call], dict | None]) -> Callable[[Call], dict | None]:
        """Decorator: the function that serves each call."""
        self._handler = fn
        return fn

    def on_init(self, fn: Callable[[str, dict], None]) -> Callable[[str, dict], None]:
        """Decorator: fn(operation_name, settings) runs once before `ready`; raising
        (Failure or anything) refuses to start with that message."""
        self._on_init = fn
        return fn

    def _ready(self) -> dict:
        return {"ready": {"summary": self.summary, "version": self.version,
                          "payload": self.payload, "args_schema": self.args_schema}}

    def run(self, sock_fd: int = 0) -> None:
        """Serves until the server closes the socket, then exits the process (0; 2 when the
        server broke the protocol, 1 when start-up was refused)."""
        if self._handler is None:
            raise RuntimeError("no handler: decorate a function with @op.handler")
        sys.exit(self._serve(_take_socket(sock_fd)))

    def _serve(self, sock: socket.socket) -> int:
        self._channel = ch = _Channel(sock)
        try:
            msg, _, fds = ch.read_message()
            for fd in fds:
                _close_quietly(fd)
            init = msg.get("init")
            if not isinstance(init, dict):
                ch.send({"error": "the first message was not init"})
                return 2
            self.name = str(init.get("operation", ""))
            settings = init.get("settings") or {}
            self.settings = settings if isinstance(settings, dict) else {}
            if self._on_init is not None:
                try:
                    self._on_init(self.name, self.settings)
                except Exception as e:  # noqa: BLE001 - any refusal is reported the same way
                    why = e.message if isinstance(e, Failure) else f"{type(e).__name__}: {e}"
                    ch.send({"error": why})
                    return 1
            ch.send(self._ready())
            while True:
                msg, _, fds = ch.read_message()
                body = msg.get("call")
                if not isinstance(body, dict):
                    for fd in fds:
                        _close_quietly(fd)
                    raise ProtocolError(f"expected a call, got {sorted(msg)}")
                call = Call(self, body, fds)
                try:
                    code = self._serve_call(call)
                finally:
                    call._close_fds()  # before done: the call is over when the server hears it
                ch.send({"done": code})
        except _ServerGone:
            return 0
        except ProtocolError as e:
            print(f"opserver_plugin: protocol error: {e}", file=sys.stderr, flush=True)
            return 2

    def _serve_call(self, call: Call) -> int:
        """Runs the handler; returns the code for `done`. _ServerGone and ProtocolError
        pass through (the loop ends)."""
        assert self._handler is not None
        try:
            if call.user_dir < 0 or call.scratch_dir < 0:
                raise Failure("internal", "the call came without its directories")
            result = self._handler(call)
            if result is None:
                if call.failed_code is not None:
                    return call.failed_code
                if call.result_sent:
                    return 0
                raise TypeError("the handler returned None without sending a result")
            if not isinstance(result, dict):
                raise TypeError(f"the handler returned a {type(result).__name__}, not a dict")
            if call.result_sent:
                raise TypeError("the handler returned a result after send_result")
            call.send_result(result)
            return 0
        except (_ServerGone, ProtocolError):
            raise
        except Failure as f:
            return self._answer_failure(call, f)
        except Exception:  # noqa: BLE001 - a handler bug must not end the worker
            print(f"opserver_plugin: operation {self.name or '?'} call {call.id}: "
                  "uncaught exception", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            return self._answer_failure(
                call, Failure("internal", f"internal error in operation {self.name}"))

    def _answer_failure(self, call: Call, f: Failure) -> int:
        if call.result_sent or isinstance(f, ConnectionLost):
            # The answer has gone (or cannot go): only `done` is left to say it ended badly.
            return f.code
        try:
            if f.details is not None:
                call.fail_details(f.code, f.message, f.details)
            else:
                call.fail(f.code, f.message)
        except (TypeError, ValueError):
            # details that are not JSON: the message still goes, as internal.
            call.fail("internal", f.message)
            return CODES["internal"]
        return f.code


def _take_socket(fd: int) -> socket.socket:
    """The protocol socket on a private fd; fd 1 -> stderr and fd 0 -> /dev/null, so that
    print() and input() cannot touch the protocol."""
    private = os.dup(fd)
    os.set_inheritable(private, False)
    sock = socket.socket(fileno=private)
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = sys.stderr
    return sock
