"""gateway.device.mqtt.output: the output state machine, driven without sockets.

The stream is ``trio.testing.lockstep_stream_pair()`` (a ``send_all`` returns only once the
peer has read everything), so a write can be held "in progress" exactly as long as a test
needs; the clock is ``MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock``), so
the deadlines below cost no wall time.  The bytes come from a real sans-IO session and are
compared with hand-built ones (gateway.testing.mqtt_bytes).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from gateway.device.mqtt.output import Output, OutputState
from gateway.mqtt.session import Session
from gateway.testing.mqtt_bytes import gen_connect, gen_publish


class Harness:
    """An Output over one end of a lockstep pair, fed by a connected session."""

    def __init__(self) -> None:
        self.session = Session(now=0.0)
        self.session.receive_data(gen_connect("c"), 0.0)
        self.session.events()
        self.session.accept()
        self.server, self.client = trio.testing.lockstep_stream_pair()
        self.writes = 0
        self.failures: list[Exception] = []
        self.output = Output(
            self.server, self.session, on_write=self._on_write, on_failed=self.failures.append
        )

    def _on_write(self) -> None:
        self.writes += 1

    def queue(self, n: int) -> bytes:
        """Queue ``n`` pushes; return their bytes as the client must see them."""
        for i in range(n):
            self.session.publish(f"t/{i}", b"v")
        return b"".join(gen_publish(f"t/{i}", b"v") for i in range(n))

    async def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes from the client side (each receive releases a lockstep send)."""
        out = bytearray()
        with trio.fail_after(10):
            while len(out) < n:
                chunk = await self.client.receive_some(n - len(out))
                assert chunk, f"EOF after {bytes(out)!r}"
                out += chunk
        return bytes(out)


CONNACK = b"\x20\x02\x00\x00"


async def test_inline_flush_writes_and_returns_to_inline(autojump_clock: trio.testing.MockClock):
    h = Harness()
    async with trio.open_nursery() as nursery:
        h.output.open(nursery)
        expected = CONNACK + h.queue(2)
        nursery.start_soon(h.output.flush)
        assert await h.read(len(expected)) == expected
    assert h.output.state is OutputState.INLINE
    assert h.writes == 1
    assert h.session.bytes_to_send == 0


async def test_kick_while_idle_starts_the_sender(autojump_clock: trio.testing.MockClock):
    """A push while the reader waits for bytes: a sender task is started and writes it."""
    h = Harness()
    async with trio.open_nursery() as nursery:
        h.output.open(nursery)
        expected = CONNACK + h.queue(1)
        h.output.kick()
        assert h.output.state is OutputState.SENDER
        assert await h.read(len(expected)) == expected
        more = h.queue(3)  # later pushes wake the same sender
        h.output.kick()
        assert await h.read(len(more)) == more
        h.output.finish()
        assert h.output.state is OutputState.FINISHING
        await h.output.wait_done()
    assert h.output.state is OutputState.DONE


async def test_kick_during_an_inline_write_is_taken_by_the_write_loop(
    autojump_clock: trio.testing.MockClock,
):
    h = Harness()
    async with trio.open_nursery() as nursery:
        h.output.open(nursery)
        first = CONNACK + h.queue(1)
        nursery.start_soon(h.output.flush)
        await trio.testing.wait_all_tasks_blocked()
        assert h.output.state is OutputState.INLINE_WRITING  # held by the lockstep peer
        later = h.session.data_to_send()  # nothing yet: the write took everything
        assert later == b""
        second = h.queue(2)
        h.output.kick()
        assert h.output.state is OutputState.INLINE_WRITING  # no sender for this
        assert await h.read(len(first) + len(second)) == first + second
    assert h.output.state is OutputState.INLINE
    assert h.writes == 2


async def test_a_second_producer_flushing_during_a_write_is_taken_by_it(
    autojump_clock: trio.testing.MockClock,
):
    """The acker flushes PUBACKs while the reader is inside send_all: it returns at once
    (two writers would be BusyResourceError) and the reader's write loop sends them."""
    h = Harness()
    async with trio.open_nursery() as nursery:
        h.output.open(nursery)
        nursery.start_soon(h.output.flush)  # the reader
        await trio.testing.wait_all_tasks_blocked()
        assert h.output.state is OutputState.INLINE_WRITING
        acks = h.queue(2)
        with trio.fail_after(1):
            await h.output.flush()  # the acker: does not wait for the write in progress
        with pytest.raises(RuntimeError, match="writing"):
            h.output.finish()
        assert await h.read(len(CONNACK) + len(acks)) == CONNACK + acks
    assert h.output.state is OutputState.INLINE
    assert h.writes == 2


async def test_flush_in_sender_mode_wakes_the_sender(autojump_clock: trio.testing.MockClock):
    h = Harness()
    async with trio.open_nursery() as nursery:
        h.output.open(nursery)
        h.output.kick()  # a push: the sender writes from now on
        assert await h.read(len(CONNACK)) == CONNACK
        replies = h.queue(1)
        await h.output.flush()  # the reader does not write itself any more
        assert h.output.state is OutputState.SENDER
        assert await h.read(len(replies)) == replies
        h.output.finish()
        await h.output.wait_done()


async def test_wait_done_inline_writes_the_rest(autojump_clock: trio.testing.MockClock):
    """No sender was ever needed (a refusing CONNACK): the end writes it inline."""
    h = Harness()
    async with trio.open_nursery() as nursery:
        h.output.open(nursery)
        h.output.finish()
        assert h.output.state is OutputState.INLINE
        nursery.start_soon(h.output.wait_done)
        assert await h.read(len(CONNACK)) == CONNACK
    assert h.output.state is OutputState.DONE
    h.queue(1)
    h.output.kick()  # DONE: nothing is started, nothing written
    assert h.output.state is OutputState.DONE


async def test_backpressure_waits_for_the_next_write(autojump_clock: trio.testing.MockClock):
    h = Harness()
    async with trio.open_nursery() as nursery:
        h.output.open(nursery)
        h.output.kick()
        assert await h.read(len(CONNACK)) == CONNACK
        await trio.testing.wait_all_tasks_blocked()  # that write has returned
        big = h.queue(50)
        progressed = trio.Event()

        async def reader_waits() -> None:
            await h.output.wait_progress()
            progressed.set()

        nursery.start_soon(reader_waits)
        await trio.testing.wait_all_tasks_blocked()
        assert not progressed.is_set()  # the write is held by the peer
        assert await h.read(len(big)) == big
        with trio.fail_after(1):
            await progressed.wait()
        h.output.finish()
        await h.output.wait_done()


async def test_a_failed_write_breaks_the_output_once(autojump_clock: trio.testing.MockClock):
    """The peer goes away: BROKEN, on_failed once, waiters released, nothing more sent."""
    h = Harness()
    async with trio.open_nursery() as nursery:
        h.output.open(nursery)
        h.output.kick()
        await trio.testing.wait_all_tasks_blocked()
        released = trio.Event()

        async def reader_waits() -> None:
            await h.output.wait_progress()
            released.set()

        nursery.start_soon(reader_waits)
        await trio.testing.wait_all_tasks_blocked()
        await h.client.aclose()
        with trio.fail_after(1):
            await released.wait()
            await h.output.wait_done()
    assert h.output.state is OutputState.BROKEN
    assert h.output.broken
    assert len(h.failures) == 1
    assert isinstance(h.failures[0], trio.BrokenResourceError)
    h.queue(1)
    h.output.kick()
    await h.output.flush()
    assert h.output.state is OutputState.BROKEN
    assert len(h.failures) == 1


async def test_an_inline_write_that_fails_breaks_the_output(
    autojump_clock: trio.testing.MockClock,
):
    h = Harness()
    await h.client.aclose()
    async with trio.open_nursery() as nursery:
        h.output.open(nursery)
        await h.output.flush()
    assert h.output.state is OutputState.BROKEN
    assert len(h.failures) == 1


async def test_a_cancelled_inline_write_leaves_no_writer_behind(
    autojump_clock: trio.testing.MockClock,
):
    """Cancelled inside send_all (the connection's drain deadline): the stream's state is
    unknown, so nothing may write after the partial write."""
    h = Harness()
    async with trio.open_nursery() as nursery:
        h.output.open(nursery)
        with trio.move_on_after(5) as scope:
            await h.output.flush()  # nobody reads: blocked until the deadline
        assert scope.cancelled_caught
        assert h.output.state is OutputState.BROKEN
        h.output.kick()
        assert h.output.state is OutputState.BROKEN


async def test_transitions_without_a_nursery_are_refused() -> None:
    h = Harness()
    with pytest.raises(RuntimeError, match="open"):
        h.output.kick()
