"""The control path: cloud-set values reach connected devices within milliseconds.

MQTT sessions register themselves per device as a :class:`PushTarget`; HTTP long-polls
wait on a per-device :class:`trio.Event`.  :meth:`ControlHub.notify` runs in the Trio
thread right after the set value's transaction committed, so a device is never told about a
value that could still be lost.  Registration is also where a second MQTT connection for
an identity replaces the first (``duplicate_connection``, docs/protocol.md §12 item 9).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec
import trio

__all__ = ["ControlHub", "Push", "PushTarget"]


class Push(msgspec.Struct, frozen=True, gc=False):
    """A set value to deliver: MQTT topic ``$resource/<alias>/<timestamp µs>``."""

    alias: str
    value: str
    timestamp: int


class PushTarget(Protocol):
    """What an MQTT session offers the hub.  Both methods must not block."""

    def push(self, pushes: Sequence[Push]) -> None: ...

    def kick(self, reason: str) -> None: ...


class ControlHub:
    def __init__(self) -> None:
        self._sessions: dict[int, PushTarget] = {}
        self._waiters: dict[int, trio.Event] = {}

    def attach(self, device_id: int, target: PushTarget) -> None:
        """Make ``target`` the device's live MQTT session; an older one is kicked."""
        old = self._sessions.get(device_id)
        self._sessions[device_id] = target
        if old is not None and old is not target:
            old.kick("duplicate_connection")

    def detach(self, device_id: int, target: PushTarget) -> bool:
        """Forget ``target`` if it is still the device's session.  Returns whether another
        session for the device remains (the device stays online)."""
        current = self._sessions.get(device_id)
        if current is target:
            del self._sessions[device_id]
            return False
        return current is not None

    def online(self, device_id: int) -> bool:
        return device_id in self._sessions

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def notify(self, device_id: int, pushes: Sequence[Push]) -> None:
        """Deliver committed set values: push to the MQTT session, wake long-polls."""
        target = self._sessions.get(device_id)
        if target is not None and pushes:
            target.push(pushes)
        ev = self._waiters.pop(device_id, None)
        if ev is not None:
            ev.set()

    def change_event(self, device_id: int) -> trio.Event:
        """An event set at the device's next committed set value (shared by all waiters of
        the device, so a thousand long-polls cost one Event each per device, not per poll)."""
        ev = self._waiters.get(device_id)
        if ev is None:
            ev = self._waiters[device_id] = trio.Event()
        return ev

    def kick(self, device_id: int, reason: str) -> None:
        target = self._sessions.get(device_id)
        if target is not None:
            target.kick(reason)
