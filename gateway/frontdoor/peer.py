"""Where a device connection comes from: the one place the front door decides it.

Every address-based feature — events, the live debug log and its IP filter, the IP
whitelist, ``/ip``, per-IP limits — reads the :class:`~gateway.model.PeerAddress` that
:meth:`PeerResolver.resolve` returns for an accepted TCP stream, before TLS or any protocol
runs (docs/decisions.md "Addresses and the PROXY protocol"):

* on a listener without the PROXY protocol: the socket's two ends (``getpeername`` and
  ``getsockname``), normalised (:func:`gateway.addresses.normalize_ip`); nothing is read;
* on a listener with the PROXY protocol (:class:`ProxyPolicy`), the first bytes are read
  under a deadline and given to the sans-IO :class:`~gateway.frontdoor.proxy.ProxyHeaderReader`:

  - from a trusted source (an address in ``ProxyPolicy.trusted``): a ``PROXY`` header's
    addresses are the connection's (the proxy's own address is kept in ``proxy``); a
    ``LOCAL``/``UNKNOWN`` header keeps the socket's; no header is refused
    (``proxy_missing``) when the policy requires one, else the socket's addresses stand; a
    proxy that closes before sending a byte, or right after a ``LOCAL`` or ``UNKNOWN``
    header (its health checks), is closed quietly (:class:`PeerGone`, no debug record), as
    is a connection reset before its address could be read;
  - from any other source: a PROXY header (even its first bytes) is refused
    (``proxy_untrusted``): a device must not choose the address it is judged by;
  - a malformed, truncated or oversized header is refused (``bad_proxy_header``), and no
    decision within the deadline is ``idle_timeout``.

  The bytes read after the header (the start of the ClientHello, an MQTT CONNECT, an HTTP
  request) come back in :attr:`Resolved.initial` for the caller to replay.

Refusals are :class:`PeerRefusal` (a reason from docs/protocol.md §12 item 24 and a detail);
the caller writes the debug record and closes the stream.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
import trio

from gateway.addresses import NetworkSet, normalize_ip
from gateway.frontdoor.proxy import (
    CLOSED,
    NEED_DATA,
    ProxyEvent,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderReader,
)
from gateway.model import PeerAddress, Transport

__all__ = ["PeerGone", "PeerRefusal", "PeerResolver", "ProxyPolicy", "Resolved", "socket_peer"]

_READ = 4096  # bytes asked for per read while the header is undecided


class ProxyPolicy(msgspec.Struct, frozen=True):
    """The PROXY protocol on one listener: who may send a header, and whether they must.

    ``trusted`` holds addresses or CIDR networks (IPv4 or IPv6; an IPv4-mapped IPv6 network
    is its IPv4 network), checked by :class:`PeerResolver` at construction.
    """

    trusted: tuple[str, ...]
    required: bool = True  # a trusted source without a header is refused (proxy_missing)


class Resolved(msgspec.Struct, frozen=True, gc=False):
    """The decided address, and the bytes already read past the header (replay them)."""

    peer: PeerAddress
    initial: bytes = b""


class PeerRefusal(Exception):
    """The connection is refused before TLS: ``reason`` (docs/protocol.md §12 item 24) and
    ``detail`` go to the debug log; ``peer`` is the socket's address."""

    def __init__(self, reason: str, detail: str, peer: PeerAddress) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.peer = peer


class PeerGone(Exception):
    """A trusted proxy closed before sending a byte (a health check): close quietly."""


def _ip(raw: object) -> str:
    text = str(raw)
    try:
        return normalize_ip(text)
    except ValueError:
        return text  # not an IP socket (a Unix socket in a test): keep what it says


def socket_peer(stream: trio.abc.Stream) -> PeerAddress:
    """The socket's two ends as a :class:`PeerAddress` (``""`` when the stream has no
    socket or it is already gone)."""
    sock = getattr(stream, "socket", None)
    if sock is None:
        return PeerAddress("")
    try:
        remote = sock.getpeername()
        local = sock.getsockname()
    except OSError:
        return PeerAddress("")
    if not isinstance(remote, tuple) or not isinstance(local, tuple):
        return PeerAddress("")
    return PeerAddress(
        _ip(remote[0]), int(remote[1]), server_ip=_ip(local[0]), server_port=int(local[1])
    )


class PeerResolver:
    """Decides each connection's :class:`PeerAddress` (see the module docstring).

    ``policies`` maps the listeners that speak the PROXY protocol to their policy; a header
    must be decided within ``timeout_s`` of the call.  Raises ``ValueError`` naming the
    entry when a trusted address or network does not parse.
    """

    __slots__ = ("_trusted", "policies", "timeout_s")

    def __init__(self, policies: Mapping[Transport, ProxyPolicy], *, timeout_s: float) -> None:
        self.policies = dict(policies)
        self.timeout_s = timeout_s
        self._trusted: dict[Transport, NetworkSet] = {}
        for transport, policy in self.policies.items():
            try:
                self._trusted[transport] = NetworkSet(policy.trusted)
            except ValueError as exc:
                raise ValueError(f"trusted proxies of {transport.value}: {exc}") from None

    async def resolve(self, stream: trio.abc.Stream, transport: Transport) -> Resolved:
        """The connection's address; raises :class:`PeerRefusal` or :class:`PeerGone`."""
        own = socket_peer(stream)
        policy = self.policies.get(transport)
        if policy is None:
            return Resolved(own)
        if not own.ip and getattr(stream, "socket", None) is not None:
            raise PeerGone  # reset before we asked (a proxy's health check): nobody to judge
        trusted = own.ip in self._trusted[transport]
        reader = ProxyHeaderReader()
        event: ProxyEvent = NEED_DATA
        with trio.move_on_after(self.timeout_s):
            while event is NEED_DATA:
                try:
                    data = await stream.receive_some(_READ)
                except trio.BrokenResourceError:
                    data = b""
                reader.receive_data(data)
                try:
                    event = reader.next_event()
                except ProxyHeaderError as exc:
                    reason = "bad_proxy_header" if trusted else "proxy_untrusted"
                    raise PeerRefusal(reason, exc.message, own) from None
        if event is NEED_DATA:
            what = "PROXY header" if trusted else "first bytes"
            raise PeerRefusal("idle_timeout", f"no complete {what} within {self.timeout_s} s", own)
        initial = reader.trailing_data
        if not trusted:
            if isinstance(event, ProxyHeader):
                raise PeerRefusal(
                    "proxy_untrusted",
                    f"PROXY v{event.version} header from {own.ip}, which is no trusted proxy",
                    own,
                )
            return Resolved(own, initial)  # CLOSED: the TLS or protocol layer says so
        if event is CLOSED:
            raise PeerGone
        if not isinstance(event, ProxyHeader):  # NO_HEADER
            if policy.required:
                raise PeerRefusal(
                    "proxy_missing", f"no PROXY header from the trusted proxy {own.ip}", own
                )
            return Resolved(own, initial)
        if event.source_ip is None and not initial:
            # LOCAL or UNKNOWN: likely the proxy's own health check, a header then EOF
            with trio.move_on_after(self.timeout_s):
                try:
                    initial = bytes(await stream.receive_some(_READ))
                except trio.BrokenResourceError:
                    initial = b""
                if not initial:
                    raise PeerGone
        if event.source_ip is None:  # LOCAL, UNKNOWN, UNIX, UDP: the socket's addresses
            return Resolved(own, initial)
        return Resolved(
            PeerAddress(
                event.source_ip,
                event.source_port,
                server_ip=event.dest_ip or "",
                server_port=event.dest_port,
                proxy=own.ip,
            ),
            initial,
        )
