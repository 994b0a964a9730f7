"""The output side of one MQTT connection: who writes the session's bytes, and when.

Theory of operation
-------------------
Three parties queue bytes in the sans-IO session (:class:`~gateway.mqtt.session.Session`):
the **reader** (CONNACK, SUBACK, PINGRESP after each read), the **acker** (PUBACKs once
their commit is done) and the control hub (**pushes** of set values, from whatever task
changed them).  Exactly one party may be inside ``stream.send_all`` at a time (a Trio stream
raises ``BusyResourceError`` otherwise).  The reader and the acker are the connection's own
tasks, so they write their output themselves (a slow client then holds back only that
connection's reading or acknowledging, which is the backpressure wanted); a push comes from
a task that must not wait for a device, so the first one starts a **sender** task, which
from then on writes everything.  Most connections of a fleet sit idle and never push, so
they never hold a second task, and a busy connection pays no extra task switch per
acknowledgement.  :class:`Output` is that decision as a state machine; each transition is a
method, and the whole table is unit-tested without sockets
(``tests/unit/test_mqtt_output.py``):

==============  ==========================  =========================  ===================
state           ``flush()``                 ``kick()``                 ``finish()``
                (reader or acker)           (a push, any task)         (no producer left)
==============  ==========================  =========================  ===================
INLINE          write now → INLINE_WRITING  start the sender → SENDER  stays (``wait_done``
                → INLINE                                               writes, → DONE)
INLINE_WRITING  nothing: the write in progress loops until nothing is left  not allowed
SENDER          wake the sender             wake the sender            → FINISHING
FINISHING       wake                        wake                       nothing
DONE, BROKEN    nothing                     nothing                    nothing
==============  ==========================  =========================  ===================

* INLINE_WRITING: a task is inside ``send_all``; whatever another party queues meanwhile is
  written by the same loop before it returns to INLINE (it re-reads the session after every
  write), so a kick never starts a sender while a write is in progress.
* The sender task writes whatever the session has queued, one ``send_all`` per wake-up,
  and in FINISHING exits once nothing is left (→ DONE).
* Any failed write → BROKEN: waiters are released, ``on_failed`` is called once, and
  nothing is written again.  A write cancelled half-way also ends in BROKEN (the stream's
  state is unknown).

Backpressure and the end: :meth:`Output.wait_progress` lets the reader wait for the next
write while too much output is queued (in INLINE it writes itself), and
:meth:`Output.wait_done` returns once everything queued before ``finish()`` was written
(or the stream broke).  The caller bounds both with its own deadline, and calls
``finish()`` only once the reader and the acker are done.

Resource handling: :class:`Output` never closes the stream; the sender task lives in the
connection's nursery (:meth:`Output.open`), which the connection cancels at its end.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Protocol

import trio

__all__ = ["Output", "OutputSource", "OutputState"]


class OutputState(Enum):
    """Who writes the connection's output (see the module docstring's table)."""

    INLINE = "inline"  # no sender task: the reader and the acker write their own output
    INLINE_WRITING = "inline_writing"  # one of them is inside send_all
    SENDER = "sender"  # a push started the sender task: it writes everything queued
    FINISHING = "finishing"  # no producer is left: the sender exits once all is written
    DONE = "done"  # everything queued was written; nothing more will be
    BROKEN = "broken"  # a write failed: nothing more can be sent


class OutputSource(Protocol):
    """Where the bytes come from: the session (or any object with its two members)."""

    @property
    def bytes_to_send(self) -> int: ...

    def data_to_send(self) -> bytes: ...


_ENDED = (OutputState.DONE, OutputState.BROKEN)


class Output:
    """The output state machine of one connection; see the module docstring.

    ``on_write`` is called before each ``send_all`` (metrics); ``on_failed(exc)`` once, when
    a write fails with ``BrokenResourceError``/``ClosedResourceError`` (the connection ends
    its session).  Other exceptions propagate to the writer's caller (the reader, or the
    connection's nursery for the sender task).
    """

    __slots__ = (
        "_done",
        "_nursery",
        "_on_failed",
        "_on_write",
        "_progress",
        "_source",
        "_stream",
        "_wake",
        "state",
    )

    def __init__(
        self,
        stream: trio.abc.SendStream,
        source: OutputSource,
        *,
        on_write: Callable[[], None],
        on_failed: Callable[[Exception], None],
    ) -> None:
        self.state = OutputState.INLINE
        self._stream = stream
        self._source = source
        self._on_write = on_write
        self._on_failed = on_failed
        self._nursery: trio.Nursery | None = None
        self._wake: trio.Event | None = None  # the sender's wake-up, while it waits
        self._progress: trio.Event | None = None  # set after the next write (backpressure)
        self._done: trio.Event | None = None  # set when the sender task has exited

    def open(self, nursery: trio.Nursery) -> None:
        """Where a sender task will run (the connection's nursery); call once, first."""
        self._nursery = nursery

    @property
    def broken(self) -> bool:
        return self.state is OutputState.BROKEN

    # -- transitions ---------------------------------------------------------------------

    async def flush(self) -> None:
        """The reader after handling a read, or the acker after queueing PUBACKs: write
        what is queued if nobody writes and there is no sender (INLINE), else leave it to
        the write in progress or wake the sender."""
        state = self.state
        if state is OutputState.INLINE:
            await self._write_inline()
            return
        if state is OutputState.SENDER or state is OutputState.FINISHING:
            self._wake_up()
        # INLINE_WRITING: that write's loop takes it; DONE, BROKEN: nothing is written
        await trio.lowlevel.checkpoint()

    def kick(self) -> None:
        """Output was queued by a task that must not write (a push from whatever task set
        the value): make sure it will be written, by a sender task from now on."""
        state = self.state
        if state is OutputState.INLINE:
            self._start_sender()
        elif state is OutputState.SENDER or state is OutputState.FINISHING:
            self._wake_up()
        # INLINE_WRITING: the write in progress takes it; DONE, BROKEN: nothing

    def finish(self) -> None:
        """No producer task is left (the reader ended, the acker drained): the rest is
        written, then nothing more (see :meth:`wait_done`)."""
        state = self.state
        if state is OutputState.SENDER:
            self.state = OutputState.FINISHING
            self._wake_up()
        elif state is OutputState.INLINE_WRITING:
            raise RuntimeError("finish() while a producer is writing")

    async def wait_progress(self) -> None:
        """Backpressure: return after the next write (INLINE: write everything now)."""
        state = self.state
        if state is OutputState.INLINE:
            await self._write_inline()
            return
        if state is not OutputState.SENDER and state is not OutputState.FINISHING:
            await trio.lowlevel.checkpoint()
            return
        if self._progress is None:
            self._progress = trio.Event()
        progress = self._progress
        self._wake_up()
        await progress.wait()

    async def wait_done(self) -> None:
        """Return once everything queued was written, or the stream broke.  In INLINE the
        caller's task writes it (→ DONE); otherwise the sender must have been told to
        ``finish()``."""
        state = self.state
        if state is OutputState.INLINE:
            await self._write_inline()
            if self.state is OutputState.INLINE:
                self.state = OutputState.DONE
            return
        if state in _ENDED:
            await trio.lowlevel.checkpoint()
            return
        if state is OutputState.INLINE_WRITING:
            raise RuntimeError("wait_done() while a producer is writing")
        assert self._done is not None
        await self._done.wait()

    # -- the writers ---------------------------------------------------------------------

    async def _write_inline(self) -> None:
        source = self._source
        self.state = OutputState.INLINE_WRITING
        try:
            while self.state is OutputState.INLINE_WRITING:
                data = source.data_to_send()
                if not data:
                    break
                self._on_write()
                await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(exc)
            return
        except BaseException:
            # cancelled (or a bug) inside send_all: the stream's state is unknown, so no
            # sender may write after this partial write
            self.state = OutputState.BROKEN
            raise
        self.state = OutputState.INLINE

    def _start_sender(self) -> None:
        if self._nursery is None:
            raise RuntimeError("Output.open(nursery) was not called")
        self.state = OutputState.SENDER
        self._done = trio.Event()
        self._nursery.start_soon(self._send_loop)

    async def _send_loop(self) -> None:
        source = self._source
        done = self._done
        assert done is not None
        try:
            while True:
                data = source.data_to_send()
                if data:
                    self._on_write()
                    await self._stream.send_all(data)
                    progress = self._progress
                    if progress is not None:
                        self._progress = None
                        progress.set()
                    continue
                if self.state is not OutputState.SENDER:
                    break  # FINISHING: all written
                self._wake = trio.Event()
                await self._wake.wait()
            if self.state is OutputState.FINISHING:
                self.state = OutputState.DONE
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(exc)
        finally:
            self._wake = None
            done.set()

    def _wake_up(self) -> None:
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()

    def _fail(self, exc: Exception) -> None:
        if self.state is OutputState.BROKEN:
            return
        self.state = OutputState.BROKEN
        progress = self._progress
        if progress is not None:
            self._progress = None
            progress.set()
        self._wake_up()
        self._on_failed(exc)
