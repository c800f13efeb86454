"""opsclient: a Python client for opserver's OPS/1 protocol (standard library only).

Example::

    import opsclient

    with opsclient.Client("127.0.0.1", 9000, "alice", key) as c:
        c.call("upload", {"path": "a.txt"}, payload=b"hello")
        print(c.call("download", {"path": "a.txt"}).payload)

Pipelining::

    ids = [c.send("list", {"path": p}) for p in ("a", "b")]
    answers = [c.recv() for _ in ids]      # in the order sent (OPS/1 §3)
"""

from .client import CHUNK, Client, Payload, Progress, Response, Result
from .errors import (ERRORS, AlreadyExists, AuthFailed, BadFrame, BadRequest, CannotConnect,
                     ChecksumMismatch, Conflict, ConnectionLost, Forbidden, Internal,
                     InvalidArgs, NotFound, OpsError, PayloadTooLarge, ProtocolError,
                     QuotaExceeded, ServerProofError, Timeout, Unavailable, UnknownOperation,
                     error_for)
from .handshake import client_proof, server_proof

__version__ = "0.1.0"

__all__ = [
    "Client", "Response", "Result", "Payload", "Progress", "CHUNK",
    "OpsError", "BadFrame", "BadRequest", "AuthFailed", "UnknownOperation", "Forbidden",
    "InvalidArgs", "NotFound", "AlreadyExists", "Conflict", "PayloadTooLarge",
    "ChecksumMismatch", "QuotaExceeded", "Timeout", "Unavailable", "Internal",
    "CannotConnect", "ServerProofError", "ConnectionLost", "ProtocolError",
    "ERRORS", "error_for", "client_proof", "server_proof",
]
