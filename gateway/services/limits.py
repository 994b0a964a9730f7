"""Per-connector limits: who may connect, authenticate, activate, publish and upload how fast.

Theory of operation.  Every limit is a small state machine keyed by something cheap
(a connector, an address, a device), advanced by the caller's clock reading and never
by a timer, so the same code runs under ``trio.testing.MockClock`` and costs nothing while
nobody knocks.  Three shapes cover the connector's ``limits`` settings
(docs/protocol.md §6.4, defaults and their reasons in docs/decisions.md "Limits"):

* a **token bucket** (:class:`Rate`: ``rate`` per second, up to ``burst``): new connections
  per address and per connector, publishes and published bytes per device;
* a **failure budget with exponential back-off** (:class:`Backoff`): an address may fail
  ``burst`` authentications (or activations), the budget refilling at ``rate`` per
  second; a failure with the budget spent closes the address for ``backoff_s``, doubling
  with each further failure up to ``max_backoff_s``, and while closed every attempt is
  refused *before* any store lookup or scrypt (:class:`~gateway.errors.RateLimited`);
  a budget refilled to full forgets the doubling;
* **flapping detection** (:class:`Flapping`, like EMQX's): more than ``max_connects``
  MQTT connects of one identity within ``window_s`` ban it for ``ban_s``.

State is per process.  The node's workers share the listening sockets, so a client's
connections spread over them and an address's effective allowance is the per-worker one
times the number of workers (docs/decisions.md "Limits"); a device's publish budget is
exact (one MQTT session, one worker).  Each table is bounded (:data:`MAX_KEYS`) and
ordered by last use: a flood of new keys evicts the keys idle longest, O(1) per event
(a dict pop and insert).  An evicted key starts again with a full budget, which is what
an idle key would have had anyway.  IPv6 addresses are keyed by their /64 (:func:`ip_key`):
one host is usually given a whole /64.

Every refusal and throttle is counted in ``Metrics.limited`` (connector, limit) by this
module; the protocol layers write the debug record with the refusal's reason, which is the
limit's name (docs/protocol.md §12 item 24).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import msgspec
import trio

from gateway.errors import BadRequest, RateLimited
from gateway.metrics import Metrics

__all__ = [
    "CONNECTION_LIMITS",
    "DEFAULT_MAX_PAYLOAD",
    "MAX_KEYS",
    "Backoff",
    "BackoffTable",
    "DeviceLimits",
    "Flapping",
    "FlappingTable",
    "Limits",
    "PublishBudget",
    "Rate",
    "RateTable",
    "check_limits",
    "ip_key",
]

DEFAULT_MAX_PAYLOAD = 1_048_576  # bytes per resource value (docs/protocol.md §3.1)
MAX_KEYS = 65_536  # entries per table and process (about 100 bytes each)
MAX_RATE = 1e9  # a sanity bound for validation, per second
MAX_SECONDS = 7 * 86_400.0  # windows and bans: a week at most

# The reasons (docs/protocol.md §12 item 24), one per limit; also the ``limit`` label.
CONNECTION_RATE = "connection_rate"  # new connections of one address to a connector
CONNECTOR_RATE = "connector_connection_rate"  # new connections to a connector
FLAPPING = "flapping"  # an identity banned for reconnecting too often
AUTH_BACKOFF = "auth_backoff"  # an address backed off after failed authentications
ACTIVATION_BACKOFF = "activation_backoff"  # ... after failed activations
PUBLISH_RATE = "publish_rate"  # a device's publishes per second
PUBLISH_BYTES = "publish_bytes"  # a device's published bytes per second
UPLOAD_QUOTA = "upload_quota"  # a device's uploaded content, in bytes
IP_HANDSHAKES = "ip_handshakes"  # TLS handshakes of one address in flight (front door)
CONNECTION_LIMITS = frozenset({CONNECTION_RATE, CONNECTOR_RATE})

# Authentication refusals that count as a failure of the address (a locked device is no
# guess); activations count every refusal but ``already_provisioned``, which a fleet
# re-activating after a reboot gets by the thousand (docs/decisions.md "Limits").
AUTH_FAILURES = frozenset({"not_authenticated", "bad_password"})
NOT_ACTIVATION_FAILURES = frozenset({"already_provisioned"})

K = TypeVar("K", bound=Hashable)


# -- settings ---------------------------------------------------------------------------------


class Rate(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A token bucket: ``rate`` tokens per second, at most ``burst`` (1 or more) saved;
    rate 0 is off."""

    rate: float
    burst: float

    @property
    def on(self) -> bool:
        return self.rate > 0


class Backoff(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``burst`` failures free, refilling at ``rate`` per second; then closed for
    ``backoff_s`` doubling per failure up to ``max_backoff_s``; burst 0 is off."""

    burst: float = 100
    rate: float = 1.0
    backoff_s: float = 1.0
    max_backoff_s: float = 300.0

    @property
    def on(self) -> bool:
        return self.burst > 0


class Flapping(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """More than ``max_connects`` connects of one identity within ``window_s`` ban it for
    ``ban_s``; max_connects 0 is off."""

    max_connects: int = 30
    window_s: float = 60.0
    ban_s: float = 300.0

    @property
    def on(self) -> bool:
        return self.max_connects > 0


def _rate(rate: float, burst: float) -> Callable[[], Rate]:
    return lambda: Rate(rate, burst)


class Limits(msgspec.Struct, forbid_unknown_fields=True):
    """A connector's ``limits`` (docs/protocol.md §6.4); defaults: docs/decisions.md
    "Limits".  Rates and back-offs are per process of the node."""

    max_payload: int = DEFAULT_MAX_PAYLOAD  # bytes per resource value
    max_packet_size: int = DEFAULT_MAX_PAYLOAD + 4096  # bytes per MQTT packet
    connections_per_ip: Rate = msgspec.field(default_factory=_rate(100, 10_000))
    connections: Rate = msgspec.field(default_factory=_rate(1_000, 40_000))
    flapping: Flapping = msgspec.field(default_factory=Flapping)
    auth_failures_per_ip: Backoff = msgspec.field(default_factory=Backoff)
    activation_failures_per_ip: Backoff = msgspec.field(default_factory=Backoff)
    publishes: Rate = msgspec.field(default_factory=_rate(100, 1_000))
    publish_bytes: Rate = msgspec.field(default_factory=_rate(1_048_576, 16_777_216))
    upload_quota: int = 64 * 1_048_576  # bytes of device uploads per device; 0: no uploads


def _check_rate(name: str, r: Rate) -> None:
    if not (0 <= r.rate <= MAX_RATE and math.isfinite(r.rate)):
        raise BadRequest(f"limits.{name}.rate must be between 0 (off) and {MAX_RATE:g} per second")
    if not 1 <= r.burst <= MAX_RATE:
        raise BadRequest(f"limits.{name}.burst must be between 1 and {MAX_RATE:g}")


def check_limits(s: Limits) -> None:
    """Raise ``BadRequest`` naming the first setting out of range (nothing is changed).
    Every rule is a range of one field, so the OpenAPI document states them all
    (gateway/mgmt/openapi.py); a ``backoff_s`` above ``max_backoff_s`` simply backs off
    ``max_backoff_s``."""
    if not 64 <= s.max_payload <= 64 * 1_048_576:
        raise BadRequest("limits.max_payload must be between 64 bytes and 64 MiB")
    _check_rate("connections_per_ip", s.connections_per_ip)
    _check_rate("connections", s.connections)
    _check_rate("publishes", s.publishes)
    _check_rate("publish_bytes", s.publish_bytes)
    for name, b in (
        ("auth_failures_per_ip", s.auth_failures_per_ip),
        ("activation_failures_per_ip", s.activation_failures_per_ip),
    ):
        if not 0 <= b.burst <= MAX_RATE:
            raise BadRequest(f"limits.{name}.burst must be between 0 (off) and {MAX_RATE:g}")
        if not 0 < b.rate <= MAX_RATE:
            raise BadRequest(f"limits.{name}.rate must be above 0 (failures forgiven per second)")
        if not (0 < b.backoff_s <= MAX_SECONDS and 0 < b.max_backoff_s <= MAX_SECONDS):
            raise BadRequest(
                f"limits.{name}.backoff_s and max_backoff_s must be above 0 and at most "
                f"{MAX_SECONDS:g} seconds"
            )
    f = s.flapping
    if not 0 <= f.max_connects <= 1_000_000:
        raise BadRequest("limits.flapping.max_connects must be between 0 (off) and 1000000")
    if not (0 < f.window_s <= MAX_SECONDS and 0 < f.ban_s <= MAX_SECONDS):
        raise BadRequest(
            f"limits.flapping.window_s and ban_s must be above 0 and at most {MAX_SECONDS:g}"
        )
    if not 0 <= s.upload_quota <= 1 << 40:
        raise BadRequest("limits.upload_quota must be between 0 (no uploads) and 1 TiB")


# -- mechanics (no I/O: the caller passes the time) ---------------------------------------------


def ip_key(ip: str) -> str:
    """The address a per-IP limit counts: IPv4 as it is, IPv4-mapped IPv6 as its IPv4,
    other IPv6 by its /64 (what one host or one customer line is usually given)."""
    if ":" not in ip:
        return ip
    try:
        addr = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return f"{ipaddress.IPv6Address(int(addr) >> 64 << 64)}/64"


class _Table(Generic[K]):
    """A dict in least-recently-used order, bounded to ``max_keys``."""

    __slots__ = ("_d", "max_keys")

    def __init__(self, max_keys: int) -> None:
        self._d: dict[K, list[float]] = {}
        self.max_keys = max_keys

    def __len__(self) -> int:
        return len(self._d)

    def take_out(self, key: K) -> list[float] | None:
        return self._d.pop(key, None)

    def put_back(self, key: K, entry: list[float]) -> None:
        d = self._d
        if len(d) >= self.max_keys:
            del d[next(iter(d))]  # idle longest
        d[key] = entry

    def peek(self, key: K) -> list[float] | None:
        return self._d.get(key)


class RateTable(_Table[K]):
    """Token buckets by key: entry ``[tokens, last refill]``."""

    __slots__ = ()

    def take(self, key: K, rate: Rate, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens: 0.0 if they were there, else the seconds until they
        will be (nothing taken).  A cost above the burst asks for the whole burst."""
        if not rate.on:
            return 0.0
        entry = self.take_out(key)
        if entry is None:
            tokens = rate.burst
        else:
            tokens = min(rate.burst, entry[0] + (now - entry[1]) * rate.rate)
        need = min(cost, rate.burst)
        if tokens >= need:
            self.put_back(key, [tokens - need, now])
            return 0.0
        self.put_back(key, [tokens, now])
        return (need - tokens) / rate.rate


class BackoffTable(_Table[K]):
    """Failure budgets by key: entry ``[budget, last refill, level, closed until]``."""

    __slots__ = ()

    def closed_for(self, key: K, now: float) -> float:
        """Seconds this key stays closed (0.0: open).  Does not change its state."""
        entry = self.peek(key)
        if entry is None or entry[3] <= now:
            return 0.0
        return entry[3] - now

    def failed(self, key: K, policy: Backoff, now: float) -> float:
        """Count one failure; the back-off it starts in seconds, or 0.0 within budget."""
        if not policy.on:
            return 0.0
        entry = self.take_out(key)
        if entry is None:
            budget, level = policy.burst, 0.0
        else:
            budget = min(policy.burst, entry[0] + (now - entry[1]) * policy.rate)
            level = 0.0 if budget >= policy.burst else entry[2]
        if budget >= 1:
            self.put_back(key, [budget - 1, now, level, 0.0])
            return 0.0
        wait: float = min(policy.max_backoff_s, policy.backoff_s * 2.0 ** min(level, 60.0))
        self.put_back(key, [budget, now, level + 1, now + wait])
        return wait


class FlappingTable(_Table[K]):
    """Connect counts by key: entry ``[window start, connects in it, banned until]``."""

    __slots__ = ()

    def connect(self, key: K, policy: Flapping, now: float) -> float:
        """Count a connect: 0.0 if allowed, else the seconds the key stays banned."""
        if not policy.on:
            return 0.0
        entry = self.take_out(key)
        if entry is None:
            entry = [now, 0.0, 0.0]
        if entry[2] > now:
            self.put_back(key, entry)
            return entry[2] - now
        if now - entry[0] >= policy.window_s:
            entry[0], entry[1] = now, 0.0
        entry[1] += 1
        if entry[1] > policy.max_connects:
            entry[0], entry[1], entry[2] = now, 0.0, now + policy.ban_s
            self.put_back(key, entry)
            return policy.ban_s
        self.put_back(key, entry)
        return 0.0


class PublishBudget:
    """One MQTT connection's publish budget (a device has one session at a time, so this
    is the device's): publishes and bytes, each a token bucket that may go into debt.
    The reader has already read what it charges; the debt is how long it waits before
    reading again (the socket read is throttled, nothing is refused)."""

    __slots__ = ("_bytes", "_msgs", "_stamp", "bytes_rate", "msgs_rate", "throttling")

    def __init__(self, msgs: Rate, nbytes: Rate, now: float) -> None:
        self.msgs_rate = msgs
        self.bytes_rate = nbytes
        self._msgs = msgs.burst
        self._bytes = nbytes.burst
        self._stamp = now
        self.throttling = False  # the last charge ended in debt (one log record per episode)

    def charge(self, msgs: int, nbytes: int, now: float) -> tuple[float, str]:
        """Charge one read's publishes; the seconds to wait before the next read and the
        limit that asks for it (``publish_rate`` or ``publish_bytes``), or (0.0, "")."""
        elapsed = now - self._stamp
        self._stamp = now
        wait, limit = 0.0, ""
        m = self.msgs_rate
        if m.on:
            self._msgs = min(m.burst, self._msgs + elapsed * m.rate) - msgs
            if self._msgs < 0:
                wait, limit = -self._msgs / m.rate, PUBLISH_RATE
        b = self.bytes_rate
        if b.on:
            self._bytes = min(b.burst, self._bytes + elapsed * b.rate) - nbytes
            if self._bytes < 0 and -self._bytes / b.rate > wait:
                wait, limit = -self._bytes / b.rate, PUBLISH_BYTES
        return wait, limit


# -- the service ---------------------------------------------------------------------------------


class DeviceLimits:
    """This process's limit state for every connector (``services.limits``).

    ``settings_of(cid)`` returns a connector's :class:`Limits` (None: unknown
    connector, nothing is limited); ``clock`` is Trio's (MockClock in tests).  Trio thread
    only.  Methods that refuse raise :class:`~gateway.errors.RateLimited` with the limit
    as its reason, after counting it in ``metrics.limited``.
    """

    def __init__(
        self,
        settings_of: Callable[[str], Limits | None],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = trio.current_time,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.settings_of = settings_of
        self.metrics = metrics
        self.clock = clock
        self.connect_rate: RateTable[tuple[str, str]] = RateTable(max_keys)
        self.connector_rate: RateTable[str] = RateTable(max_keys)
        self.auth: BackoffTable[tuple[str, str]] = BackoffTable(max_keys)
        self.activation: BackoffTable[tuple[str, str]] = BackoffTable(max_keys)
        self.flapping: FlappingTable[tuple[str, str]] = FlappingTable(max_keys)
        self.publish: RateTable[tuple[str, int, str]] = RateTable(max_keys)

    def _limited(self, cid: str, limit: str, message: str, wait: float) -> RateLimited:
        self.metrics.limit(cid, limit)
        return RateLimited(
            f"{message}; retry in {wait:.3g} s", reason=limit, retry_after_s=max(wait, 0.001)
        )

    # -- connections (the front door, once TLS named the connector) --------------------------

    def admit(self, cid: str, ip: str) -> tuple[str, str] | None:
        """A new connection of ``ip`` to ``cid``: None if admitted, else (reason,
        detail).  Checked before any protocol byte is read; refuse by closing."""
        s = self.settings_of(cid)
        if s is None:
            return None
        now = self.clock()
        wait = self.connect_rate.take((cid, ip_key(ip)), s.connections_per_ip, now)
        if wait:
            self.metrics.limit(cid, CONNECTION_RATE)
            return CONNECTION_RATE, f"over {s.connections_per_ip.rate:g} connections/s from {ip}"
        wait = self.connector_rate.take(cid, s.connections, now)
        if wait:
            self.metrics.limit(cid, CONNECTOR_RATE)
            return CONNECTOR_RATE, f"over {s.connections.rate:g} connections/s to {cid}"
        return None

    def connected(self, cid: str, identity: str) -> None:
        """An MQTT CONNECT authenticated ``identity``: count it, refuse while banned."""
        s = self.settings_of(cid)
        if s is None:
            return
        ban = self.flapping.connect((cid, identity), s.flapping, self.clock())
        if ban:
            raise self._limited(
                cid,
                FLAPPING,
                f"{identity} connected more than {s.flapping.max_connects} times in "
                f"{s.flapping.window_s:g} s: banned",
                ban,
            )

    # -- authentication and activation failures ----------------------------------------------

    def check_auth(self, cid: str, ip: str | None) -> None:
        """Refuse at once while ``ip`` is backed off after failed authentications."""
        if ip:
            wait = self.auth.closed_for((cid, ip_key(ip)), self.clock())
            if wait:
                raise self._limited(cid, AUTH_BACKOFF, f"{ip} failed to authenticate", wait)

    def auth_failed(self, cid: str, ip: str | None, reason: str) -> None:
        """An authentication of ``ip`` was refused for ``reason``."""
        s = self.settings_of(cid)
        if ip and s is not None and reason in AUTH_FAILURES:
            self.auth.failed((cid, ip_key(ip)), s.auth_failures_per_ip, self.clock())

    def check_activation(self, cid: str, ip: str | None) -> None:
        """Refuse at once while ``ip`` is backed off after failed activations."""
        if ip:
            wait = self.activation.closed_for((cid, ip_key(ip)), self.clock())
            if wait:
                raise self._limited(cid, ACTIVATION_BACKOFF, f"{ip} failed to activate", wait)

    def activation_failed(self, cid: str, ip: str | None, reason: str) -> None:
        s = self.settings_of(cid)
        if ip and s is not None and reason not in NOT_ACTIVATION_FAILURES:
            self.activation.failed((cid, ip_key(ip)), s.activation_failures_per_ip, self.clock())

    # -- publishes -----------------------------------------------------------------------------

    def publish_budget(self, cid: str) -> PublishBudget | None:
        """A new MQTT session's budget (None when the connector limits neither)."""
        s = self.settings_of(cid)
        if s is None or not (s.publishes.on or s.publish_bytes.on):
            return None
        return PublishBudget(s.publishes, s.publish_bytes, self.clock())

    def throttled(self, cid: str, limit: str) -> None:
        """Count one throttled read of an MQTT session (the reader waits)."""
        self.metrics.limit(cid, limit)

    def http_publish(self, cid: str, device_id: int, nbytes: int) -> None:
        """An HTTP write of ``nbytes`` by a device: refuse (429) over its rate."""
        s = self.settings_of(cid)
        if s is None:
            return
        now = self.clock()
        wait = self.publish.take((cid, device_id, PUBLISH_RATE), s.publishes, now)
        if wait:
            raise self._limited(cid, PUBLISH_RATE, f"over {s.publishes.rate:g} writes/s", wait)
        wait = self.publish.take((cid, device_id, PUBLISH_BYTES), s.publish_bytes, now, nbytes)
        if wait:
            raise self._limited(
                cid, PUBLISH_BYTES, f"over {s.publish_bytes.rate:g} bytes/s of writes", wait
            )

    def upload_refused(self, cid: str) -> None:
        """Count an upload refused for the device's quota."""
        self.metrics.limit(cid, UPLOAD_QUOTA)
