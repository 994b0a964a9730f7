"""The node bus's wire format: length-prefixed msgpack frames, one tagged union.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack encoding one
:data:`Frame` (an array-like tagged Struct: ``[tag, field...]``).  Store ops, results,
committed events, log records and errors travel as the very Structs of
``gateway/store/api.py``, ``gateway/model.py`` and ``gateway/errors.py``, so nothing is
converted by hand and a field added there needs no change here.

Direction: a worker sends :class:`Hello` first, then :class:`Submit`, :class:`Log` and
:class:`Snapshot`; the store owner sends :class:`Committed` / :class:`Failed` (exactly one
per ``Submit``, after the commit), :class:`Events`, :class:`Registry`, :class:`Interest`,
:class:`TlsReload` and :class:`SnapshotRequest`.
"""

from __future__ import annotations

import struct
from typing import TypeAlias

import msgspec

from gateway.bus.api import MetricsSnapshot
from gateway.errors import ErrorInfo
from gateway.model import LogRecord
from gateway.store.api import CommittedEvent, Op, OpResult

__all__ = [
    "MAX_FRAME",
    "Committed",
    "Events",
    "Failed",
    "Frame",
    "FrameReader",
    "Hello",
    "Interest",
    "Log",
    "Registry",
    "Snapshot",
    "SnapshotRequest",
    "Submit",
    "TlsReload",
    "encode",
]

MAX_FRAME = 256 * 1024 * 1024  # a bulk import is one submission: allow it, refuse garbage
_LEN = struct.Struct(">I")


class _Frame(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=True):
    """Base of every frame (tag = class name)."""


class Hello(_Frame, frozen=True, gc=False):
    worker: int
    pid: int
    connection_prefix: str = ""  # the worker's connection ids start with it


class Submit(_Frame, frozen=True, gc=False):
    id: int
    ops: list[Op]


class Log(_Frame, frozen=True, gc=False):
    record: LogRecord


class Snapshot(_Frame, frozen=True, gc=False):
    id: int
    metrics: MetricsSnapshot


class Committed(_Frame, frozen=True, gc=False):
    id: int
    results: list[OpResult]


class Failed(_Frame, frozen=True, gc=False):
    id: int
    error: ErrorInfo


class Events(_Frame, frozen=True, gc=False):
    events: list[CommittedEvent]


class Registry(_Frame, frozen=True, gc=False):
    connector_id: str


class Interest(_Frame, frozen=True, gc=False):
    logs: bool


class TlsReload(_Frame, frozen=True, gc=False):
    """Re-read the node certificate (``POST /api/v1/tls/reload`` in the store owner)."""


class SnapshotRequest(_Frame, frozen=True, gc=False):
    id: int


Frame: TypeAlias = (
    Hello
    | Submit
    | Log
    | Snapshot
    | Committed
    | Failed
    | Events
    | Registry
    | Interest
    | TlsReload
    | SnapshotRequest
)

_encoder = msgspec.msgpack.Encoder()


def encode(frame: Frame, out: bytearray) -> None:
    """Append ``frame`` (length prefix and body) to ``out``."""
    start = len(out)
    out += b"\0\0\0\0"
    _encoder.encode_into(frame, out, start + 4)
    _LEN.pack_into(out, start, len(out) - start - 4)


class FrameReader:
    """Bytes in, frames out (sans-IO).  Raises ``ValueError`` on an oversized frame and
    ``msgspec.DecodeError`` on one that does not decode: the connection is then unusable."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._decoder = msgspec.msgpack.Decoder(Frame)

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos = 0
        n = len(buf)
        with memoryview(buf) as view:  # released before the buffer shrinks
            while n - pos >= 4:
                (size,) = _LEN.unpack_from(view, pos)
                if size > MAX_FRAME:
                    raise ValueError(f"frame of {size} bytes")
                if n - pos - 4 < size:
                    break
                out.append(self._decoder.decode(view[pos + 4 : pos + 4 + size]))
                pos += 4 + size
        if pos:
            del buf[:pos]
        return out
