"""Exceptions raised by :mod:`opsclient`.

Every exception derives from :class:`OpsError`. An error answered by the server
(OPS/1 §3) raises the subclass for its code, e.g. :class:`NotFound` for
``not_found``; failures on the client's side of the wire raise
:class:`CannotConnect`, :class:`ServerProofError`, :class:`ConnectionLost` or
:class:`ProtocolError`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type


class OpsError(Exception):
    """Base class of every opsclient error.

    Attributes:
        code: the OPS/1 error code (``"not_found"``, ...) or, for failures on the
            client's side, a name of our own (``"connection_lost"``, ...).
        message: a description for people.
        id: the id of the request the server answered, when known.
        details: the error's machine-readable facts (OPS/1 §9), e.g.
            ``{"offset": 1048576}`` with a ``conflict`` of ``upload_append``; an empty
            dict when the server gave none.
    """

    code: str = "error"

    def __init__(self, message: str, *, code: Optional[str] = None,
                 id: Optional[int] = None,  # noqa: A002 - the wire's name
                 details: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.id = id
        self.details: Dict[str, Any] = dict(details) if details else {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# --- errors answered by the server, one class per OPS/1 code (§3) ---

class BadFrame(OpsError):
    """``bad_frame``: the server could not read a frame; it closes the connection."""
    code = "bad_frame"


class BadRequest(OpsError):
    """``bad_request``: the request header was malformed."""
    code = "bad_request"


class AuthFailed(OpsError):
    """``auth_failed``: the server refused the login (wrong user or key)."""
    code = "auth_failed"


class UnknownOperation(OpsError):
    """``unknown_operation``: no such operation is enabled."""
    code = "unknown_operation"


class Forbidden(OpsError):
    """``forbidden``: this user may not call the operation."""
    code = "forbidden"


class InvalidArgs(OpsError):
    """``invalid_args``: the arguments do not match the operation's schema."""
    code = "invalid_args"


class NotFound(OpsError):
    """``not_found``: no such file or directory."""
    code = "not_found"


class AlreadyExists(OpsError):
    """``already_exists``: the target exists (upload without overwrite, register)."""
    code = "already_exists"


class Conflict(OpsError):
    """``conflict``: a file where a directory is needed, or the reverse."""
    code = "conflict"


class PayloadTooLarge(OpsError):
    """``payload_too_large``: the payload exceeds the server's limit."""
    code = "payload_too_large"


class ChecksumMismatch(OpsError):
    """``checksum_mismatch``: the uploaded bytes do not match the sha256 sent."""
    code = "checksum_mismatch"


class QuotaExceeded(OpsError):
    """``quota_exceeded``: the user's storage quota is used up."""
    code = "quota_exceeded"


class Timeout(OpsError):
    """``timeout``: the server gave up waiting."""
    code = "timeout"


class Unavailable(OpsError):
    """``unavailable``: the server cannot serve this now (e.g. no space left)."""
    code = "unavailable"


class Internal(OpsError):
    """``internal``: the server failed; the message stays generic."""
    code = "internal"


# --- failures on the client's side ---

class CannotConnect(OpsError):
    """The server could not be reached (unknown host, refused, timed out)."""
    code = "connect_failed"


class ServerProofError(OpsError):
    """The server's welcome proof was wrong: it does not know the user's key.

    The client refuses to go on with such a server (OPS/1 §2.3).
    """
    code = "server_proof_wrong"


class ConnectionLost(OpsError):
    """The connection broke: closed, reset, or no progress within the timeout.

    The client is unusable afterwards.
    """
    code = "connection_lost"


class ProtocolError(ConnectionLost):
    """The server sent something OPS/1 does not allow. The client is unusable."""
    code = "protocol_error"


#: The exception class for each OPS/1 error code.
ERRORS: Dict[str, Type[OpsError]] = {
    cls.code: cls
    for cls in (BadFrame, BadRequest, AuthFailed, UnknownOperation, Forbidden, InvalidArgs,
                NotFound, AlreadyExists, Conflict, PayloadTooLarge, ChecksumMismatch,
                QuotaExceeded, Timeout, Unavailable, Internal)
}


def error_for(code: str, message: str, id: Optional[int] = None,  # noqa: A002
              details: Optional[Dict[str, Any]] = None) -> OpsError:
    """Returns the exception for an error the server answered.

    An unknown code (from a newer server) gives a plain :class:`OpsError` that keeps it.
    """
    cls = ERRORS.get(code)
    if cls is None:
        return OpsError(message, code=code or "internal", id=id, details=details)
    return cls(message, id=id, details=details)
