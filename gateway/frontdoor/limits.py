"""The front door's limits: handshakes in flight per address, and connection admission.

**Handshakes per address.**  The process admits ``max_handshakes_in_flight`` TLS handshakes
at once (gateway/frontdoor/connection.py).  Without more, one host opening hundreds of
silent sockets holds those slots until each socket's handshake deadline, and every other
device waits behind it.  :class:`HandshakesPerIp` guarantees each address (:func:`ip_key`:
an IPv6 /64 counts as one) ``per_ip`` of them: an address may start a handshake when
fewer than ``per_ip`` of its own are in flight, or, beyond that, while more than
``per_ip`` process slots are free (*borrowing*: an uncontended door serves one busy
address at full speed, a NAT's reconnect storm included).  Otherwise the connection waits
for one of its address's own handshakes to end, without taking a process slot, against
the same handshake deadline; one cut while still waiting is refused with reason
``ip_handshakes``.  So one address can never take the last ``per_ip`` slots, and a device
of another address finds one (docs/decisions.md "Limits").

State: one entry per address with a connection in the handshake stage (a count and a
semaphore), dropped when its last such connection moves on, so it is bounded by the
process's connection slots; O(1) per connection.

**Admission.**  Once the handshake named the connector, :class:`Admission` (the services'
:class:`~gateway.services.limits.DeviceLimits`) says whether this connection may go on
(connection rate per address and per connector) before a protocol byte is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import trio

from gateway.services.limits import IP_HANDSHAKES, ip_key

__all__ = ["IP_HANDSHAKES", "Admission", "HandshakeTurn", "HandshakesPerIp"]


class Admission(Protocol):
    """Decides whether a connection whose connector is known may go on."""

    def admit(self, cid: str, ip: str) -> tuple[str, str] | None:
        """None to admit, else the refusal's (reason, detail)."""
        ...


class _Slot:
    __slots__ = ("semaphore", "users")

    def __init__(self, per_ip: int) -> None:
        self.semaphore = trio.Semaphore(per_ip)
        self.users = 0  # connections of this address waiting or handshaking


class HandshakeTurn:
    """``async with gate.turn(ip) as turn``: wait for this address's turn; ``turn.got``
    tells, after a cancellation, whether the wait was over."""

    __slots__ = ("_gate", "_held", "_key", "_slot", "got")

    def __init__(self, gate: HandshakesPerIp, key: str) -> None:
        self._gate = gate
        self._key = key
        self._slot: _Slot | None = None
        self._held = False  # one of the address's own turns (not a borrowed slot)
        self.got = False

    async def __aenter__(self) -> HandshakeTurn:
        gate = self._gate
        if gate.per_ip <= 0:
            self.got = True
            return self
        slot = gate._slots.get(self._key)
        if slot is None:
            slot = gate._slots[self._key] = _Slot(gate.per_ip)
        slot.users += 1
        self._slot = slot
        semaphore = slot.semaphore
        if semaphore.value == 0 and gate.free() > gate.per_ip:
            # Borrowed: the door is not contended.  No checkpoint here: the caller takes
            # the process slot next without yielding (CapacityLimiter.acquire takes a free
            # token before its checkpoint), so no other connection can borrow the same one.
            pass
        else:
            try:
                await semaphore.acquire()
            except BaseException:
                self._leave()
                raise
            self._held = True
        self.got = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._slot is not None:
            if self._held:
                self._slot.semaphore.release()
            self._leave()

    def _leave(self) -> None:
        slot = self._slot
        assert slot is not None
        slot.users -= 1
        if not slot.users:
            del self._gate._slots[self._key]


class HandshakesPerIp:
    """``per_ip`` handshakes of each address, more only while more than ``per_ip`` of the
    process's slots are ``free()`` (see the module docstring; 0: no limit)."""

    __slots__ = ("_slots", "free", "per_ip")

    def __init__(self, per_ip: int, free: Callable[[], float]) -> None:
        self.per_ip = per_ip
        self.free = free
        self._slots: dict[str, _Slot] = {}

    def turn(self, ip: str) -> HandshakeTurn:
        return HandshakeTurn(self, ip_key(ip))

    def __len__(self) -> int:
        """Addresses with a connection in the handshake stage."""
        return len(self._slots)
