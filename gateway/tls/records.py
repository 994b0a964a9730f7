"""Selector for the TLS record I/O twin (see :mod:`gateway._impl`), and the one place that
reaches into pyOpenSSL's internals.

``gateway._ext.tls_records`` (Cython) by default, ``gateway._pure.tls_records`` when
``GATEWAY_PURE_PYTHON=1``; no silent fallback.  :func:`records_for` builds the
:class:`~gateway._pure.tls_records.OpenSSLHandles` of a memory-BIO connection: the C
addresses of its ``SSL`` object and outgoing ``BIO`` (pyOpenSSL keeps them in the private
``_ssl`` and ``_from_ssl``; there is no public accessor) and of the OpenSSL functions that
pyOpenSSL's cffi bindings resolved — so the compiled twin calls the very OpenSSL pyOpenSSL
loaded and the process never links a second one.

:func:`renew_bios` gives a connection fresh memory BIOs: OpenSSL's memory BIO never gives
back the buffer it grew to (about 3 KB after a handshake, 64 KiB after one large read), and
tens of thousands of idle connections would otherwise keep those buffers forever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from gateway._impl import load
from gateway._pure.tls_records import MAX_READ, RECORD_PLAINTEXT, OpenSSLHandles

if TYPE_CHECKING:
    from gateway._pure.tls_records import Records
else:
    Records = load("tls_records").Records

__all__ = [
    "MAX_READ",
    "RECORD_PLAINTEXT",
    "OpenSSLHandles",
    "Records",
    "handles_for",
    "records_for",
    "renew_bios",
]


def _address(cdata: object) -> int:
    return int(_ffi.cast("uintptr_t", cdata))


# Resolved once: the functions live as long as the process.
_SSL_READ = _address(_lib.SSL_read)
_SSL_WRITE = _address(_lib.SSL_write)
_SSL_GET_ERROR = _address(_lib.SSL_get_error)
_BIO_READ = _address(_lib.BIO_read)
_BIO_GET_MEM_DATA = _address(_lib.BIO_get_mem_data)


def handles_for(connection: SSL.Connection) -> OpenSSLHandles:
    """What either twin needs of ``connection``, which must be in memory-BIO mode
    (``SSL.Connection(context, None)``)."""
    wbio = getattr(connection, "_from_ssl", None)
    if wbio is None:
        raise ValueError("the connection has no memory BIOs (created with a socket?)")
    return OpenSSLHandles(
        ssl=_address(connection._ssl),
        wbio=_address(wbio),
        ssl_read=_SSL_READ,
        ssl_write=_SSL_WRITE,
        ssl_get_error=_SSL_GET_ERROR,
        bio_read=_BIO_READ,
        bio_get_mem_data=_BIO_GET_MEM_DATA,
        recv=connection.recv,
        send=connection.send,
        bio_read_method=connection.bio_read,
        want_read=SSL.WantReadError,
    )


def records_for(connection: SSL.Connection) -> Records:
    """The selected twin's record I/O of ``connection`` (memory-BIO mode).  It keeps the
    connection's methods, and so the connection, alive."""
    return Records(handles_for(connection))


def _buffered(bio: object) -> int:
    return int(_lib.BIO_get_mem_data(bio, _ffi.NULL))


def renew_bios(connection: SSL.Connection) -> bool:
    """Replace ``connection``'s memory BIOs with fresh, empty ones, if both are empty now
    (returns whether it did).  OpenSSL frees the old ones.  The outgoing BIO's address
    changes: rebuild the connection's :class:`Records` afterwards (:func:`records_for`)."""
    into = connection._into_ssl
    out = connection._from_ssl
    if into is None or out is None:
        raise ValueError("the connection has no memory BIOs (created with a socket?)")
    if _buffered(into) or _buffered(out):
        return False
    fresh_in = _lib.BIO_new(_lib.BIO_s_mem())
    fresh_out = _lib.BIO_new(_lib.BIO_s_mem())
    if fresh_in == _ffi.NULL or fresh_out == _ffi.NULL:
        for bio in (fresh_in, fresh_out):
            if bio != _ffi.NULL:
                _lib.BIO_free(bio)
        raise MemoryError("BIO_new failed")
    _lib.SSL_set_bio(connection._ssl, fresh_in, fresh_out)  # frees the old pair
    connection._into_ssl = fresh_in
    connection._from_ssl = fresh_out
    return True
