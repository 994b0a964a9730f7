"""First-byte protocol sniffing for clients that offer no ALPN, and the replaying stream.

Exosite's own MQTT clients connect to the multi-protocol port without ALPN (docs/protocol.md §12
item 7 and §13 item 16), so when ALPN says nothing the first byte decides:

* ``0x10`` is MQTT CONNECT (packet type 1, flags 0: MQTT 3.1.1 §3.1.1, and 5.0 alike);
* an ASCII letter starts an HTTP/1.x method (``GET``, ``POST``...) or the HTTP/2
  prior-knowledge preface (``PRI * HTTP/2.0``);
* anything else is refused.

The byte has already been read from the stream, so the handler gets a
:class:`ReplayStream` that returns it before anything else.  Pure, apart from that wrapper.
"""

from __future__ import annotations

from enum import StrEnum

import trio

__all__ = ["MQTT_CONNECT_FIRST_BYTE", "ReplayStream", "Route", "classify_first_byte"]

MQTT_CONNECT_FIRST_BYTE = 0x10  # fixed header of CONNECT: type 1 << 4, flags 0


class Route(StrEnum):
    MQTT = "mqtt"
    HTTP = "http"


def classify_first_byte(first: int) -> Route | None:
    """Which protocol a connection speaks, judged by its first byte; None when neither."""
    if first == MQTT_CONNECT_FIRST_BYTE:
        return Route.MQTT
    if 0x41 <= first <= 0x5A or 0x61 <= first <= 0x7A:  # ASCII A-Z, a-z
        return Route.HTTP
    return None


class ReplayStream(trio.abc.Stream):
    """``stream`` with ``prefix`` put back in front of its incoming bytes.

    Sending, closing and ``wait_send_all_might_not_block`` go straight to ``stream``.  The
    wrapper owns ``stream``: closing one closes the other.
    """

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self.stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            if max_bytes is None or max_bytes >= len(self._prefix):
                data, self._prefix = self._prefix, b""
            else:
                if max_bytes < 1:
                    raise ValueError("max_bytes must be >= 1")
                data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            return data
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self._prefix = b""
        await self.stream.aclose()
