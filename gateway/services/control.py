"""The control path: cloud-set values and kicks reach connected devices within milliseconds,
on whichever process holds them.

Theory of operation
-------------------
MQTT sessions register themselves per device (connector, identity) as a :class:`PushTarget`
with their connection id; HTTP long-polls wait on a per-device :class:`Wakeup`.  The hub
never hears from the management API directly: it reacts to **committed events**
(:meth:`ControlHub.on_events`), which reach every process of the node in commit order
through the bus (docs/architecture.md "The node"), so a device is never told about a
value that could still be lost, and the same code serves one process and many:

* ``data_out`` (a cloud set): the values of ``sync`` resources are pushed to the device's
  MQTT session and its long-polls wake up;
* ``locked``, ``deleted``, ``reprovision``: the device's MQTT session is kicked and its
  long-polls end with the refusal the device's next request would get (``locked``,
  ``deleted``, ``credentials_reset``): lock means now;
* ``connect`` of a connection this process does not hold: the device's session here is
  older (its own ``connect`` committed earlier, with a lower ``seq``) and is closed with
  ``duplicate_connection`` (docs/protocol.md §12 item 9).  A session whose ``connect`` has
  not committed yet is the newer one and stays; a second connection on the same process
  replaces the first at once (:meth:`ControlHub.attach`).

Trio thread only; nothing here blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec
import trio

from gateway.errors import Refused
from gateway.services.connectors import Registry
from gateway.store.api import CommittedEvent

__all__ = ["KICK_EVENTS", "ControlHub", "DeviceKey", "Push", "PushTarget", "Wakeup", "kicked"]

DeviceKey = tuple[str, str]  # (connector id, identity)

KICK_EVENTS = {"locked": "locked", "deleted": "deleted", "reprovision": "credentials_reset"}
"""Committed event type → the reason a live session of that device ends with."""


class Push(msgspec.Struct, frozen=True, gc=False):
    """A set value to deliver: MQTT topic ``$resource/<alias>/<timestamp µs>``."""

    alias: str
    value: str
    timestamp: int


class PushTarget(Protocol):
    """What an MQTT session offers the hub.  Both methods must not block."""

    def push(self, pushes: Sequence[Push]) -> None: ...

    def kick(self, reason: str) -> None: ...


def kicked(reason: str) -> Refused:
    """The refusal a long-poll ends with when its device is kicked (and what the device's
    next request gets anyway: docs/protocol.md §5.4)."""
    if reason == "locked":
        return Refused("device is locked", reason="locked", http_status=403)
    if reason == "deleted":
        return Refused("the device was deleted", reason="deleted", http_status=401)
    return Refused("the device's credentials were revoked", reason=reason, http_status=401)


class Wakeup:
    """Shared by every long-poll of one device until the next change: set by a committed
    set value, or by a kick (then :meth:`wait` raises the kick's refusal)."""

    __slots__ = ("_event", "reason")

    def __init__(self) -> None:
        self._event = trio.Event()
        self.reason: str | None = None

    def set(self, reason: str | None = None) -> None:
        self.reason = reason
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        if self.reason is not None:
            raise kicked(self.reason)

    def statistics(self) -> trio.EventStatistics:
        """How many tasks wait (``tasks_waiting``), as :meth:`trio.Event.statistics`."""
        return self._event.statistics()


class _Session:
    __slots__ = ("connection_id", "seq", "target")

    def __init__(self, target: PushTarget, connection_id: str) -> None:
        self.target = target
        self.connection_id = connection_id
        self.seq: int | None = None  # the seq of this connection's committed ``connect``


class ControlHub:
    """Live MQTT sessions and long-poll wake-ups of this process (see the module
    docstring).  ``registry`` says which resources are ``sync`` (pushed)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._sessions: dict[DeviceKey, _Session] = {}
        self._waiters: dict[DeviceKey, Wakeup] = {}
        self.kicks = 0  # sessions and long-poll groups ended by a kick (lock, duplicate...)

    def attach(self, key: DeviceKey, connection_id: str, target: PushTarget) -> None:
        """Make ``target`` the device's live MQTT session; an older one is kicked."""
        old = self._sessions.get(key)
        self._sessions[key] = _Session(target, connection_id)
        if old is not None and old.target is not target:
            self.kicks += 1
            old.target.kick("duplicate_connection")

    def detach(self, key: DeviceKey, target: PushTarget) -> bool:
        """Forget ``target`` if it is still the device's session.  Returns whether another
        session for the device remains (the device stays online)."""
        current = self._sessions.get(key)
        if current is not None and current.target is target:
            del self._sessions[key]
            return False
        return current is not None

    def online(self, key: DeviceKey) -> bool:
        return key in self._sessions

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def notify(self, key: DeviceKey, pushes: Sequence[Push]) -> None:
        """Deliver committed set values: push to the MQTT session, wake long-polls."""
        session = self._sessions.get(key)
        if session is not None and pushes:
            session.target.push(pushes)
        wake = self._waiters.pop(key, None)
        if wake is not None:
            wake.set()

    def change_event(self, key: DeviceKey) -> Wakeup:
        """A wake-up at the device's next committed set value or kick (shared by all
        waiters of the device: a thousand long-polls cost one object per device)."""
        wake = self._waiters.get(key)
        if wake is None:
            wake = self._waiters[key] = Wakeup()
        return wake

    def long_polls(self, key: DeviceKey) -> int:
        """How many long-polls of the device wait for its next change on this process (what
        a test waits for before setting a value, instead of sleeping)."""
        wake = self._waiters.get(key)
        return 0 if wake is None else wake.statistics().tasks_waiting

    def kick(self, key: DeviceKey, reason: str) -> None:
        """End the device's MQTT session and long-polls on this process."""
        session = self._sessions.get(key)
        if session is not None:
            self.kicks += 1
            session.target.kick(reason)
        wake = self._waiters.pop(key, None)
        if wake is not None:
            self.kicks += 1
            wake.set(reason)

    # -- committed events ------------------------------------------------------------------

    def on_events(self, events: Sequence[CommittedEvent]) -> None:
        """React to committed events (every process, in commit order; see the module
        docstring)."""
        for ev in events:
            kind = ev.type
            if kind == "data_in" or ev.identity is None:
                continue
            key = (ev.connector_id, ev.identity)
            if kind == "data_out":
                self._set_values(key, ev)
            elif kind == "connect":
                self._connected(key, ev)
            elif kind in KICK_EVENTS:
                self.kick(key, KICK_EVENTS[kind])

    def _set_values(self, key: DeviceKey, ev: CommittedEvent) -> None:
        if key not in self._sessions and key not in self._waiters:
            return
        entry = self.registry.get(key[0])
        if entry is None:
            return
        resources = self.registry.resources(key[0])
        pushes: list[Push] = []
        payload: Any = ev.payload
        for group in payload if isinstance(payload, list) else ():
            ts = group.get("timestamp", ev.timestamp) if isinstance(group, dict) else ev.timestamp
            values = group.get("values", {}) if isinstance(group, dict) else {}
            for alias, value in values.items():
                res = resources.get(alias)
                if res is not None and res.sync:
                    pushes.append(Push(alias, str(value), int(ts)))
        self.notify(key, pushes)

    def _connected(self, key: DeviceKey, ev: CommittedEvent) -> None:
        session = self._sessions.get(key)
        if session is None:
            return
        if session.connection_id == ev.connection_id:
            session.seq = ev.seq
        elif session.seq is not None and session.seq < ev.seq:
            # a newer connection of this identity committed its connect elsewhere
            del self._sessions[key]
            self.kicks += 1
            session.target.kick("duplicate_connection")
