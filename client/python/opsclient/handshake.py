"""OPS/1 §2 handshake cryptography: HMAC-SHA256 proofs over the two nonces.

``proof = HMAC-SHA256(key, label || 0x00 || nonce || cnonce || user)`` with the
labels ``"ops/1 client"`` and ``"ops/1 server"``, the nonces as 32 raw bytes,
``user`` and ``key`` as UTF-8. Over TLS (§8, ``hmac-sha256-plus``) the 32-byte
channel binding ``cb`` (RFC 9266 tls-exporter) is appended to the message.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Optional, Union

PROTOCOL = "ops/1"
MECHANISM = "hmac-sha256"
MECHANISM_PLUS = "hmac-sha256-plus"
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
CHANNEL_BINDING_BYTES = 32
NONCE_BYTES = 32
CLIENT_LABEL = b"ops/1 client"
SERVER_LABEL = b"ops/1 server"

Key = Union[str, bytes]


def _bytes(value: Key) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def compute(key: Key, label: bytes, nonce: bytes, cnonce: bytes, user: str,
            cb: Optional[bytes] = None) -> bytes:
    """HMAC-SHA256(key, label || 0x00 || nonce || cnonce || user [|| cb])."""
    if len(nonce) != NONCE_BYTES or len(cnonce) != NONCE_BYTES:
        raise ValueError("nonces are 32 bytes")
    if cb is not None and len(cb) != CHANNEL_BINDING_BYTES:
        raise ValueError("the channel binding is 32 bytes")
    message = label + b"\x00" + nonce + cnonce + user.encode("utf-8") + (cb or b"")
    return hmac.new(_bytes(key), message, hashlib.sha256).digest()


def client_proof(key: Key, nonce: bytes, cnonce: bytes, user: str,
                 cb: Optional[bytes] = None) -> bytes:
    """The proof the client sends in ``auth`` (with ``cb`` for hmac-sha256-plus)."""
    return compute(key, CLIENT_LABEL, nonce, cnonce, user, cb)


def server_proof(key: Key, nonce: bytes, cnonce: bytes, user: str,
                 cb: Optional[bytes] = None) -> bytes:
    """The proof the server sends in ``welcome`` (with ``cb`` for hmac-sha256-plus)."""
    return compute(key, SERVER_LABEL, nonce, cnonce, user, cb)


def parse_nonce(text: object) -> bytes:
    """32 bytes from exactly 64 lowercase hex digits; ValueError otherwise."""
    if not isinstance(text, str) or len(text) != 2 * NONCE_BYTES:
        raise ValueError("not 64 hex digits")
    if any(c not in "0123456789abcdef" for c in text):
        raise ValueError("not lowercase hex")
    return bytes.fromhex(text)


def new_cnonce(nonce: bytes) -> bytes:
    """A fresh random client nonce, never equal to ``nonce`` (§7)."""
    while True:
        cnonce = secrets.token_bytes(NONCE_BYTES)
        if cnonce != nonce:
            return cnonce
