"""The OPS/1 client: connection, mutual handshake, requests, payload streaming.

A :class:`Client` owns one TCP connection and is used from one thread at a time.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import io
import json
import os
import shutil
import socket
import ssl
import stat
import struct
import tempfile
from dataclasses import dataclass, field
from typing import (IO, Any, BinaryIO, Callable, Deque, Dict, Iterator, Mapping, Optional, Tuple,
                    Union)

from . import handshake, tls as _tls
from .errors import (AuthFailed, CannotConnect, ChecksumMismatch, ConnectionLost, OpsError,
                     ProtocolError, ServerProofError, error_for)

#: Called as payload bytes move: ``progress(done, total)``.
Progress = Callable[[int, int], None]
#: What a request payload may be: bytes, or a binary file object.
Payload = Union[None, bytes, bytearray, memoryview, BinaryIO, IO[bytes]]

CHUNK = 1 << 20                    # payload streaming buffer
RESUMABLE_CHUNK = 8 << 20          # bytes per upload_append of upload_resumable
MAX_PAYLOAD = (1 << 53) - 1        # §1
MAX_RESPONSE_FRAME = 16 << 20      # refuse larger headers before allocating them
MAX_ARGS_DEPTH = 31                # §7: 32 levels, the header being the first
_FATAL = {"bad_frame", "auth_failed"}  # §3: the server closes after these


# Marks an optional argument left out (None means JSON null: "no limit").
_UNSET: Any = object()


@dataclass
class Response:
    """One response header and, once read, its payload.

    Attributes:
        id: the request id the server echoed (None for ``"id": null``).
        ok: True on success.
        result: the ``result`` object (ok only).
        error: the error (not ok only); :meth:`Client.recv` raises it.
        payload_size: payload bytes that followed the header.
        payload: the payload, when it was read into memory (no ``out`` given).
        header: the whole header as received.
    """

    id: Optional[int]
    ok: bool
    result: Dict[str, Any] = field(default_factory=dict)
    error: Optional[OpsError] = None
    payload_size: int = 0
    payload: Optional[bytes] = None
    header: Dict[str, Any] = field(default_factory=dict)


class Result(dict):
    """A call's ``result`` object (a dict), with the response payload attached.

    ``payload`` holds the response payload when :meth:`Client.call` was given no
    ``out`` (else None); ``id`` is the request id.
    """

    payload: Optional[bytes] = None
    id: Optional[int] = None


def _depth(value: Any, limit: int) -> bool:
    """True if ``value`` nests at most ``limit`` objects/arrays deep."""
    if isinstance(value, Mapping):
        return limit > 0 and all(_depth(v, limit - 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return limit > 0 and all(_depth(v, limit - 1) for v in value)
    return True


def _payload_size_of(header: Mapping[str, Any]) -> int:
    size = header.get("payload", 0)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_PAYLOAD:
        raise ProtocolError("bad \"payload\" in a header from the server")
    return size


class Client:
    """A logged-in OPS/1 connection.

    Connects and completes the mutual handshake on construction (§2): the
    server's proof is checked with :func:`hmac.compare_digest`, and a server that
    does not know the key raises :class:`ServerProofError`.

    Args:
        host: server host name or address.
        port: server TCP port.
        user: user name.
        key: the user's key, exactly as issued (str or bytes).
        timeout: seconds allowed for connecting and for any read or write to make
            progress; None waits forever.
        tls: connect over TLS (§8). The login is then bound to the TLS connection
            (``hmac-sha256-plus``, RFC 9266 channel binding), so a relay that terminates
            TLS cannot pass it on.
        ca: a PEM file of CAs to trust for the server's certificate (default: the
            system's store). The certificate must name ``host`` (or ``server_name``).
        cert, cert_key: a client certificate (PEM chain) and its private key, for
            servers that require one (``cert_key`` may be omitted when ``cert`` holds
            both). ``key`` stays the user's OPS/1 key.
        insecure_no_binding: go on with plain ``hmac-sha256`` when a TLS server does not
            offer channel binding (else :class:`AuthFailed` is raised before logging in).
        server_name: the name to check in the server's certificate, if not ``host``.
        allow_tls12: accept TLS 1.2 (with the extended master secret) besides TLS 1.3.

    Raises:
        CannotConnect: the server cannot be reached.
        AuthFailed: the login was refused.
        ServerProofError: the server's proof is wrong.
        ConnectionLost: the connection broke during the handshake.
        ProtocolError: the peer does not speak OPS/1.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9000, user: str = "",
                 key: Union[str, bytes] = "", *, timeout: Optional[float] = 60.0,
                 tls: bool = False, ca: Optional[str] = None, cert: Optional[str] = None,
                 cert_key: Optional[str] = None, insecure_no_binding: bool = False,
                 server_name: Optional[str] = None, allow_tls12: bool = False) -> None:
        if not user:
            raise ValueError("no user name")
        self.host = host
        self.port = port
        self.user = user
        self.timeout = timeout
        #: The server's version string from ``welcome`` ("opserver/x.y.z").
        self.server_version = ""
        self._next_id = 1
        self._pending: Deque[int] = collections.deque()
        self._in_pending = 0      # unread payload of the last response
        self._broken: Optional[OpsError] = None
        self._insecure_no_binding = insecure_no_binding
        #: The TLS channel binding (32 bytes) on a TLS connection, else None.
        self._binding: Optional[bytes] = None
        #: True once the login used hmac-sha256-plus (bound to this TLS connection).
        self.channel_bound = False
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if not tls and (ca or cert or cert_key or insecure_no_binding):
            raise ValueError("ca, cert, cert_key and insecure_no_binding need tls=True")
        context = None
        if tls:
            try:
                context = _tls.client_context(ca, cert, cert_key, allow_tls12)
            except (OSError, ssl.SSLError) as e:
                raise CannotConnect(f"TLS with {where}: cannot load certificates: {e}") from e
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise CannotConnect(f"cannot connect to {where}: {e.strerror or e}") from e
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock.settimeout(timeout)
            if context is not None:
                self._start_tls(context, server_name or host, where)
            self._handshake(key)
        except BaseException:
            self._sock.close()
            raise

    # --- context manager ---

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection. Safe to call more than once."""
        try:
            self._sock.close()
        except OSError:
            pass

    @property
    def broken(self) -> bool:
        """True once the connection became unusable (every call then raises)."""
        return self._broken is not None

    # --- handshake ---

    def _start_tls(self, context: ssl.SSLContext, name: str, where: str) -> None:
        try:
            self._sock = context.wrap_socket(self._sock, server_hostname=name)
        except ssl.SSLCertVerificationError as e:
            raise CannotConnect(f"TLS with {where}: the server's certificate is not trusted "
                                f"for {name}: {e.verify_message}") from e
        except (ssl.SSLError, OSError) as e:
            raise CannotConnect(f"TLS with {where}: the TLS handshake failed: {e}") from e
        try:
            self._binding = _tls.channel_binding(self._sock)
        except _tls.ChannelBindingUnavailable as e:
            if not self._insecure_no_binding:
                raise CannotConnect(f"TLS with {where}: {e}; refusing to log in without "
                                    "channel binding (insecure_no_binding allows it)") from e

    @property
    def tls_version(self) -> Optional[str]:
        """"TLSv1.3" on a TLS connection, else None."""
        return self._sock.version() if isinstance(self._sock, ssl.SSLSocket) else None

    def _handshake(self, key: Union[str, bytes]) -> None:
        try:
            challenge = self._read_header()
        except ConnectionLost as e:
            if isinstance(self._sock, ssl.SSLSocket):
                raise CannotConnect("the server ended the TLS connection before the OPS/1 "
                                    "challenge (does it require a client certificate?): "
                                    f"{e.message}") from e
            raise ConnectionLost(f"no challenge from the server: {e.message}") from e
        if challenge.get("type") == "error":
            raise self._error_frame(challenge)
        mechanisms = challenge.get("mechanisms")
        if not isinstance(mechanisms, list):
            mechanisms = []
        if (challenge.get("type") != "challenge"
                or challenge.get("protocol") != handshake.PROTOCOL):
            raise self._protocol("not an OPS/1 server (bad challenge)")
        # §8: over TLS the login is bound to this connection unless the caller allowed
        # going on without channel binding.
        use_plus = self._binding is not None and handshake.MECHANISM_PLUS in mechanisms
        if isinstance(self._sock, ssl.SSLSocket) and not use_plus:
            if not self._insecure_no_binding:
                self._broken = AuthFailed("refused")
                raise AuthFailed("the server does not offer channel binding (hmac-sha256-plus) "
                                 "over TLS; refusing to log in without it "
                                 "(insecure_no_binding=True allows it)")
        if not use_plus and handshake.MECHANISM not in mechanisms:
            raise self._protocol("not an OPS/1 server (bad challenge)")
        cb = self._binding if use_plus else None
        mechanism = handshake.MECHANISM_PLUS if use_plus else handshake.MECHANISM
        try:
            nonce = handshake.parse_nonce(challenge.get("nonce"))
        except ValueError:
            raise self._protocol("the challenge nonce is not 64 lowercase hex digits") from None
        cnonce = handshake.new_cnonce(nonce)
        proof = handshake.client_proof(key, nonce, cnonce, self.user, cb)
        self._send_header({"type": "auth", "mechanism": mechanism, "user": self.user,
                           "cnonce": cnonce.hex(), "proof": proof.hex()})
        try:
            reply = self._read_header()
        except ConnectionLost as e:
            raise ConnectionLost(f"the server closed the connection during login: {e.message}") \
                from e
        if reply.get("type") == "error":
            raise self._error_frame(reply)
        if reply.get("type") != "welcome":
            raise self._protocol("expected welcome")
        try:
            got = handshake.parse_nonce(reply.get("proof"))  # 32 bytes, same format
        except ValueError:
            raise self._protocol("the welcome proof is not 64 lowercase hex digits") from None
        expected = handshake.server_proof(key, nonce, cnonce, self.user, cb)
        if not hmac.compare_digest(got, expected):
            self._broken = ServerProofError("refused")
            raise ServerProofError(
                f"the server's proof is wrong: it does not know the key of user "
                f"{self.user!r}; refusing to continue")
        if reply.get("user", self.user) != self.user:
            raise self._protocol("the welcome names another user")
        self.server_version = str(reply.get("server", ""))
        self.channel_bound = use_plus

    def _error_frame(self, header: Mapping[str, Any]) -> OpsError:
        err = header.get("error") if isinstance(header.get("error"), Mapping) else {}
        code = str(err.get("code", "internal"))
        message = str(err.get("message", code))
        if code == "auth_failed":
            return AuthFailed(f"login refused for user {self.user!r} ({message}): "
                              "wrong user name or key")
        return error_for(code, message)

    # --- pipelining ---

    def send(self, op: str, args: Optional[Mapping[str, Any]] = None, payload: Payload = None,
             *, payload_size: Optional[int] = None, progress: Optional[Progress] = None) -> int:
        """Sends one request (and its payload) without waiting for the answer.

        Args:
            op: the operation name.
            args: the ``args`` object (a mapping), or None for none.
            payload: bytes, or a binary file object streamed in 1 MiB chunks. A file
                that is neither a regular file nor seekable is first spooled to a
                temporary file, since the header announces the size (§1).
            payload_size: the number of bytes to send from a file object, when known.
            progress: called as ``progress(done, total)`` while the payload goes out.

        Returns:
            The request id; answers come back in order (:meth:`recv`).

        Raises:
            ValueError, TypeError: bad ``args`` or ``payload`` (nothing was sent).
            ConnectionLost: the connection broke. If the server answered before
                closing (e.g. ``payload_too_large``), that error is raised instead.
        """
        self._check_usable()
        if args is not None and not isinstance(args, Mapping):
            raise TypeError("args must be a mapping (a JSON object)")
        if args is not None and not _depth(args, MAX_ARGS_DEPTH):
            raise ValueError("args nest too deeply")
        source, size, spool = self._payload_source(payload, payload_size)
        try:
            if size > MAX_PAYLOAD:
                raise ValueError("payload larger than 2^53-1 bytes")
            request_id = self._next_id
            header: Dict[str, Any] = {"id": request_id, "operate": op}
            if args is not None:
                header["args"] = dict(args)
            if size:
                header["payload"] = size
            data = self._encode(header)  # may raise before anything is sent
            self._next_id += 1
            try:
                self._send_bytes(data)
                self._pending.append(request_id)
                if size:
                    self._send_payload(source, size, progress)
            except ConnectionLost as lost:
                early = self._early_answer()
                if early is not None:
                    raise early from lost
                raise
            return request_id
        finally:
            if spool is not None:
                spool.close()

    def recv(self, out: Optional[IO[bytes]] = None, *,
             progress: Optional[Progress] = None) -> Response:
        """Reads the next response, and its payload (into ``out``, else into memory).

        Raises:
            OpsError: the subclass for the server's error code (the connection stays
                usable except after ``bad_frame``).
            ConnectionLost: the connection broke or timed out.
            ProtocolError: the server broke OPS/1.
        """
        self._check_usable()
        if self._in_pending:
            self._skip(self._in_pending)
        header = self._read_header()
        response = self._parse_response(header)
        self._in_pending = response.payload_size
        if response.payload_size:
            if out is not None:
                self._read_payload_to(out, response.payload_size, progress)
            else:
                response.payload = self._read_payload_bytes(response.payload_size, progress)
        if response.error is not None:
            if response.error.code in _FATAL:
                self._mark_broken(ConnectionLost(f"the server closed the connection after "
                                                 f"{response.error.code}"))
            raise response.error
        return response

    # --- high level ---

    def call(self, op: str, args: Optional[Mapping[str, Any]] = None, payload: Payload = None,
             out: Optional[IO[bytes]] = None, *, payload_size: Optional[int] = None,
             progress: Optional[Progress] = None) -> Result:
        """Calls one operation and returns its ``result`` object.

        Args:
            op: the operation name.
            args: the ``args`` object, or None.
            payload: the request payload: bytes or a binary file object (see :meth:`send`).
            out: a binary file object for the response payload; without one the payload
                is read into memory as ``result.payload``.
            payload_size: bytes to send from a file-object payload, when known.
            progress: called as ``progress(done, total)`` for either payload.

        Returns:
            The result, a dict, with ``.payload`` (bytes or None) and ``.id``.

        Raises:
            OpsError: the subclass for the error (see :meth:`recv`).
        """
        self.send(op, args, payload, payload_size=payload_size, progress=progress)
        response = self.recv(out, progress=progress)
        result = Result(response.result)
        result.payload = response.payload
        result.id = response.id
        return result

    def describe(self) -> list:
        """The operations this user may call (§4)."""
        return list(self.call("describe").get("operations", []))

    def list(self, path: str = "", recursive: bool = False, *, limit: Optional[int] = None,
             after: Optional[str] = None) -> Result:
        """Lists a directory (§5 ``list``): one page.

        ``limit`` caps the page (the server also caps it at its maximum); ``after``
        starts after that name (with ``recursive``, that relative path). When entries
        remain, the result has ``truncated`` true and ``next``, the ``after`` for the
        following page (§10). :meth:`list_all` follows the pages for you.
        """
        args: Dict[str, Any] = {"recursive": recursive}
        if path:
            args["path"] = path
        if limit is not None:
            args["limit"] = limit
        if after is not None:
            args["after"] = after
        return self.call("list", args)

    def list_all(self, path: str = "", recursive: bool = False, *,
                 page_size: Optional[int] = None) -> Iterator[Dict[str, Any]]:
        """Every entry of a listing, page after page, in the server's order.

        Stops after a page without ``next`` (the end, or a server that cannot page and
        cut the listing: then the last page's ``truncated`` stays true and the rest is
        not reachable).
        """
        after: Optional[str] = None
        while True:
            page = self.list(path, recursive, limit=page_size, after=after)
            yield from page.get("entries", [])
            following = page.get("next")
            if not page.get("truncated") or not isinstance(following, str) or following == after:
                return
            after = following

    def stat(self, path: str = "", *, sha256: bool = False) -> Result:
        """One file or directory as ``list`` shows it (§10 ``stat``); with ``sha256`` a
        file's SHA-256 too. ``""`` is your root."""
        args: Dict[str, Any] = {"sha256": sha256}
        if path:
            args["path"] = path
        return self.call("stat", args)

    def mkdir(self, path: str, *, parents: bool = True) -> Result:
        """Creates a directory (§10 ``mkdir``); ``result["created"]`` is False when it was
        already there. Without ``parents`` a missing parent raises NotFound."""
        return self.call("mkdir", {"path": path, "parents": parents})

    def move(self, src: str, dst: str, *, overwrite: bool = False) -> Result:
        """Renames a file or directory atomically (§10 ``move``); missing parents of
        ``dst`` are created. An existing ``dst`` raises AlreadyExists, or with
        ``overwrite`` a file replaces a file (anything else raises Conflict)."""
        return self.call("move", {"from": src, "to": dst, "overwrite": overwrite})

    def remove(self, path: str, *, recursive: bool = False) -> Result:
        """Removes a file or an empty directory, or with ``recursive`` a whole tree
        (§10 ``remove``); ``result["removed"]`` counts what went."""
        return self.call("remove", {"path": path, "recursive": recursive})

    def upload(self, path: str, data: Payload, *, overwrite: bool = False,
               progress: Optional[Progress] = None) -> Result:
        """Uploads bytes or a seekable binary file, sending its SHA-256 (§5 ``upload``)."""
        args: Dict[str, Any] = {"path": path, "overwrite": overwrite}
        if isinstance(data, (bytes, bytearray, memoryview)):
            args["sha256"] = hashlib.sha256(data).hexdigest()
        elif data is not None and _seekable(data):
            start = data.tell()
            digest = hashlib.sha256()
            for chunk in iter(lambda: data.read(CHUNK), b""):
                digest.update(chunk)
            data.seek(start)
            args["sha256"] = digest.hexdigest()
        return self.call("upload", args, data, progress=progress)

    def upload_resumable(self, local: Union[str, "os.PathLike[str]"], remote: str, *,
                         chunk: int = RESUMABLE_CHUNK, resume: bool = False,
                         overwrite: bool = False,
                         progress: Optional[Progress] = None) -> Result:
        """Uploads a local file through the resumable operations (OPS/1 §11).

        Opens an upload (``upload_open`` with the file's size and SHA-256), sends it in
        appends of ``chunk`` bytes, pipelined two deep so that the next chunk is on the
        wire while the server makes the previous one durable, then commits it. With
        ``resume=True`` it instead finds the open upload to ``remote``
        (``upload_status`` by path) and continues from the server's offset.

        If it stops part-way (an exception, Ctrl-C, a lost connection) the upload stays
        open on the server: call again with ``resume=True`` and the same file.

        Returns:
            The commit's result: ``path``, ``size``, ``sha256`` (as ``upload``'s).

        Raises:
            NotFound: ``resume`` and no open upload to ``remote``.
            ValueError: ``resume`` with a local file of another size than the upload's,
                or ``chunk`` < 1.
            InvalidArgs: at commit, when the local file is not the one the upload was
                opened with (another SHA-256).
            OpsError, ConnectionLost: as :meth:`call`; an :class:`OpsError` raised after
                the upload was opened carries its id as ``.upload``.
        """
        if chunk < 1:
            raise ValueError("chunk must be at least 1 byte")
        with open(local, "rb") as f:
            total = os.fstat(f.fileno()).st_size
            digest = hashlib.sha256()
            for block in iter(lambda: f.read(CHUNK), b""):
                digest.update(block)
            sha256 = digest.hexdigest()
            if resume:
                status = self.call("upload_status", {"path": remote})
                upload_id = str(status["upload"])
                offset = int(status["offset"])
                if "size" in status and int(status["size"]) != total:
                    raise ValueError(f"the open upload to {remote!r} is of {status['size']} "
                                     f"bytes, the local file has {total}")
                if offset > total:
                    raise ValueError(f"the server holds {offset} bytes of {remote!r}, more "
                                     f"than the local file has")
            else:
                args: Dict[str, Any] = {"path": remote, "size": total, "sha256": sha256}
                if overwrite:
                    args["overwrite"] = True
                upload_id = str(self.call("upload_open", args)["upload"])
                offset = 0
            try:
                f.seek(offset)
                sent = offset
                in_flight: Deque[int] = collections.deque()
                while sent < total or in_flight:
                    # Keep the pipe full: the next append goes out before the previous
                    # answer is read.
                    while sent < total and len(in_flight) < 2:
                        data = f.read(min(chunk, total - sent))
                        if not data:
                            raise OSError(f"{local} shrank while it was uploaded")
                        self.send("upload_append", {"upload": upload_id, "offset": sent}, data)
                        sent += len(data)
                        in_flight.append(sent)
                    expected = in_flight.popleft()
                    try:
                        answer = self.recv()
                    except OpsError:
                        # Read the answers still due, so the connection stays usable
                        # for the caller (responses come in order, §3).
                        for _ in in_flight:
                            try:
                                self.recv()
                            except OpsError:
                                pass
                        raise
                    if answer.result.get("offset") != expected:
                        raise self._protocol(f"the server acknowledged offset "
                                             f"{answer.result.get('offset')}, expected {expected}")
                    if progress is not None:
                        progress(expected, total)
                return self.call("upload_commit", {"upload": upload_id, "sha256": sha256})
            except OpsError as error:
                error.upload = upload_id  # type: ignore[attr-defined]
                raise

    def download(self, path: str, out: Optional[IO[bytes]] = None, *, offset: int = 0,
                 length: Optional[int] = None, sha256: bool = False,
                 progress: Optional[Progress] = None) -> Result:
        """Downloads a file (§5 ``download``) into ``out``, or into ``result.payload``.

        With ``sha256`` the result carries the SHA-256 of the whole remote file (§10),
        to check a file assembled from several ranges; when the whole file was read into
        ``result.payload`` it is checked here, raising ChecksumMismatch if it differs.
        """
        args: Dict[str, Any] = {"path": path}
        if offset:
            args["offset"] = offset
        if length is not None:
            args["length"] = length
        if sha256:
            args["sha256"] = True
        result = self.call("download", args, out=out, progress=progress)
        expected = result.get("sha256")
        if (sha256 and out is None and result.payload is not None and isinstance(expected, str)
                and result.get("offset", 0) == 0 and result.get("length") == result.get("size")):
            actual = hashlib.sha256(result.payload).hexdigest()
            if actual != expected:
                raise ChecksumMismatch(f"downloaded {path} has sha256 {actual}, the server's "
                                       f"is {expected}", id=result.id)
        return result

    def register(self, user: str, key: Optional[str] = None, *,
                 quota_bytes: Any = _UNSET, quota_files: Any = _UNSET) -> Result:
        """Creates a user (§5 ``register``); the result holds its key. ``quota_bytes`` and
        ``quota_files`` (§10) are an int, or None for no limit; left out, the server's
        default applies."""
        args: Dict[str, Any] = {"user": user}
        if key is not None:
            args["key"] = key
        if quota_bytes is not _UNSET:
            args["quota_bytes"] = quota_bytes
        if quota_files is not _UNSET:
            args["quota_files"] = quota_files
        return self.call("register", args)

    def usage(self) -> Result:
        """Your stored bytes and files, reserved bytes and quotas (§10 ``usage``);
        a quota is None where there is none."""
        return self.call("usage")

    def set_quota(self, user: str, *, bytes: Any = _UNSET, files: Any = _UNSET) -> Result:
        """Sets a user's quotas (§10 ``set_quota``): an int, or None for no limit; a
        quota left out stays as it was."""
        args: Dict[str, Any] = {"user": user}
        if bytes is not _UNSET:
            args["bytes"] = bytes
        if files is not _UNSET:
            args["files"] = files
        return self.call("set_quota", args)

    def unregister(self, user: str) -> Result:
        """Removes a user, its key, its connections and its files (§10 ``unregister``)."""
        return self.call("unregister", {"user": user})

    def rekey(self, user: Optional[str] = None, key: Optional[str] = None) -> Result:
        """Gives a user (by default yourself) a new key (§10 ``rekey``); the result holds
        it. Your other connections as that user are closed; this one stays."""
        args: Dict[str, Any] = {}
        if user is not None:
            args["user"] = user
        if key is not None:
            args["key"] = key
        return self.call("rekey", args)

    def send_raw(self, data: bytes) -> None:
        """Sends raw bytes, for tests that must misbehave on purpose."""
        self._send_bytes(data)

    # --- internals: requests ---

    @staticmethod
    def _encode(header: Mapping[str, Any]) -> bytes:
        try:
            text = json.dumps(header, ensure_ascii=False, allow_nan=False,
                              separators=(",", ":"))
            body = text.encode("utf-8")  # lone surrogates raise here, not at the server
        except (TypeError, ValueError) as e:
            raise ValueError(f"cannot encode the request as OPS/1 JSON: {e}") from None
        if len(body) > 0xFFFFFFFF:
            raise ValueError("request header too large")
        return struct.pack(">I", len(body)) + body

    def _send_header(self, header: Mapping[str, Any]) -> None:
        self._send_bytes(self._encode(header))

    @staticmethod
    def _payload_source(payload: Payload, payload_size: Optional[int]
                        ) -> Tuple[Any, int, Optional[IO[bytes]]]:
        """(source, size, spool to close) for a payload argument."""
        if payload is None:
            return None, 0, None
        if isinstance(payload, (bytes, bytearray, memoryview)):
            view = memoryview(payload).cast("B")
            return view, len(view), None
        if not hasattr(payload, "read"):
            raise TypeError("payload must be bytes or a binary file object")
        if isinstance(payload, io.TextIOBase):
            raise TypeError("payload file must be opened in binary mode")
        if payload_size is not None:
            if payload_size < 0:
                raise ValueError("payload_size must be >= 0")
            return payload, payload_size, None
        try:
            st = os.fstat(payload.fileno())
            if stat.S_ISREG(st.st_mode):
                return payload, max(0, st.st_size - payload.tell()), None
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            pass
        if _seekable(payload):
            start = payload.tell()
            end = payload.seek(0, io.SEEK_END)
            payload.seek(start)
            return payload, end - start, None
        # A pipe or a generator-like stream: §1 needs the size first, so spool it.
        spool = tempfile.TemporaryFile()
        shutil.copyfileobj(payload, spool, CHUNK)
        size = spool.tell()
        spool.seek(0)
        return spool, size, spool

    def _send_payload(self, source: Any, size: int, progress: Optional[Progress]) -> None:
        done = 0
        if isinstance(source, memoryview):
            while done < size:
                end = min(size, done + CHUNK)
                self._send_bytes(source[done:end])
                done = end
                if progress:
                    progress(done, size)
            return
        while done < size:
            chunk = source.read(min(CHUNK, size - done))
            if not chunk:
                # The header promised `size` bytes; the stream cannot be resynchronised.
                self._mark_broken(ConnectionLost("payload source ended early"))
                self.close()
                raise ConnectionLost(f"the payload source ended after {done} of {size} bytes; "
                                     "connection closed")
            if isinstance(chunk, str):
                raise TypeError("payload file must be opened in binary mode")
            self._send_bytes(chunk)
            done += len(chunk)
            if progress:
                progress(done, size)

    def _early_answer(self) -> Optional[OpsError]:
        """After a failed send: the error the server answered before closing, if any."""
        saved = self._broken
        self._broken = None
        self._in_pending = 0
        try:
            self._sock.settimeout(min(self.timeout or 2.0, 2.0))
            return self._parse_response(self._read_header()).error
        except (OpsError, OSError):
            return None
        finally:
            self._broken = saved or ConnectionLost("connection closed")

    # --- internals: responses ---

    def _parse_response(self, header: Dict[str, Any]) -> Response:
        payload_size = _payload_size_of(header)
        raw_id = header.get("id")
        if raw_id is not None and (not isinstance(raw_id, int) or isinstance(raw_id, bool)
                                   or raw_id < 0):
            raise self._protocol("bad \"id\" in a response")
        ok = header.get("ok")
        if not isinstance(ok, bool):
            if header.get("type") == "error":
                ok = False
            else:
                raise self._protocol("a response without \"ok\"")
        if self._pending:
            expected = self._pending[0]
            if raw_id is not None and raw_id != expected:
                raise self._protocol(f"answer to request {raw_id} while request {expected} "
                                     "was next")
            self._pending.popleft()
        response = Response(id=raw_id, ok=ok, payload_size=payload_size, header=header)
        if ok:
            result = header.get("result", {})
            if not isinstance(result, dict):
                raise self._protocol("\"result\" is not an object")
            response.result = result
        else:
            err = header.get("error") if isinstance(header.get("error"), dict) else {}
            code = str(err.get("code", "internal"))
            details = err.get("details")  # §9; anything but an object is ignored
            response.error = error_for(code, str(err.get("message", code)), raw_id,
                                       details if isinstance(details, dict) else None)
        return response

    # --- internals: bytes ---

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise ConnectionLost(f"connection unusable after an earlier failure: "
                                 f"{self._broken.message}")

    def _mark_broken(self, error: OpsError) -> None:
        if self._broken is None:
            self._broken = error

    def _protocol(self, message: str) -> ProtocolError:
        error = ProtocolError(f"bad data from the server: {message}")
        self._mark_broken(error)
        return error

    def _lost(self, message: str) -> ConnectionLost:
        error = ConnectionLost(message)
        self._mark_broken(error)
        return error

    def _send_bytes(self, data: Union[bytes, memoryview]) -> None:
        self._check_usable()
        try:
            self._sock.sendall(data)
        except socket.timeout:
            raise self._lost(f"sending stalled for {self.timeout} s") from None
        except OSError as e:
            raise self._lost(f"the server closed the connection while we were sending "
                             f"({e.strerror or e})") from None

    def _recv_into(self, view: memoryview) -> int:
        try:
            return self._sock.recv_into(view)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return 0  # the peer closed the TLS connection
        except socket.timeout:
            raise self._lost(f"no answer from the server for {self.timeout} s") from None
        except OSError as e:
            raise self._lost(f"receive failed: {e.strerror or e}") from None

    def _read_exact(self, size: int) -> bytes:
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = self._recv_into(view[got:])
            if n == 0:
                raise self._lost("the server closed the connection")
            got += n
        return bytes(buf)

    def _read_header(self) -> Dict[str, Any]:
        (length,) = struct.unpack(">I", self._read_exact(4))
        if not 2 <= length <= MAX_RESPONSE_FRAME:
            raise self._protocol(f"a frame of {length} bytes")
        body = self._read_exact(length)
        try:
            header = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise self._protocol("a header that is not UTF-8 JSON") from None
        if not isinstance(header, dict):
            raise self._protocol("a header that is not a JSON object")
        return header

    def _read_payload_to(self, out: IO[bytes], size: int,
                         progress: Optional[Progress]) -> None:
        buf = bytearray(min(CHUNK, size))
        view = memoryview(buf)
        done = 0
        while done < size:
            n = self._recv_into(view[:min(len(buf), size - done)])
            if n == 0:
                raise self._lost(f"the server closed the connection after {done} of {size} "
                                 "payload bytes")
            chunk = view[:n]
            while chunk:
                written = out.write(chunk)
                if written is None or written >= len(chunk):
                    break
                chunk = chunk[written:]
            done += n
            self._in_pending -= n
            if progress:
                progress(done, size)

    def _read_payload_bytes(self, size: int, progress: Optional[Progress]) -> bytes:
        sink = io.BytesIO()
        self._read_payload_to(sink, size, progress)
        return sink.getvalue()

    def _skip(self, size: int) -> None:
        buf = bytearray(min(CHUNK, size))
        view = memoryview(buf)
        while size:
            n = self._recv_into(view[:min(len(buf), size)])
            if n == 0:
                raise self._lost("the server closed the connection in the middle of a payload")
            size -= n
            self._in_pending -= n


def _seekable(f: Any) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False

