"""TLS for the OPS/1 client (§8): the standard library's ssl, plus the one thing it lacks,
the RFC 9266 ``tls-exporter`` channel binding.

Python's ssl module has no keying-material exporter, so :func:`channel_binding` calls
OpenSSL's ``SSL_export_keying_material`` through ctypes on the ``SSL*`` of the
:class:`ssl.SSLSocket` itself, in the very libssl the interpreter's ``_ssl`` module uses.
Everything else (certificate and host name checks, I/O) stays with the ssl module.

The ``SSL*`` sits in CPython's private ``PySSLSocket`` struct right after the object
header and a weak reference; the field after it is the context. Before the pointer is
used, the layout is confirmed: the context field must be the very object
``sslobj.context`` returns, and OpenSSL must report the socket's own descriptor for the
``SSL*``. Anything unexpected raises :class:`ChannelBindingUnavailable` instead of
guessing. (pyOpenSSL has ``export_keying_material``, but would replace the ssl module and
its host name checks for this one call; see the README.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ssl
from typing import Optional

EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
CHANNEL_BINDING_BYTES = 32


class ChannelBindingUnavailable(RuntimeError):
    """The channel binding could not be computed on this Python."""


_lib: Optional[ctypes.CDLL] = None


def _libssl() -> ctypes.CDLL:
    """The libssl that the ssl module itself is linked against."""
    global _lib
    if _lib is not None:
        return _lib
    candidates = []
    try:
        import _ssl  # the extension module: dlsym on it also searches its libssl
        if getattr(_ssl, "__file__", None):
            candidates.append(_ssl.__file__)
    except ImportError:  # pragma: no cover
        pass
    candidates.append(None)  # _ssl built into the interpreter: the global namespace
    found = ctypes.util.find_library("ssl")
    if found:
        candidates.append(found)
    for candidate in candidates:
        try:
            lib = ctypes.CDLL(candidate)
            version = lib.OpenSSL_version_num
            lib.SSL_export_keying_material  # noqa: B018 (present?)
            lib.SSL_get_fd  # noqa: B018
        except (OSError, AttributeError):
            continue
        version.restype = ctypes.c_ulong
        if version() != ssl.OPENSSL_VERSION_NUMBER:
            continue  # another libssl than the one holding our SSL*
        lib.SSL_export_keying_material.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
            ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
        lib.SSL_export_keying_material.restype = ctypes.c_int
        lib.SSL_get_fd.argtypes = [ctypes.c_void_p]
        lib.SSL_get_fd.restype = ctypes.c_int
        lib.SSL_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        lib.SSL_ctrl.restype = ctypes.c_long
        _lib = lib
        return lib
    raise ChannelBindingUnavailable(
        f"cannot find the libssl of Python's ssl module ({ssl.OPENSSL_VERSION})")


def _ssl_pointer(sock: ssl.SSLSocket) -> int:
    """The OpenSSL ``SSL*`` of an SSLSocket, after checking CPython's struct layout."""
    sslobj = getattr(sock, "_sslobj", None)
    if sslobj is None:
        raise ChannelBindingUnavailable("the socket has no TLS connection")
    pointer = ctypes.sizeof(ctypes.c_void_p)
    base = id(sslobj) + object.__basicsize__  # past PyObject_HEAD
    # struct PySSLSocket { PyObject_HEAD; PyObject *Socket; SSL *ssl; PySSLContext *ctx; ...}
    ctx_field = ctypes.c_void_p.from_address(base + 2 * pointer).value
    if ctx_field != id(sslobj.context):
        raise ChannelBindingUnavailable(
            "unexpected layout of Python's SSL socket object; cannot reach OpenSSL")
    ssl_ptr = ctypes.c_void_p.from_address(base + pointer).value
    if not ssl_ptr or _libssl().SSL_get_fd(ssl_ptr) != sock.fileno():
        raise ChannelBindingUnavailable("cannot reach the OpenSSL connection of the socket")
    return ssl_ptr


_SSL_CTRL_GET_EXTMS_SUPPORT = 122  # SSL_get_extms_support() is this SSL_ctrl() call


def channel_binding(sock: ssl.SSLSocket) -> bytes:
    """RFC 9266 tls-exporter: 32 bytes of ``EXPORTER-Channel-Binding`` with an empty
    context (``use_context`` = 1), once the TLS handshake is done. Under TLS 1.2 only with
    the extended master secret (RFC 7627), as RFC 9266 requires."""
    lib = _libssl()
    ssl_ptr = _ssl_pointer(sock)
    if sock.version() != "TLSv1.3" and lib.SSL_ctrl(ssl_ptr, _SSL_CTRL_GET_EXTMS_SUPPORT, 0,
                                                    None) != 1:
        raise ChannelBindingUnavailable("TLS 1.2 without the extended master secret")
    out = ctypes.create_string_buffer(CHANNEL_BINDING_BYTES)
    ok = lib.SSL_export_keying_material(ssl_ptr, out, CHANNEL_BINDING_BYTES,
                                        EXPORTER_LABEL, len(EXPORTER_LABEL), b"", 0, 1)
    if ok != 1:
        raise ChannelBindingUnavailable("OpenSSL could not export the channel binding")
    return out.raw


def client_context(ca: Optional[str] = None, cert: Optional[str] = None,
                   cert_key: Optional[str] = None, allow_tls12: bool = False) -> ssl.SSLContext:
    """A client context: the server's certificate checked against ``ca`` (a PEM file) or
    the system's store, its name checked, TLS 1.3 (or 1.2 with ``allow_tls12``), no
    compression or renegotiation; ``cert``/``cert_key`` for mutual TLS."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2 if allow_tls12 else ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    # The server closes without close_notify; OPS/1's lengths tell a cut frame anyway.
    context.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    if cert:
        context.load_cert_chain(cert, cert_key)
    return context
