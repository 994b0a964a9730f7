"""Fuzz target: the sans-IO HTTP/1.1 request assembler of the device API
(``gateway/device/http/assembler.py``, llhttp through httptools).

Input: one control byte (how the bytes are cut into reads: whole, 1, 7 or 64 bytes; and
the head limit: 256 bytes or the default 16 KiB), then the bytes a client sends; EOF
follows.

Invariants:

* the only exceptions are :class:`~gateway.errors.BadRequest` and
  :class:`~gateway.errors.HeadersTooLarge`, raised by ``next_event`` (``receive_data``
  never raises), after which no event follows;
* cutting the input into reads changes nothing: the same heads (method, target, headers,
  framing), the same body bytes per request, the same end — except that a head-size limit
  may be crossed earlier or later, so a ``HeadersTooLarge`` may replace other events;
* a request with a ``Content-Length`` has exactly that many body bytes; every event
  sequence ends with ``CONNECTION_CLOSED``, an ``Upgrade`` or an error.
"""

from __future__ import annotations

from gateway.device.http.assembler import (
    CONNECTION_CLOSED,
    END_OF_MESSAGE,
    NEED_DATA,
    Body,
    RequestAssembler,
    RequestHead,
    Upgrade,
)
from gateway.errors import BadRequest, HeadersTooLarge

__all__ = ["NAME", "check", "seeds"]

NAME = "http_assembler"
_CUTS = (0, 1, 7, 64)


def _run(data: bytes, step: int, max_head: int) -> list[object]:
    """Feed ``data`` (then EOF) and drain; events normalised for comparison."""
    asm = RequestAssembler(max_head_bytes=max_head)
    reads = [data[i : i + step] for i in range(0, len(data), step)] if step else [data]
    out: list[object] = []
    body = b""
    heads: list[RequestHead] = []
    for chunk in [*reads, b""]:
        asm.receive_data(chunk)
        while True:
            try:
                event = asm.next_event()
            except (BadRequest, HeadersTooLarge) as exc:
                out.append(("error", type(exc).__name__))
                assert asm.next_event() is NEED_DATA, "an event after an error"
                return out
            if event is NEED_DATA:
                break
            if type(event) is Body:
                body += event.data
                continue
            if event is END_OF_MESSAGE:
                head = heads[-1]
                if head.content_length is not None:
                    assert len(body) == head.content_length, (head, len(body))
                out.append(("body", body))
                body = b""
            elif isinstance(event, RequestHead):
                heads.append(event)
                out.append(
                    (
                        "head",
                        event.method,
                        event.target,
                        event.http_version,
                        tuple(event.headers),
                        event.content_length,
                        event.chunked,
                        event.keep_alive,
                    )
                )
            elif isinstance(event, Upgrade):
                out.append(("upgrade", event.head.method, event.head.target))
                return out
            elif event is CONNECTION_CLOSED:
                out.append(("closed", body))
                return out
            else:
                raise AssertionError(f"unknown event {event!r}")
    raise AssertionError(f"no end after EOF: {out!r}")


def check(data: bytes) -> None:
    if not data:
        return
    control, rest = data[0], data[1:]
    max_head = 256 if control & 0x80 else 16 * 1024
    whole = _run(rest, 0, max_head)
    step = _CUTS[control & 0x03]
    if step:
        cut = _run(rest, step, max_head)
        if ("error", "HeadersTooLarge") in (whole[-1], cut[-1]):
            n = min(len(whole), len(cut)) - 1
            assert whole[:n] == cut[:n], (whole, cut)
        else:
            assert cut == whole, (whole, cut)


def seeds() -> list[bytes]:
    write = (
        b"POST /onep:v1/stack/alias HTTP/1.1\r\nHost: demo.m2.localhost\r\nX-Exosite-CIK: "
        + b"a" * 40
        + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\n\r\n"
        + b"data_in=1"
    )
    chunked = (
        b"POST /onep:v1/stack/record HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;x=y\r\nalias\r\n4\r\n=tmp\r\n0\r\n\r\n"
    )
    return [
        b"\x00" + write,
        b"\x01" + write + write,
        b"\x02" + chunked,
        b"\x83GET /onep:v1/stack/alias?a&b HTTP/1.0\r\nRequest-Timeout: 1000\r\n\r\n",
        b"\x01GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nrest",
        b"\x02POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        b"\x03GET /a HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 300 + b"\r\n\r\n",
        # the RFC 9112 refusals llhttp lets through (docs/decisions.md "Malformed HTTP on
        # every path"), and trailers followed by a pipelined request
        b"\x01GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET  /a HTTP/1.1\r\nHost: h\r\n\r\n",
        b"\x02GET /a HTTP/1.1\r\nHost: user@h:x\r\n\r\n",
        b"\x03POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"\x01POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"\x02" + chunked[:-2] + b"X-Exosite-CIK: t\r\n\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n",
    ]
