"""Verified passwords, remembered: a password device pays scrypt once, not on every request.

Theory of operation
-------------------
A password is stored as scrypt (``gateway/services/credentials.py``), about 10 ms of CPU per
check: fine once per MQTT session, ruinous for an HTTP device that authenticates every
request.  After a successful check the process keeps a **proof**: HMAC-SHA256, under a key
drawn at random when the process starts, of (connector, identity, stored credential hash,
password), length-prefixed so no two field lists share an encoding.  The next request
computes the same HMAC (a microsecond) and compares it with the proof in constant time;
a match admits the password without scrypt.  Neither the password nor anything derived
from it without the key is kept, and the key never leaves the process (no two processes,
and no restart, share proofs).

**Bound to the credential's version.**  The caller reads the device row on every request
(an indexed point read) and passes the stored hash it found; the proof covers that hash.
Revoking credentials clears the hash and a new activation or a re-add stores a new one (a
fresh salt even for the same password), so a proof made before the change can never match
after it, whether or not the committed event that announces the change has arrived yet.
A lock and a delete need no proof change: the row read refuses them (locked → 403, gone →
401) before or after the proof check.  The committed events (``locked``, ``deleted``,
``reprovision``, ``provisioned``; every process of the node receives them over the bus,
docs/architecture.md "The node") only free the entry early (:meth:`PasswordCache.on_events`).

**Bounded.**  At most ``capacity`` entries, one per device, least recently used evicted
first; about :data:`BYTES_PER_ENTRY` bytes each.  ``capacity`` 0 turns the cache off.
There is no negative cache: a wrong password finds no matching proof and pays the full
scrypt every time, so guessing stays as slow as it was.

Trio thread only (no locks); nothing here blocks.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from collections.abc import Sequence

from gateway.metrics import Metrics
from gateway.store.api import CommittedEvent

__all__ = ["BYTES_PER_ENTRY", "FORGET_EVENTS", "PasswordCache"]

FORGET_EVENTS = frozenset({"locked", "deleted", "reprovision", "provisioned"})
"""Committed event types after which a device's remembered proof is dropped."""

BYTES_PER_ENTRY = 400
"""Upper bound of one entry's memory (key tuple, identity string of up to ~64 characters,
32-byte proof, ordered-dict slot), checked by tests/unit/test_password_cache.py."""

_HIT = (("outcome", "hit"),)
_MISS = (("outcome", "miss"),)


def _field(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")
    return len(raw).to_bytes(4, "big") + raw


class PasswordCache:
    """Proofs of verified passwords, one per (connector, identity), LRU-bounded (see the
    module docstring).  ``metrics`` counts lookups (``password_cache`` by outcome) and
    holds the entry count (``password_cache_entries``); ``key`` is for tests only."""

    __slots__ = ("_entries", "_key", "capacity", "metrics")

    def __init__(self, capacity: int, metrics: Metrics, *, key: bytes | None = None) -> None:
        if capacity < 0:
            raise ValueError("the password cache capacity must be >= 0")
        self.capacity = capacity
        self.metrics = metrics
        self._key = key if key is not None else secrets.token_bytes(32)
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def proof(self, cid: str, identity: str, cred_hash: str, password: str) -> bytes:
        """The keyed digest that stands for "``password`` matched ``cred_hash``"."""
        msg = b"".join(map(_field, (cid, identity, cred_hash, password)))
        return hmac.digest(self._key, msg, "sha256")

    def admits(self, cid: str, identity: str, proof: bytes) -> bool:
        """Whether ``proof`` is the one remembered for the device (a hit refreshes it).
        Every call counts as a hit or a miss."""
        known = self._entries.get((cid, identity))
        if known is not None and hmac.compare_digest(known, proof):
            self._entries.move_to_end((cid, identity))
            self.metrics.password_cache[_HIT] += 1
            return True
        self.metrics.password_cache[_MISS] += 1
        return False

    def remember(self, cid: str, identity: str, proof: bytes) -> None:
        """Keep ``proof`` after scrypt accepted the password (replacing an older proof of
        the device), evicting the least recently used entries past ``capacity``."""
        if not self.capacity:
            return
        key = (cid, identity)
        self._entries[key] = proof
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        self._count()

    def forget(self, cid: str, identity: str) -> None:
        if self._entries.pop((cid, identity), None) is not None:
            self._count()

    def clear(self) -> None:
        self._entries.clear()
        self._count()

    def on_events(self, events: Sequence[CommittedEvent]) -> None:
        """Committed events (every process, in commit order): drop the proofs of devices
        locked, deleted, revoked or provisioned anew."""
        if not self._entries:
            return
        for ev in events:
            if ev.type in FORGET_EVENTS and ev.identity is not None:
                self.forget(ev.connector_id, ev.identity)

    def _count(self) -> None:
        self.metrics.password_cache_entries[()] = len(self._entries)
