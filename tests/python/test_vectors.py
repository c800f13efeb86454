"""The Python client's handshake against the fixed vectors shared with the C++ tests
(tests/vectors/handshake.json), and its handshake outcomes against a scripted fake
server: no opserver needed."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import unittest
from pathlib import Path
from typing import Any, Callable, Dict
from unittest import mock

import opsclient
from opsclient import handshake

VECTORS = Path(os.environ.get("OPS_VECTORS_DIR",
                              Path(__file__).resolve().parents[1] / "vectors")) / "handshake.json"


def load_vectors() -> list:
    return json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]


def send_frame(conn: socket.socket, header: Dict[str, Any]) -> None:
    body = json.dumps(header).encode()
    conn.sendall(struct.pack(">I", len(body)) + body)


def recv_frame(conn: socket.socket) -> Dict[str, Any]:
    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data
    (length,) = struct.unpack(">I", exact(4))
    return json.loads(exact(length))


class FakeServer:
    """Accepts one connection on 127.0.0.1 and runs `script` on it in a thread."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.error: BaseException | None = None

        def run() -> None:
            conn, _ = self.sock.accept()
            with conn:
                try:
                    script(conn)
                except BaseException as e:  # reported by the test
                    self.error = e
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.sock.close()
        if self.error is not None and not isinstance(self.error, EOFError):
            raise self.error


class VectorTests(unittest.TestCase):
    def test_vectors_file_present(self) -> None:
        self.assertGreaterEqual(len(load_vectors()), 4)

    def test_proofs_match_vectors(self) -> None:
        for v in load_vectors():
            with self.subTest(v["name"]):
                nonce, cnonce = bytes.fromhex(v["nonce"]), bytes.fromhex(v["cnonce"])
                self.assertEqual(handshake.client_proof(v["key"], nonce, cnonce, v["user"]).hex(),
                                 v["client_proof"])
                self.assertEqual(handshake.server_proof(v["key"], nonce, cnonce, v["user"]).hex(),
                                 v["server_proof"])
                # bytes keys are the UTF-8 of the string
                self.assertEqual(
                    handshake.client_proof(v["key"].encode(), nonce, cnonce, v["user"]).hex(),
                    v["client_proof"])

    def test_plus_proofs_match_vectors(self) -> None:
        """§8: hmac-sha256-plus appends the 32-byte channel binding to both proofs."""
        vectors = json.loads(VECTORS.read_text(encoding="utf-8"))["plus_vectors"]
        self.assertGreaterEqual(len(vectors), 3)
        for v in vectors:
            with self.subTest(v["name"]):
                nonce, cnonce = bytes.fromhex(v["nonce"]), bytes.fromhex(v["cnonce"])
                cb = bytes.fromhex(v["cb"])
                self.assertEqual(
                    handshake.client_proof(v["key"], nonce, cnonce, v["user"], cb).hex(),
                    v["client_proof"])
                self.assertEqual(
                    handshake.server_proof(v["key"], nonce, cnonce, v["user"], cb).hex(),
                    v["server_proof"])
                self.assertNotEqual(
                    handshake.client_proof(v["key"], nonce, cnonce, v["user"]).hex(),
                    v["client_proof"])
                with self.assertRaises(ValueError):
                    handshake.client_proof(v["key"], nonce, cnonce, v["user"], cb[:31])

    def test_client_handshake_sends_and_checks_vector_proofs(self) -> None:
        """A full handshake with the vector's nonces: the auth frame carries exactly the
        vector's client proof, and the vector's server proof is accepted."""
        for v in load_vectors():
            with self.subTest(v["name"]):
                seen: Dict[str, Any] = {}

                def script(conn: socket.socket) -> None:
                    send_frame(conn, {"type": "challenge", "protocol": "ops/1",
                                      "nonce": v["nonce"], "mechanisms": ["hmac-sha256"]})
                    seen.update(recv_frame(conn))
                    send_frame(conn, {"type": "welcome", "user": v["user"],
                                      "proof": v["server_proof"], "server": "opserver/fake"})

                server = FakeServer(script)
                with mock.patch.object(handshake, "new_cnonce",
                                       return_value=bytes.fromhex(v["cnonce"])):
                    with opsclient.Client("127.0.0.1", server.port, v["user"], v["key"],
                                          timeout=5) as c:
                        self.assertEqual(c.server_version, "opserver/fake")
                server.close()
                self.assertEqual(seen["type"], "auth")
                self.assertEqual(seen["mechanism"], "hmac-sha256")
                self.assertEqual(seen["user"], v["user"])
                self.assertEqual(seen["cnonce"], v["cnonce"])
                self.assertEqual(seen["proof"], v["client_proof"])

    def test_cnonce_never_equals_nonce(self) -> None:
        nonce = bytes(32)
        with mock.patch("secrets.token_bytes", side_effect=[nonce, nonce, b"\x01" * 32]):
            self.assertEqual(handshake.new_cnonce(nonce), b"\x01" * 32)


class HandshakeOutcomeTests(unittest.TestCase):
    def handshake_with(self, reply: Callable[[Dict[str, Any], str], Dict[str, Any]],
                       challenge: Dict[str, Any] | None = None) -> None:
        nonce = "ab" * 32

        def script(conn: socket.socket) -> None:
            send_frame(conn, challenge or {"type": "challenge", "protocol": "ops/1",
                                           "nonce": nonce, "mechanisms": ["hmac-sha256"]})
            auth = recv_frame(conn)
            send_frame(conn, reply(auth, nonce))
            try:
                conn.recv(1)
            except OSError:
                pass
        server = FakeServer(script)
        try:
            opsclient.Client("127.0.0.1", server.port, "alice", "k", timeout=5).close()
        finally:
            server.close()

    def test_wrong_server_proof_is_refused(self) -> None:
        def reply(auth: Dict[str, Any], nonce: str) -> Dict[str, Any]:
            wrong = handshake.server_proof("not the key", bytes.fromhex(nonce),
                                           bytes.fromhex(auth["cnonce"]), "alice")
            return {"type": "welcome", "user": "alice", "proof": wrong.hex()}
        with self.assertRaises(opsclient.ServerProofError):
            self.handshake_with(reply)

    def test_right_server_proof_is_accepted(self) -> None:
        def reply(auth: Dict[str, Any], nonce: str) -> Dict[str, Any]:
            good = handshake.server_proof("k", bytes.fromhex(nonce),
                                          bytes.fromhex(auth["cnonce"]), "alice")
            return {"type": "welcome", "user": "alice", "proof": good.hex()}
        self.handshake_with(reply)

    def test_auth_failed(self) -> None:
        def reply(auth: Dict[str, Any], nonce: str) -> Dict[str, Any]:
            return {"type": "error",
                    "error": {"code": "auth_failed", "message": "authentication failed"}}
        with self.assertRaises(opsclient.AuthFailed):
            self.handshake_with(reply)

    def test_bad_challenges(self) -> None:
        for challenge in (
            {"type": "challenge", "protocol": "ops/2", "nonce": "ab" * 32,
             "mechanisms": ["hmac-sha256"]},
            {"type": "challenge", "protocol": "ops/1", "nonce": "AB" * 32,
             "mechanisms": ["hmac-sha256"]},
            {"type": "challenge", "protocol": "ops/1", "nonce": "ab",
             "mechanisms": ["hmac-sha256"]},
            {"type": "challenge", "protocol": "ops/1", "nonce": "ab" * 32, "mechanisms": []},
            {"type": "welcome"},
        ):
            with self.subTest(challenge=challenge):
                def script(conn: socket.socket, challenge: Dict[str, Any] = challenge) -> None:
                    send_frame(conn, challenge)
                    try:
                        conn.recv(1)
                    except OSError:
                        pass
                server = FakeServer(script)
                try:
                    with self.assertRaises(opsclient.ProtocolError):
                        opsclient.Client("127.0.0.1", server.port, "alice", "k", timeout=5)
                finally:
                    server.close()

    def test_unreachable(self) -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with self.assertRaises(opsclient.CannotConnect):
            opsclient.Client("127.0.0.1", port, "alice", "k", timeout=5)


class ErrorClassTests(unittest.TestCase):
    def test_one_class_per_code(self) -> None:
        codes = ["bad_frame", "bad_request", "auth_failed", "unknown_operation", "forbidden",
                 "invalid_args", "not_found", "already_exists", "conflict", "payload_too_large",
                 "checksum_mismatch", "quota_exceeded", "timeout", "unavailable", "internal"]
        self.assertEqual(sorted(opsclient.ERRORS), sorted(codes))
        classes = set()
        for code in codes:
            error = opsclient.error_for(code, "m", 7)
            self.assertIsInstance(error, opsclient.OpsError)
            self.assertEqual(error.code, code)
            self.assertEqual(error.id, 7)
            classes.add(type(error))
        self.assertEqual(len(classes), len(codes))
        self.assertIs(type(opsclient.error_for("not_found", "")), opsclient.NotFound)
        unknown = opsclient.error_for("brand_new", "x")
        self.assertIs(type(unknown), opsclient.OpsError)
        self.assertEqual(unknown.code, "brand_new")
        for cls in (opsclient.ServerProofError, opsclient.ConnectionLost,
                    opsclient.CannotConnect, opsclient.ProtocolError):
            self.assertTrue(issubclass(cls, opsclient.OpsError))


if __name__ == "__main__":
    unittest.main()
