"""Which nodes of a cluster are alive: each node beats, and a dead node's devices go offline.

Theory of operation
-------------------
A node that dies and never comes back cannot write the ``disconnect`` of its devices, so
without help they would show online forever.  Every node's store-owning process therefore
beats its row of the shared store's ``cluster_nodes`` table (:class:`~gateway.store.api.
NodeBeat`: its name, the prefix of its connection ids, its wall clock) every
:data:`BEAT_EVERY_S`, and in the same write declares lost the nodes whose last beat is older
than ``lost_after_s`` (:class:`~gateway.store.api.ReapNodes`: their rows go and their
devices go offline with a ``node_lost`` disconnect, in one transaction, so two nodes reaping
at once take each lost node once).

The danger is declaring a live node lost.  Rows age for everyone alike while the *store* is
away (a PostgreSQL restart): the first node whose beat gets through afterwards would find
every other row stale.  And a node whose own beats stall (its process starved of CPU, its
writer queue long) sees the others through a delay.  So a node reaps only once its own
beats have gone through without a gap for ``lost_after_s`` (:class:`BeatTracker`): by then
every live node has beaten again since the outage or the stall.  What remains is a node
whose beats really stopped for ``lost_after_s`` while the reaper's did not — dead, or cut
off from the store, which for devices is the same.  A node declared lost that was alive
finds its row gone at its next beat (:class:`~gateway.store.api.NodeBeat` returns False)
and says so in its log (docs/decisions.md "A lost cluster node").
"""

from __future__ import annotations

import logging

import trio

from gateway.clock import now_us
from gateway.errors import StoreFailed
from gateway.store.api import NodeBeat, ReapNodes, Store

__all__ = ["BEAT_EVERY_S", "BeatTracker", "run_node_beat"]

log = logging.getLogger(__name__)

BEAT_EVERY_S = 2.0  # at most; a quarter of lost_after_s when that is shorter
GAP_BEATS = 3  # successive beats further apart than this many periods: a gap


class BeatTracker:
    """Sans-IO: from the outcomes of this node's own beats (monotonic times), whether it may
    declare other nodes lost (see the module docstring)."""

    __slots__ = ("_last_ok", "_steady_since", "every", "lost_after_s")

    def __init__(self, every: float, lost_after_s: float) -> None:
        self.every = every
        self.lost_after_s = lost_after_s
        self._last_ok: float | None = None
        self._steady_since: float | None = None

    def ok(self, t: float) -> None:
        """A beat went through at ``t``."""
        if self._last_ok is None or t - self._last_ok > GAP_BEATS * self.every:
            self._steady_since = t  # first beat, or after a gap: start counting again
        self._last_ok = t

    def failed(self) -> None:
        """A beat did not go through (the store is away or full)."""
        self._last_ok = None
        self._steady_since = None

    def may_reap(self, t: float) -> bool:
        """Whether the beat about to be sent at ``t`` may declare other nodes lost."""
        since = self._steady_since
        return since is not None and t - since >= self.lost_after_s


async def run_node_beat(
    store: Store,
    node: str,
    prefix: str,
    lost_after_s: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Until cancelled: beat ``node`` (connection ids starting with ``prefix``) and, when
    :class:`BeatTracker` allows it, declare lost the nodes silent for ``lost_after_s``."""
    task_status.started()
    every = min(BEAT_EVERY_S, lost_after_s / 4)
    lost_after_us = int(lost_after_s * 1e6)
    tracker = BeatTracker(every, lost_after_s)
    beaten = False
    while True:
        now = now_us()
        ops: list[NodeBeat | ReapNodes] = [NodeBeat(node, prefix, now)]
        if tracker.may_reap(trio.current_time()):
            ops.append(ReapNodes(now - lost_after_us, now))
        try:
            results = await store.write(ops)
        except StoreFailed as exc:  # the store is away or full: the next beat tries again
            tracker.failed()
            log.warning("cluster beat not written: %s", exc.message)
        else:
            tracker.ok(trio.current_time())
            if beaten and not results[0]:
                log.error(
                    "this node was declared lost by another (no beat for %.0f s): devices "
                    "connected here show offline until they connect again",
                    lost_after_s,
                )
            beaten = True
        await trio.sleep(every)
