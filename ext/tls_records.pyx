# cython: language_level=3
"""TLS record I/O over one connection's memory BIOs: the compiled twin of
``gateway/_pure/tls_records.py``.

Read the pure twin's docstring for the contract.  This module runs the per-record loops in
C: ``SSL_read`` record after record into one scratch buffer, ``SSL_write`` 16 KiB at a time,
one ``BIO_read`` for all the ciphertext.  The OpenSSL functions are called through the C
addresses that pyOpenSSL's cffi bindings resolved (``OpenSSLHandles``), so the functions
and the ``SSL`` object belong to the one OpenSSL the process already loaded; this module
links none.  Errors are not translated here: when a call fails for any reason but "more
ciphertext needed", it is repeated through pyOpenSSL's own method, which raises its usual
exception (the conditions are sticky in OpenSSL).

Bounds are explicit: every ``SSL_read`` gets at most what is left of the scratch buffer,
every ``SSL_write`` at most one record, the ``BIO_read`` exactly the pending length.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uintptr_t

from gateway._pure.tls_records import MAX_READ, RECORD_PLAINTEXT, OpenSSLHandles

__all__ = ["MAX_READ", "RECORD_PLAINTEXT", "OpenSSLHandles", "Records"]

ctypedef int (*ssl_read_t)(void* ssl, void* buf, int num) noexcept nogil
ctypedef int (*ssl_write_t)(void* ssl, const void* buf, int num) noexcept nogil
ctypedef int (*ssl_get_error_t)(const void* ssl, int ret) noexcept nogil
ctypedef int (*bio_read_t)(void* bio, void* buf, int length) noexcept nogil
ctypedef long (*bio_get_mem_data_t)(void* bio, char** pp) noexcept nogil

cdef enum:
    SCRATCH = 65536  # == MAX_READ
    RECORD = 16384  # == RECORD_PLAINTEXT
    SSL_ERROR_WANT_READ = 2  # openssl/ssl.h

if MAX_READ != SCRATCH or RECORD_PLAINTEXT != RECORD:
    raise ImportError("ext/tls_records.pyx and gateway/_pure/tls_records.py disagree on sizes")

# One scratch buffer for the whole process: a read fills it and copies out what it got
# before returning, holding the GIL throughout, so no two reads ever share it.
cdef char _scratch[SCRATCH]


cdef inline void* _address(object value) except NULL:
    cdef uintptr_t address = value
    if address == 0:
        raise ValueError("a NULL OpenSSL handle")
    return <void*>address


cdef class Records:
    """Record I/O of one connection; see the pure twin."""

    cdef void* _ssl
    cdef void* _wbio
    cdef ssl_read_t _ssl_read
    cdef ssl_write_t _ssl_write
    cdef ssl_get_error_t _ssl_get_error
    cdef bio_read_t _bio_read
    cdef bio_get_mem_data_t _bio_get_mem_data
    cdef object _recv
    cdef object _send  # the connection's bound methods keep it (and its SSL object) alive

    def __init__(self, handles):
        if not isinstance(handles, OpenSSLHandles):
            raise TypeError("Records() needs OpenSSLHandles")
        self._ssl = _address(handles.ssl)
        self._wbio = _address(handles.wbio)
        self._ssl_read = <ssl_read_t>_address(handles.ssl_read)
        self._ssl_write = <ssl_write_t>_address(handles.ssl_write)
        self._ssl_get_error = <ssl_get_error_t>_address(handles.ssl_get_error)
        self._bio_read = <bio_read_t>_address(handles.bio_read)
        self._bio_get_mem_data = <bio_get_mem_data_t>_address(handles.bio_get_mem_data)
        self._recv = handles.recv
        self._send = handles.send

    def read(self, Py_ssize_t max_bytes):
        """The plaintext of every record available, up to ``max_bytes`` (at most
        ``MAX_READ``); ``None`` when OpenSSL needs more ciphertext first."""
        cdef Py_ssize_t limit = max_bytes
        cdef Py_ssize_t got = 0
        cdef int n = 0
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if limit > SCRATCH:
            limit = SCRATCH
        while got < limit:
            # 0 < limit - got <= SCRATCH: within the scratch buffer and an int
            n = self._ssl_read(self._ssl, &_scratch[got], <int>(limit - got))
            if n <= 0:
                break
            got += n
        if got:
            return PyBytes_FromStringAndSize(_scratch, got)
        if self._ssl_get_error(self._ssl, n) == SSL_ERROR_WANT_READ:
            return None
        return self._recv(limit)  # raises pyOpenSSL's exception for this condition

    def write(self, data):
        """Encrypt all of ``data`` into the outgoing BIO, ``RECORD_PLAINTEXT`` bytes per
        record.  Raises pyOpenSSL's errors."""
        cdef Py_buffer view
        cdef Py_ssize_t offset = 0
        cdef Py_ssize_t chunk
        cdef int n
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            while offset < view.len:
                chunk = view.len - offset
                if chunk > RECORD:
                    chunk = RECORD
                n = self._ssl_write(self._ssl, <const char*>view.buf + offset, <int>chunk)
                if n <= 0:
                    n = self._send(memoryview(data)[offset : offset + chunk])
                offset += n
        finally:
            PyBuffer_Release(&view)

    def drain(self):
        """All ciphertext waiting in the outgoing BIO (``b""`` when there is none)."""
        cdef char* start = NULL
        cdef long pending = self._bio_get_mem_data(self._wbio, &start)
        cdef int n
        if pending <= 0:
            return b""
        if pending > 0x7FFFFFFF:
            raise OverflowError("more than 2 GiB of ciphertext queued")
        out = PyBytes_FromStringAndSize(NULL, pending)
        n = self._bio_read(self._wbio, PyBytes_AS_STRING(out), <int>pending)
        if n != pending:
            raise RuntimeError(f"BIO_read returned {n} of {pending} pending bytes")
        return out
