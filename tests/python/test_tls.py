"""The Python client over TLS (§8): the channel binding it computes (ctypes, see
opsclient/tls.py) against a scripted TLS server that computes its own, the refusals
(no binding offered, untrusted certificate, a relay), and the real opserver's TLS
listener once the server has one (skipped, with the reason, before)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import tempfile
import threading
import unittest
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import opsclient
from opsclient import handshake, tls

from server_fixture import ServerProcess
from test_vectors import recv_frame, send_frame

KEY = "the key of alice"


def make_cert(directory: Path, name: str) -> tuple:
    """A self-signed certificate for 127.0.0.1 and localhost (the openssl CLI)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", f"/CN={name}", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


class FakeTlsServer:
    """Accepts one TLS connection and runs the OPS/1 login on it, checking the client's
    proof with the server's own channel binding (or offering plain hmac-sha256 only)."""

    def __init__(self, cert: Path, key: Path, binding: bool = True) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_3
        self.context.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.binding = binding
        self.seen: Dict[str, Any] = {}
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            raw, _ = self.sock.accept()
            with self.context.wrap_socket(raw, server_side=True) as conn:
                cb = tls.channel_binding(conn) if self.binding else None
                nonce = os.urandom(32)
                mech = handshake.MECHANISM_PLUS if cb else handshake.MECHANISM
                send_frame(conn, {"type": "challenge", "protocol": "ops/1", "nonce": nonce.hex(),
                                  "mechanisms": [mech]})
                auth = recv_frame(conn)
                self.seen.update(auth)
                cnonce = bytes.fromhex(auth["cnonce"])
                good = handshake.client_proof(KEY, nonce, cnonce, "alice", cb).hex()
                if auth["mechanism"] != mech or auth["proof"] != good:
                    self.seen["outcome"] = "auth_failed"
                    send_frame(conn, {"type": "error", "error": {
                        "code": "auth_failed", "message": "authentication failed"}})
                    return
                self.seen["outcome"] = "welcome"
                proof = handshake.server_proof(KEY, nonce, cnonce, "alice", cb)
                send_frame(conn, {"type": "welcome", "user": "alice", "proof": proof.hex(),
                                  "server": "opserver/fake-tls"})
                try:
                    conn.recv(1)
                except (OSError, ssl.SSLError):
                    pass
        except (EOFError, ssl.SSLError, OSError) as e:
            self.seen.setdefault("outcome", f"closed: {e}")
        except BaseException as e:  # reported by the test
            self.error = e

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.sock.close()
        if self.error is not None:
            raise self.error


class TlsRelay:
    """Terminates TLS with its own (trusted) certificate and re-originates TLS to
    `target`: what a man in the middle with a certificate the client trusts does."""

    def __init__(self, cert: Path, key: Path, target_port: int, target_ca: Path) -> None:
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_context.load_cert_chain(cert, key)
        self.client_context = ssl.create_default_context(cafile=str(target_ca))
        self.target_port = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            raw, _ = self.sock.accept()
            front = self.server_context.wrap_socket(raw, server_side=True)
            back = self.client_context.wrap_socket(
                socket.create_connection(("127.0.0.1", self.target_port)),
                server_hostname="127.0.0.1")
        except (OSError, ssl.SSLError):
            return

        def pump(src: ssl.SSLSocket, dst: ssl.SSLSocket) -> None:
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except (OSError, ssl.SSLError):
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        # Reads and writes of one SSLSocket from two threads: fine for this short exchange
        # (the GIL serialises the ssl module's calls into OpenSSL).
        t = threading.Thread(target=pump, args=(back, front), daemon=True)
        t.start()
        pump(front, back)
        t.join(timeout=10)
        front.close()
        back.close()

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.sock.close()


class TlsClientTest(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name)
        self.cert, self.key = make_cert(self.path, "server")

    def tearDown(self) -> None:
        self.dir.cleanup()

    def connect(self, port: int, **kwargs: Any) -> opsclient.Client:
        kwargs.setdefault("ca", str(self.cert))
        return opsclient.Client("127.0.0.1", port, "alice", KEY, timeout=5, tls=True, **kwargs)

    def test_plus_login_uses_the_same_binding_on_both_sides(self) -> None:
        server = FakeTlsServer(self.cert, self.key)
        with self.connect(server.port) as c:
            self.assertTrue(c.channel_bound)
            self.assertEqual(c.tls_version, "TLSv1.3")
            self.assertEqual(c.server_version, "opserver/fake-tls")
        server.close()
        self.assertEqual(server.seen["mechanism"], "hmac-sha256-plus")
        self.assertEqual(server.seen["outcome"], "welcome")

    def test_no_binding_offered_is_refused_unless_allowed(self) -> None:
        server = FakeTlsServer(self.cert, self.key, binding=False)
        with self.assertRaises(opsclient.AuthFailed) as e:
            self.connect(server.port)
        self.assertIn("hmac-sha256-plus", str(e.exception))
        server.close()
        self.assertNotIn("mechanism", server.seen)  # nothing was sent

        server = FakeTlsServer(self.cert, self.key, binding=False)
        with self.connect(server.port, insecure_no_binding=True) as c:
            self.assertFalse(c.channel_bound)
        server.close()
        self.assertEqual(server.seen["mechanism"], "hmac-sha256")
        self.assertEqual(server.seen["outcome"], "welcome")

    def test_untrusted_certificate(self) -> None:
        other, _ = make_cert(self.path, "other")
        server = FakeTlsServer(self.cert, self.key)
        with self.assertRaises(opsclient.CannotConnect) as e:
            self.connect(server.port, ca=str(other))
        self.assertIn("not trusted", str(e.exception))
        server.close()

    def test_relay_with_a_trusted_certificate_fails_the_login(self) -> None:
        server = FakeTlsServer(self.cert, self.key)
        relay_cert, relay_key = make_cert(self.path, "relay")
        relay = TlsRelay(relay_cert, relay_key, server.port, self.cert)
        with self.assertRaises(opsclient.AuthFailed):
            self.connect(relay.port, ca=str(relay_cert))
        relay.close()
        server.close()
        # The relay passed the login on; the server saw a proof for another binding.
        self.assertEqual(server.seen["mechanism"], "hmac-sha256-plus")
        self.assertEqual(server.seen["outcome"], "auth_failed")

    def test_tls_options_need_tls(self) -> None:
        with self.assertRaises(ValueError):
            opsclient.Client("127.0.0.1", 1, "alice", KEY, ca="x.pem")


class RealServerTlsTest(unittest.TestCase):
    """Against the real opserver, started with --tls-listen. Skipped while the server
    does not log a TLS listener (before the TLS listener is wired into the server)."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.dir = tempfile.TemporaryDirectory()
        cls.cert, cls.key = make_cert(Path(cls.dir.name), "server")
        cls.server = ServerProcess(args=["--tls-listen", "127.0.0.1:0", "--tls-cert",
                                         str(cls.cert), "--tls-key", str(cls.key)])
        cls.tls_port = cls.server.tls_port()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()
        cls.dir.cleanup()

    def setUp(self) -> None:
        if self.tls_port is None:
            self.skipTest("the server does not log a TLS listener yet ('opserver listening for "
                          "TLS on ...'): core/net/tls_listener.hpp is not wired into server.cpp")

    def test_login_upload_download_over_tls(self) -> None:
        with opsclient.Client("127.0.0.1", self.tls_port, "admin", self.server.admin_key,
                              timeout=10, tls=True, ca=str(self.cert)) as c:
            self.assertTrue(c.channel_bound)
            data = os.urandom(3 << 20)
            c.call("upload", {"path": "tls/blob.bin"}, payload=data)
            self.assertEqual(c.call("download", {"path": "tls/blob.bin"}).payload, data)
            names = [e["name"] for e in c.call("list", {"path": "tls"})["entries"]]
            self.assertEqual(names, ["blob.bin"])

    def test_plain_listener_still_plain(self) -> None:
        with opsclient.Client("127.0.0.1", self.server.port, "admin", self.server.admin_key,
                              timeout=10) as c:
            self.assertFalse(c.channel_bound)
            self.assertIsNone(c.tls_version)


if __name__ == "__main__":
    unittest.main()
