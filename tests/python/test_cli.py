"""``python3 -m opsclient``, the command line, against the real opserver: every verb,
the OPS_* environment, and opclient's exit statuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Dict, List, Optional

import opsclient
from opsclient.__main__ import human_size, parse_server, remote
from server_fixture import ServerProcess, default_operations


def cli_operations() -> dict:
    ops = default_operations()
    ops["usage"] = {"allow": ["*"]}
    return ops


class CliTest(unittest.TestCase):
    server: ServerProcess
    key: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = ServerProcess(cli_operations())
        with opsclient.Client("127.0.0.1", cls.server.port, "admin", cls.server.admin_key,
                              timeout=30) as admin:
            cls.key = admin.register("pyuser")["key"]

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="opsclient-cli-"))
        key_file = self.dir / "pyuser.key"
        key_file.write_text(self.key + "\n")
        key_file.chmod(0o600)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OPS_")}
        # The package this test imported, wherever the subprocess runs from.
        self.env["PYTHONPATH"] = str(Path(opsclient.__file__).resolve().parents[1])
        self.env.update({"OPS_SERVER": f"127.0.0.1:{self.server.port}", "OPS_USER": "pyuser",
                         "OPS_KEY_FILE": str(key_file)})

    def run_cli(self, *args: str, stdin: bytes = b"",
                env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "opsclient", *args], input=stdin,
                              capture_output=True, cwd=self.dir, env=env or self.env,
                              timeout=60)

    def ok(self, *args: str, stdin: bytes = b"") -> str:
        r = self.run_cli(*args, stdin=stdin)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        return r.stdout.decode()

    def test_every_verb(self) -> None:
        out = self.ok("describe")
        for name in ("upload", "download", "list"):
            self.assertIn(name, out)
        self.assertIn("upload", [op["name"] for op in json.loads(
            self.ok("describe", "--json"))["operations"]])

        (self.dir / "a.txt").write_bytes(b"hello, cli\n")
        up = json.loads(self.ok("upload", "a.txt", "cli/"))
        self.assertEqual(up["path"], "cli/a.txt")
        self.assertEqual(up["size"], 11)
        json.loads(self.ok("upload", "-", "cli/big.bin", stdin=b"x" * 3000))

        listing = self.ok("ls", "cli/")  # a trailing slash as ls prints directories
        self.assertIn("a.txt", listing)
        self.assertIn("3000", listing)
        self.assertIn("2.9K", self.ok("ls", "-H", "cli"))
        self.assertIn("cli/", self.ok("ls"))
        entries = json.loads(self.ok("ls", "-R", "--json"))["entries"]
        self.assertIn("cli/a.txt", [e["name"] for e in entries])

        self.assertEqual(json.loads(self.ok("stat", "cli/a.txt"))["size"], 11)
        self.assertTrue(json.loads(self.ok("mkdir", "cli/sub/deeper/"))["created"])
        json.loads(self.ok("mv", "cli/a.txt", "cli/sub/b.txt"))

        got = json.loads(self.ok("download", "cli/sub/b.txt", "copy.txt"))
        self.assertEqual(got["size"], 11)
        self.assertEqual((self.dir / "copy.txt").read_bytes(), b"hello, cli\n")
        self.assertFalse((self.dir / "copy.txt.part").exists())
        self.assertEqual(self.run_cli("download", "cli/sub/b.txt", "-").stdout, b"hello, cli\n")

        usage = json.loads(self.ok("usage"))
        self.assertEqual(usage["user"], "pyuser")
        self.assertGreaterEqual(usage["files"], 2)

        self.assertEqual(json.loads(self.ok("rm", "-r", "cli/sub"))["removed"], 3)

    def test_download_refuses_an_existing_file_without_force(self) -> None:
        self.ok("upload", "-", "force/f.txt", stdin=b"new")
        (self.dir / "f.txt").write_bytes(b"precious")
        r = self.run_cli("download", "force/f.txt")
        self.assertEqual(r.returncode, 18)
        self.assertIn(b"--force", r.stderr)
        self.assertEqual((self.dir / "f.txt").read_bytes(), b"precious")
        self.ok("download", "force/f.txt", "--force")
        self.assertEqual((self.dir / "f.txt").read_bytes(), b"new")

    def test_exit_statuses(self) -> None:
        r = self.run_cli("stat", "no/such/file")
        self.assertEqual(r.returncode, 17, r.stderr)
        self.assertIn(b"opsclient: not_found:", r.stderr)
        self.ok("upload", "-", "dup.txt", stdin=b"1")
        self.assertEqual(self.run_cli("upload", "-", "dup.txt", stdin=b"2").returncode, 18)
        self.ok("upload", "-", "dup.txt", "--overwrite", stdin=b"2")

        env = dict(self.env)
        env.pop("OPS_KEY_FILE")
        env["OPS_KEY"] = "wrong"
        self.assertEqual(self.run_cli("ls", env=env).returncode, 4)
        env.pop("OPS_KEY")
        r = self.run_cli("ls", env=env)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"no key", r.stderr)
        # Connection options after the verb beat the environment.
        self.assertEqual(self.run_cli("ls", "--server", "127.0.0.1:1").returncode, 3)
        self.assertEqual(self.run_cli("--server", "127.0.0.1:1", "ls").returncode, 3)
        self.assertEqual(self.run_cli("frobnicate").returncode, 2)

    def test_helpers(self) -> None:
        self.assertEqual(parse_server("h:1"), ("h", 1, False))
        self.assertEqual(parse_server("tls://[::1]:9443"), ("::1", 9443, True))
        self.assertEqual(parse_server("host"), ("host", 9000, False))
        self.assertEqual(remote("docs//"), "docs")
        self.assertEqual(remote("/"), "/")
        self.assertEqual([human_size(n) for n in (500, 1536, 5 << 20, 3 << 30)],
                         ["500", "1.5K", "5.0M", "3.0G"])


if __name__ == "__main__":
    unittest.main()
