"""IP addresses as the gateway keeps them: one textual form per address, and networks.

Every address the gateway records (a connection's peer and server address, events, live-log
records, the IP whitelist's checks) goes through :func:`normalize_ip` first, so that one
device has one spelling wherever it shows up (docs/decisions.md "Addresses"):

* IPv6 in its compressed lower-case form (RFC 5952: ``2001:db8::1``, never
  ``2001:0DB8:0:0::1``), with its zone when the kernel gave one (``fe80::1%eth0``);
* an IPv4-mapped IPv6 address (``::ffff:192.0.2.7``, what a dual-stack socket reports for an
  IPv4 client) as the IPv4 address it carries (``192.0.2.7``), so a dual-stack listener and
  an IPv4 one record the same device the same way.

Networks (:func:`parse_network`, :class:`NetworkSet`) are written as an address or CIDR
(``192.0.2.0/24``, ``2001:db8::/32``); host bits are allowed and cleared, and an
IPv4-mapped IPv6 network (``::ffff:192.0.2.0/120``) is the IPv4 network it maps.

Pure: only :mod:`ipaddress`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = [
    "Network",
    "NetworkSet",
    "format_hostport",
    "normalize_ip",
    "parse_network",
    "url_host",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # RFC 4291 §2.5.5.2


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def normalize_ip(text: str) -> str:
    """``text`` in the one form the gateway records (see the module docstring).

    Raises ``ValueError`` when ``text`` is no IP address.
    """
    return str(_address(text))


def parse_network(text: str) -> Network:
    """An address or CIDR network (host bits cleared; IPv4-mapped IPv6 as IPv4).

    Raises ``ValueError`` with a message fit for an operator when ``text`` is neither.
    """
    if "%" in text:
        raise ValueError("a network has no zone (%...)")
    net = ipaddress.ip_network(text.strip(), strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
        return ipaddress.IPv4Network(
            (int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96), strict=False
        )
    return net


class NetworkSet:
    """A set of networks that answers "is this address in one of them?".

    Built once from operator input (the IP whitelist, the trusted proxies, a live-log
    filter); :meth:`__contains__` parses the address it is asked about (an unparsable one
    is in no set).  IPv4 and IPv6 networks are kept apart, so an address is only compared
    with networks of its own family.
    """

    __slots__ = ("_v4", "_v6", "networks")

    def __init__(self, entries: Iterable[str]) -> None:
        """Raises ``ValueError`` naming the first entry that is no address or network."""
        nets: list[Network] = []
        for entry in entries:
            try:
                nets.append(parse_network(entry))
            except ValueError as exc:
                raise ValueError(f"{entry!r} is no IP address or network: {exc}") from None
        self.networks: tuple[Network, ...] = tuple(nets)
        self._v4 = tuple(n for n in nets if isinstance(n, ipaddress.IPv4Network))
        self._v6 = tuple(n for n in nets if isinstance(n, ipaddress.IPv6Network))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, str) or not ip:
            return False
        try:
            addr = _address(ip)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv4Address):
            return any(addr in net for net in self._v4)
        return any(addr in net for net in self._v6)

    def __repr__(self) -> str:
        return f"NetworkSet({[str(n) for n in self.networks]!r})"


def url_host(host: str) -> str:
    """``host`` as it goes in a URL or ``host:port``: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def format_hostport(host: str, port: int) -> str:
    """``127.0.0.1:8443`` or ``[::1]:8443``."""
    return f"{url_host(host)}:{port}"
