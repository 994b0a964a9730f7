"""TLSStream: a ``trio.abc.Stream`` over a pyOpenSSL ``Connection`` on memory BIOs.

Theory of operation
===================

Structure follows trio's ``_ssl.py`` (``SSLStream``), with pyOpenSSL in place of the stdlib
``ssl.SSLObject`` because only pyOpenSSL lets a server request a client certificate without
verifying it against a CA, and exposes the SNI and ALPN callbacks (docs/architecture.md
principle 3).

The OpenSSL connection never touches a socket.  It owns two memory BIOs: we write ciphertext
from the transport into the *incoming* BIO (``bio_write``) and drain ciphertext it produced
from the *outgoing* BIO.  Every operation (``do_handshake``, read, write, ``shutdown``) is a
non-blocking call that either completes or raises ``WantReadError`` ("feed me more
ciphertext").  :meth:`TLSStream._retry` turns such a call into a Trio blocking call:

1. call the operation;
2. drain the outgoing BIO; if anything came out, send it (under ``_send_lock``) and loop;
3. otherwise, if the operation wanted to read, receive one chunk from the transport (under
   ``_recv_lock``) into the incoming BIO and loop;
4. otherwise it is done.

Reads and writes move whole batches of records, not one record per call
(:mod:`gateway.tls.records`, compiled in ``ext/tls_records.pyx``): one ``receive_some``
returns the plaintext of *every* record the incoming BIO holds, up to ``max_bytes`` — a
device that sends one PUBLISH per record (what paho, murano-client and mosquitto_pub do)
costs one transport read, one wake-up and one session step for all the records that arrived
together, not one each — and one ``send_all`` encrypts all its plaintext (up to
``_MAX_SEND_CHUNK`` at a time) into 16 KiB records before a single drain of the outgoing BIO
and a single transport write, so many PUBACKs or pushes become as few records and writes as
the record size allows.  Ciphertext left in the incoming BIO past ``max_bytes`` is decrypted
by the next ``receive_some`` before the transport is read again (the operation is always
tried before receiving).

Memory BIOs never give back the buffer they grew to, so the stream gives the connection
fresh ones (``renew_bios``) right after the handshake and whenever a read has drained the
incoming BIO after more than ``_BIO_KEEP`` bytes went through either BIO: an idle device
keeps neither its handshake's ~3 KB nor a burst's 64 KiB.  At those moments both BIOs are
empty (outgoing ciphertext is always drained before the stream awaits anything).

Sending before receiving matters: the bytes drained from the BIO must reach the wire in the
order OpenSSL produced them, and a receive could wait forever for a reply to bytes we have
not sent yet.  ``_recv_count`` lets a task that waited on ``_recv_lock`` notice that another
task already received while it waited, and retry the operation instead of receiving again
(which could block forever on a quiet peer).  With these two locks ``send_all`` and
``receive_some`` may run concurrently in different tasks, which the MQTT session needs
(server-initiated publishes while a read is pending); two concurrent senders or two
concurrent receivers raise ``trio.BusyResourceError``, as for every Trio stream.

TLS 1.3 servers emit their session tickets right after the handshake.  Like trio, we hold
those bytes back and send them with the first application write, so a client that sends
first and reads later never sees unexpected bytes (openssl/openssl#7948, python-trio/trio#819).

Closing: a clean peer close (``close_notify``) and a TCP EOF without it (what most device
stacks do) both read as EOF (``b""``): the protocols on top (MQTT DISCONNECT, HTTP framing)
carry their own end-of-message signal, so a truncation attack gains nothing there.  Our
``aclose`` sends ``close_notify`` (without waiting for the peer's) and closes the transport;
on a stream broken by a TLS error it sends the fatal alert OpenSSL produced (so a refused
client sees ``handshake_failure`` rather than a bare EOF), then closes the transport.

Renegotiation is refused by the context (``OP_NO_RENEGOTIATION``; TLS 1.3 has none).

Errors: any OpenSSL failure raises ``trio.BrokenResourceError`` with the OpenSSL error as
``__cause__``; the stream is unusable afterwards.  Cancelling a handshake breaks the stream.
Resource handling: the stream owns the transport; ``aclose`` closes both.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable
from enum import Enum
from typing import TypeVar

import trio
from cryptography import x509
from OpenSSL import SSL

from gateway.tls.records import MAX_READ, Records, records_for, renew_bios

__all__ = ["MAX_RECV", "TLSStream"]

T = TypeVar("T")

MAX_RECV = 65536  # bytes asked of the transport per receive: many TLS records
_MAX_SEND_CHUNK = 256 * 1024  # plaintext encrypted per transport write (bounds the BIO)
_STARTING_RECEIVE_SIZE = 16384  # plaintext asked of OpenSSL when the caller gives no size
_BIO_KEEP = 16384  # a BIO that held more than this is renewed once empty (idle memory)


class _State(Enum):
    OK = "ok"
    BROKEN = "broken"
    CLOSED = "closed"


class _Busy:
    """Raise BusyResourceError when two tasks use one direction at once (trio's
    ConflictDetector, which is private)."""

    __slots__ = ("_held", "_msg")

    def __init__(self, msg: str) -> None:
        self._msg = msg
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(self._msg)
        self._held = True

    def __exit__(self, *exc: object) -> None:
        self._held = False


class TLSStream(trio.abc.Stream):
    """Server (or client) TLS over ``transport`` using ``connection`` (memory-BIO mode).

    ``connection`` must have been created with ``SSL.Connection(context, None)`` and set to
    accept (server) or connect (client) state.  Call :meth:`do_handshake` first (send and
    receive do it implicitly otherwise).  ``initial`` is ciphertext already read from
    ``transport`` (the front door reads a connection's first bytes itself: a PROXY header,
    a health check's silence); it is fed to OpenSSL before anything is received.
    """

    # slotted: tens of thousands live at once (their memory is per idle device)
    __slots__ = (
        "_bios_grown",
        "_delayed_outgoing",
        "_final_alert",
        "_handshake_done",
        "_handshake_lock",
        "_receive_size",
        "_records",
        "_recv_busy",
        "_recv_count",
        "_recv_lock",
        "_send_busy",
        "_send_lock",
        "_server_side",
        "_state",
        "connection",
        "transport_stream",
    )

    def __init__(
        self,
        transport: trio.abc.Stream,
        connection: SSL.Connection,
        *,
        server_side: bool = True,
        initial: bytes = b"",
    ) -> None:
        self.transport_stream = transport
        self.connection = connection
        if initial:
            connection.bio_write(initial)
        self._records: Records = records_for(connection)
        self._bios_grown = False  # a BIO held more than _BIO_KEEP bytes: renew once empty
        self._server_side = server_side
        self._state = _State.OK
        self._handshake_done = False
        self._handshake_lock: trio.Lock | None = trio.Lock()
        self._send_lock = trio.StrictFIFOLock()
        self._recv_lock = trio.Lock()
        self._recv_count = 0
        self._delayed_outgoing: bytes | None = None
        self._final_alert = b""
        self._send_busy = _Busy("another task is sending on this TLSStream")
        self._recv_busy = _Busy("another task is receiving on this TLSStream")
        self._receive_size = _STARTING_RECEIVE_SIZE

    # -- facts after the handshake ----------------------------------------------------------

    @property
    def handshake_done(self) -> bool:
        return self._handshake_done

    @property
    def alpn(self) -> str | None:
        """The negotiated ALPN protocol, or None when none was agreed."""
        proto = self.connection.get_alpn_proto_negotiated()
        return proto.decode("ascii", "replace") if proto else None

    @property
    def server_name(self) -> str | None:
        raw = self.connection.get_servername()
        return raw.decode("ascii", "replace") if raw else None

    @property
    def tls_version(self) -> str:
        return self.connection.get_protocol_version_name()

    @property
    def cipher(self) -> str | None:
        return self.connection.get_cipher_name()

    def peer_certificate(self) -> x509.Certificate | None:
        return self.connection.get_peer_certificate(as_cryptography=True)

    def peer_chain(self) -> list[x509.Certificate]:
        """Extra certificates the peer sent (server side: excluding the leaf)."""
        return self.connection.get_peer_cert_chain(as_cryptography=True) or []

    # -- the engine -------------------------------------------------------------------------

    def _check_status(self) -> None:
        if self._state is _State.BROKEN:
            raise trio.BrokenResourceError("TLS stream is broken")
        if self._state is _State.CLOSED:
            raise trio.ClosedResourceError("TLS stream was closed")

    def _drain_outgoing(self) -> bytes:
        return self._records.drain()

    def _read(self, max_bytes: int) -> bytes:
        """Every record's plaintext available now (up to ``max_bytes``); raises
        ``WantReadError`` when OpenSSL needs more ciphertext first (see ``_retry``)."""
        data = self._records.read(max_bytes)
        if data is None:
            if self._bios_grown:
                self._renew_bios()  # idle again: give the grown buffers back
            raise SSL.WantReadError()
        return data

    def _renew_bios(self) -> None:
        """Fresh memory BIOs when both are empty: theirs never shrink (see
        :func:`gateway.tls.records.renew_bios`).  Called only where no ciphertext can be in
        flight inside the stream: right after the handshake and when a read has drained
        everything (at every await point the outgoing BIO has already been drained)."""
        if renew_bios(self.connection):
            self._records = records_for(self.connection)
            self._bios_grown = False

    def _write(self, data: memoryview) -> int:
        """Encrypt all of ``data`` into the outgoing BIO (``_retry`` then drains it)."""
        self._records.write(data)
        if data.nbytes > _BIO_KEEP:
            self._bios_grown = True
        return data.nbytes

    async def _retry(
        self,
        fn: Callable[..., T],
        *args: object,
        ignore_want_read: bool = False,
        is_handshake: bool = False,
    ) -> T | None:
        """Run the non-blocking ``fn(*args)`` to completion (see the module docstring).

        Returns ``fn``'s result; returns None on EOF (``ZeroReturnError``/unexpected EOF) when
        reading.  Raises BrokenResourceError on any other OpenSSL error.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        yielded = False
        while True:
            want_read = False
            finished = False
            result: T | None = None
            try:
                result = fn(*args)
            except SSL.WantReadError:
                want_read = True
            except SSL.ZeroReturnError:
                finished = True  # the peer's close_notify: EOF
            except SSL.SysCallError as exc:
                if exc.args and exc.args[0] == -1 and not is_handshake:
                    finished = True  # TCP EOF without close_notify: EOF too
                else:
                    self._state = _State.BROKEN
                    raise trio.BrokenResourceError(str(exc)) from exc
            except SSL.Error as exc:
                self._state = _State.BROKEN
                # keep the fatal alert OpenSSL queued: aclose() sends it, so a refused
                # client learns why (handshake_failure) instead of seeing a bare EOF
                self._final_alert = self._drain_outgoing()
                raise trio.BrokenResourceError(str(exc)) from exc
            else:
                finished = True
            if ignore_want_read:
                want_read = False
                finished = True
            to_send = self._drain_outgoing()
            if (
                is_handshake
                and finished
                and self._server_side
                and self.connection.get_protocol_version_name() == "TLSv1.3"
            ):
                self._delayed_outgoing = (self._delayed_outgoing or b"") + to_send
                to_send = b""
            if to_send:
                async with self._send_lock:
                    yielded = True
                    try:
                        if self._delayed_outgoing is not None:
                            to_send = self._delayed_outgoing + to_send
                            self._delayed_outgoing = None
                        await self.transport_stream.send_all(to_send)
                    except BaseException:
                        self._state = _State.BROKEN
                        raise
            elif want_read:
                seen = self._recv_count
                async with self._recv_lock:
                    yielded = True
                    if seen == self._recv_count:
                        try:
                            data = await self.transport_stream.receive_some(MAX_RECV)
                        except trio.BrokenResourceError:
                            self._state = _State.BROKEN
                            raise
                        if data:
                            self._receive_size = max(self._receive_size, len(data))
                            self.connection.bio_write(data)
                            if len(data) > _BIO_KEEP:
                                self._bios_grown = True
                        else:
                            self.connection.bio_shutdown()
                        self._recv_count += 1
            if finished:
                break
        if not yielded:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return result

    # -- trio.abc.Stream --------------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Complete the handshake (once; concurrent callers wait for the first).

        Raises BrokenResourceError when it fails; cancellation leaves the stream broken.
        """
        self._check_status()
        lock = self._handshake_lock
        if lock is None:  # done: the lock was dropped (idle connections keep no lock)
            await trio.lowlevel.checkpoint()
            return
        async with lock:
            if self._handshake_done:
                await trio.lowlevel.checkpoint()
                return
            try:
                await self._retry(self.connection.do_handshake, is_handshake=True)
            except BaseException:
                self._state = _State.BROKEN
                raise
            self._handshake_done = True
            # the handshake grew both BIOs (~3 KB an idle device would keep): renew them
            # now, or at the first read that drains them (application data may follow)
            self._bios_grown = True
            self._renew_bios()
        self._handshake_lock = None  # waiters still queued on it get in and see done

    async def _ensure_handshake(self) -> None:
        if not self._handshake_done:
            await self.do_handshake()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Up to ``max_bytes`` of plaintext; ``b""`` at EOF (clean or not)."""
        with self._recv_busy:
            self._check_status()
            await self._ensure_handshake()
            if max_bytes is None:
                max_bytes = self._receive_size
            else:
                max_bytes = operator.index(max_bytes)
                if max_bytes < 1:
                    raise ValueError("max_bytes must be >= 1")
            data = await self._retry(self._read, min(max_bytes, MAX_READ))
            return data if data is not None else b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send all of ``data``.  Cancellation may leave the stream broken."""
        with self._send_busy:
            self._check_status()
            await self._ensure_handshake()
            view = memoryview(data)
            if not view.nbytes:
                await trio.lowlevel.checkpoint()
                return
            # all of a chunk becomes 16 KiB records in the outgoing BIO, then one drain and
            # one transport write; the chunk bounds what the BIO holds
            offset = 0
            while offset < view.nbytes:
                chunk = view[offset : offset + _MAX_SEND_CHUNK]
                written = await self._retry(self._write, chunk)
                if written is None:  # the peer closed while we wrote
                    self._state = _State.BROKEN
                    raise trio.BrokenResourceError("peer closed the TLS connection")
                offset += written

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_busy:
            self._check_status()
            async with self._send_lock:
                await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Send ``close_notify`` (best effort) and close the transport.  Idempotent."""
        if self._state is _State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        if self._state is _State.BROKEN or not self._handshake_done:
            self._state = _State.CLOSED
            alert, self._final_alert = self._final_alert, b""
            try:
                if alert:
                    with contextlib.suppress(trio.BrokenResourceError, trio.BusyResourceError):
                        await self.transport_stream.send_all(alert)
            finally:
                await self.transport_stream.aclose()
            return
        try:
            with contextlib.suppress(trio.BrokenResourceError, trio.BusyResourceError):
                await self._retry(self.connection.shutdown, ignore_want_read=True)
        except BaseException:
            await trio.aclose_forcefully(self.transport_stream)
            raise
        else:
            await self.transport_stream.aclose()
        finally:
            self._state = _State.CLOSED
