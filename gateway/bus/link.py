"""One framed connection of the node bus: frames out through a buffer that one sender task
flushes (every frame queued meanwhile goes in the same ``send_all``), frames in by reads.

Resource handling: :meth:`Link.run_sender` runs until cancelled or the stream breaks; the
owner of the link closes the stream.  :meth:`Link.send` never blocks: frames queue in
memory (the peers are processes of one node, and each side bounds what it has in flight).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio

from gateway.bus.frames import Frame, FrameReader, encode

__all__ = ["RECV_SIZE", "Link", "connect_unix", "listen_unix"]

RECV_SIZE = 256 * 1024


class Link:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._out = bytearray()
        self._wake = trio.Event()
        self.closed = False

    def send(self, frame: Frame) -> None:
        if self.closed:
            return
        encode(frame, self._out)
        self._wake.set()

    async def run_sender(self) -> None:
        try:
            while True:
                if not self._out:
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                data = bytes(self._out)
                self._out.clear()
                await self.stream.send_all(data)
        finally:
            self.closed = True

    async def frames(self) -> AsyncIterator[Frame]:
        """Every frame the peer sends, until it closes (then the iteration ends)."""
        reader = FrameReader()
        while True:
            data = await self.stream.receive_some(RECV_SIZE)
            if not data:
                return
            for frame in reader.feed(data):
                yield frame


async def listen_unix(address: str, backlog: int = 128) -> trio.SocketListener:
    """A listener on a Unix socket (an abstract name when ``address`` starts with NUL)."""
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        await sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def connect_unix(address: str) -> trio.SocketStream:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        await sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)
