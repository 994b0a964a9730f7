"""Server-Sent Events for the live log tail (``GET …/logs``).

One :class:`LogStream` per client: it subscribes to the :class:`~gateway.services.logs.LogHub`
with the client's filter and writes each record as an SSE ``log`` event.  A comment line
(``: keepalive``) goes out after ``heartbeat_s`` of silence so proxies and clients can tell
an idle stream from a dead one.

Resource handling: the stream ends, and the subscription is released, when

* the client goes away (an ``http.disconnect`` from the server, or a failed send), or
* the hub drops the subscriber for being slow (its buffer filled up): the client then gets
  a final ``dropped`` event before the stream closes, so it knows to reconnect.

The subscription is opened inside ``__call__``, before the response headers are sent (a
client holding the headers misses no later record), and closed by its ``async with``;
nothing outlives the response.
"""

from __future__ import annotations

import logging

import msgspec
import trio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway.model import LogRecord
from gateway.services.logs import LogFilter, LogHub

__all__ = ["DEFAULT_HEARTBEAT_S", "LogStream", "format_event"]

log = logging.getLogger(__name__)
DEFAULT_HEARTBEAT_S = 15.0  # seconds of silence before a keepalive comment
MEDIA_TYPE = "text/event-stream"
_ENCODER = msgspec.json.Encoder()


def format_event(event: str, data: bytes, event_id: int | None = None) -> bytes:
    """One SSE message.  ``data`` is one line of JSON (msgspec never emits newlines)."""
    head = b"event: " + event.encode() + b"\n"
    if event_id is not None:
        head += b"id: " + str(event_id).encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


class LogStream(Response):
    """An ASGI response that tails the live log until the client leaves or is dropped."""

    media_type = MEDIA_TYPE

    def __init__(
        self, hub: LogHub, filt: LogFilter, *, heartbeat_s: float = DEFAULT_HEARTBEAT_S
    ) -> None:
        super().__init__(
            status_code=200,
            media_type=MEDIA_TYPE,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self.hub = hub
        self.filt = filt
        self.heartbeat_s = heartbeat_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Response.__init__ adds "content-length: 0" for the empty body it was given; an
        # endless stream must go without it (chunked).
        headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        async with self.hub.subscribe(self.filt) as sub, trio.open_nursery() as nursery:
            # Subscribed before the headers go out: a client that has the headers misses
            # nothing logged after that (the CLI says "following" then, tests wait for it).
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": headers}
            )

            async def watch_disconnect() -> None:
                while True:
                    message: Message = await receive()
                    if message["type"] == "http.disconnect":
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(watch_disconnect)
            try:
                await self._pump(sub.receive, send)
            except OSError:  # the client went away mid-send
                log.debug("log stream: client went away")
            nursery.cancel_scope.cancel()
        # hypercorn needs the body closed even when the client is gone; it ignores the
        # message if the connection is already closed.
        with trio.CancelScope(shield=True):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, records: trio.MemoryReceiveChannel[LogRecord], send: Send) -> None:
        await send({"type": "http.response.body", "body": b": stream open\n\n", "more_body": True})
        n = 0
        while True:
            with trio.move_on_after(self.heartbeat_s):
                try:
                    rec = await records.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    data = _ENCODER.encode(
                        {"reason": "slow_consumer", "message": "too slow; reconnect to resume"}
                    )
                    await send(
                        {
                            "type": "http.response.body",
                            "body": format_event("dropped", data),
                            "more_body": True,
                        }
                    )
                    return
                n += 1
                await send(
                    {
                        "type": "http.response.body",
                        "body": format_event("log", _ENCODER.encode(rec), n),
                        "more_body": True,
                    }
                )
                continue
            await send(
                {"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True}
            )
