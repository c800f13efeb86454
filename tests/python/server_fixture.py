"""Starts the real opserver for the Python client tests, the way the C++ harness does
(tests/integration/harness/server_process.cpp): an ephemeral loopback port, a temporary
storage and state directory, the built plugins, and the admin key the server creates.

The binary and plugin directory come from OPS_SERVER_BIN / OPS_PLUGIN_DIR (set by ctest),
else build/bin/opserver and build/plugins under the repository root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
SERVER_BIN = Path(os.environ.get("OPS_SERVER_BIN", REPO / "build" / "bin" / "opserver"))
PLUGIN_DIR = Path(os.environ.get("OPS_PLUGIN_DIR", REPO / "build" / "plugins"))
# Whole lines only: a port read while its line is still being written would be cut short.
_LISTENING = re.compile(r"opserver listening on \S+:(\d+)\n")
_TLS_LISTENING = re.compile(r"opserver listening for TLS on \S+:(\d+)[ \n]")


def default_operations() -> Dict[str, Any]:
    return {
        "upload": {"allow": ["*"]},
        "download": {"allow": ["*"]},
        "list": {"allow": ["*"]},
        "register": {"allow": ["admin"]},
        "remove": {"allow": ["*"]},
        "move": {"allow": ["*"]},
        "mkdir": {"allow": ["*"]},
        "stat": {"allow": ["*"]},
    }


class ServerProcess:
    """One opserver process; use as a context manager or call stop()."""

    def __init__(self, operations: Optional[Dict[str, Any]] = None,
                 settings: Optional[Dict[str, Any]] = None,
                 args: Optional[List[str]] = None) -> None:
        if not SERVER_BIN.exists():
            raise unittest.SkipTest(f"no server binary at {SERVER_BIN} (build first)")
        self.root = Path(tempfile.mkdtemp(prefix="opspytest-"))
        ops = {"plugin_dir": str(PLUGIN_DIR), "operations": operations or default_operations()}
        (self.root / "ops.json").write_text(json.dumps(ops))
        config = {
            "listen": "127.0.0.1:0",
            "storage_dir": str(self.root / "storage"),
            "state_dir": str(self.root / "state"),
            "ops_config": str(self.root / "ops.json"),
            "io_threads": 2,
        }
        config.update(settings or {})
        (self.root / "server.json").write_text(json.dumps(config))
        self.log_path = self.root / "server.log"
        with open(self.log_path, "wb") as log, open(os.devnull, "rb") as null:
            self.proc = subprocess.Popen(
                [str(SERVER_BIN), "--config", str(self.root / "server.json"), *(args or [])],
                stdin=null, stdout=log, stderr=subprocess.STDOUT)
        self.port = self._wait_listening()

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log())
            if match:
                return int(match.group(1))
            if self.proc.poll() is not None:
                log = self.log()
                self._cleanup()
                raise RuntimeError(f"opserver exited before listening:\n{log}")
            time.sleep(0.01)
        self.stop()
        raise RuntimeError("opserver did not start listening")

    def tls_port(self, wait: float = 2.0) -> Optional[int]:
        """The TLS listener's port from the log, or None if the server logs none."""
        deadline = time.monotonic() + wait
        while True:
            match = _TLS_LISTENING.search(self.log())
            if match:
                return int(match.group(1))
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def admin_key(self) -> str:
        return (self.root / "state" / "admin.key").read_text().strip()

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
