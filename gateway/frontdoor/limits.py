"""The front door's limits: handshakes in flight per address, and connection admission.

**Handshakes per address.**  The process admits ``max_handshakes_in_flight`` TLS handshakes
at once (gateway/frontdoor/connection.py).  Without more, one host opening hundreds of
silent sockets holds those slots until each socket's handshake deadline, and every other
device waits behind it.  :class:`HandshakesPerIp` gives each address (:func:`ip_key`: an
IPv6 /64 counts as one) at most ``per_ip`` of them: that address's further connections
wait for one of its own handshakes to end, without taking a process slot, against the same
handshake deadline; one cut while still waiting is refused with reason ``ip_handshakes``.
A device behind a NAT shared by thousands still gets ``per_ip`` handshakes at a time,
which on two cores is more than the CPU can run anyway (docs/decisions.md "Limits").

State: one entry per address with a connection in the handshake stage (a count and a
semaphore), dropped when its last such connection moves on, so it is bounded by the
process's connection slots; O(1) per connection.

**Admission.**  Once the handshake named the connector, :class:`Admission` (the services'
:class:`~gateway.services.limits.DeviceLimits`) says whether this connection may go on
(connection rate per address and per connector) before a protocol byte is read.
"""

from __future__ import annotations

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

    __slots__ = ("_gate", "_key", "_slot", "got")

    def __init__(self, gate: HandshakesPerIp, key: str) -> None:
        self._gate = gate
        self._key = key
        self._slot: _Slot | None = None
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
        try:
            await slot.semaphore.acquire()
        except BaseException:
            self._leave()
            raise
        self.got = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._slot is not None:
            self._slot.semaphore.release()
            self._leave()

    def _leave(self) -> None:
        slot = self._slot
        assert slot is not None
        slot.users -= 1
        if not slot.users:
            del self._gate._slots[self._key]


class HandshakesPerIp:
    """At most ``per_ip`` handshakes of one address in flight (0: no limit)."""

    __slots__ = ("_slots", "per_ip")

    def __init__(self, per_ip: int) -> None:
        self.per_ip = per_ip
        self._slots: dict[str, _Slot] = {}

    def turn(self, ip: str) -> HandshakeTurn:
        return HandshakeTurn(self, ip_key(ip))

    def __len__(self) -> int:
        """Addresses with a connection in the handshake stage."""
        return len(self._slots)
