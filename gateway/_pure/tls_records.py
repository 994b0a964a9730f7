"""TLS record I/O over one connection's memory BIOs: the pure-Python twin of
``ext/tls_records.pyx``.

:class:`gateway.tls.stream.TLSStream` moves ciphertext between the transport and OpenSSL's
memory BIOs (its "Theory of operation").  Between those moves, three loops turn records
into plaintext and back, and they run once per record, so on a device fleet that sends one
PUBLISH per TLS record (paho, murano-client, mosquitto_pub) they are the hot path:

* :meth:`Records.read` — the plaintext of *every* record the incoming BIO holds (up to
  ``max_bytes``), not one record per call: one read of the transport, one wake-up of the
  protocol above, however many records arrived together;
* :meth:`Records.write` — all of a ``send_all``'s plaintext, cut into as few records as
  the record size allows (16 KiB of plaintext each, RFC 8446 §5.1);
* :meth:`Records.drain` — every byte of ciphertext OpenSSL produced, in one piece.

This twin calls pyOpenSSL's public methods (one Python call per record); the compiled twin
calls the same OpenSSL functions through the C function pointers of the cffi bindings that
loaded OpenSSL, so the process never links a second OpenSSL.  Both take the same
:class:`OpenSSLHandles`, built by ``gateway/tls/records.py`` (the only module that knows
pyOpenSSL's internals), and both leave error translation to pyOpenSSL: when nothing could
be read or written for any reason but "more ciphertext needed", the call is repeated through
pyOpenSSL's own method, which raises exactly what it always raises (``ZeroReturnError`` at a
close_notify, ``SysCallError`` at an EOF without one, ``Error`` otherwise).  Those
conditions are sticky in OpenSSL, so the repeat sees the same one.

Sans-IO: no imports of OpenSSL, sockets or trio here; everything arrives in the handles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["MAX_READ", "RECORD_PLAINTEXT", "OpenSSLHandles", "Records"]

RECORD_PLAINTEXT = 16384  # the most plaintext one TLS record carries (RFC 8446 §5.1)
MAX_READ = 65536  # the most plaintext one read returns (a caller may ask for less)


class OpenSSLHandles(msgspec.Struct, frozen=True):
    """What the twins need of one pyOpenSSL ``Connection`` in memory-BIO mode.

    The integers are C addresses: ``ssl`` (``SSL *``), ``wbio`` (the ``BIO *`` OpenSSL
    writes ciphertext to), and the functions ``SSL_read``, ``SSL_write``,
    ``SSL_get_error``, ``BIO_read`` and ``BIO_get_mem_data`` of the OpenSSL that pyOpenSSL
    loaded.  The callables are the connection's own methods (``recv``, ``send``,
    ``bio_read``) and ``want_read`` is ``OpenSSL.SSL.WantReadError``.
    """

    ssl: int
    wbio: int
    ssl_read: int
    ssl_write: int
    ssl_get_error: int
    bio_read: int
    bio_get_mem_data: int
    recv: Callable[[int], bytes]
    send: Callable[[Any], int]
    bio_read_method: Callable[[int], bytes]
    want_read: type[Exception]


class Records:
    """Record I/O of one connection (see the module docstring).  Not thread-safe; used
    by the connection's Trio tasks only, one direction per task."""

    __slots__ = ("_bio_read", "_recv", "_send", "_want_read")

    def __init__(self, handles: OpenSSLHandles) -> None:
        self._recv = handles.recv
        self._send = handles.send
        self._bio_read = handles.bio_read_method
        self._want_read = handles.want_read

    def read(self, max_bytes: int) -> bytes | None:
        """The plaintext of every record available, up to ``max_bytes`` (at most
        ``MAX_READ``); ``None`` when OpenSSL needs more ciphertext before it can return
        anything.  Raises pyOpenSSL's errors when nothing can be read (see above)."""
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        limit = min(max_bytes, MAX_READ)
        parts: list[bytes] = []
        got = 0
        want_read = self._want_read
        while got < limit:
            try:
                data = self._recv(limit - got)
            except want_read:
                break
            except Exception:
                if got:
                    break  # the condition recurs on the next call, after this data
                raise
            parts.append(data)
            got += len(data)
        if not got:
            return None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt all of ``data`` into the outgoing BIO, ``RECORD_PLAINTEXT`` bytes per
        record.  Raises pyOpenSSL's errors."""
        view = memoryview(data)
        total = view.nbytes
        offset = 0
        while offset < total:
            offset += self._send(view[offset : offset + RECORD_PLAINTEXT])

    def drain(self) -> bytes:
        """All ciphertext waiting in the outgoing BIO (``b""`` when there is none)."""
        parts: list[bytes] = []
        while True:
            try:
                parts.append(self._bio_read(MAX_READ))
            except self._want_read:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)
