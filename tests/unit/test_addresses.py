"""Addresses as the gateway records them, networks, and the IP whitelist over IPv6
(gateway/addresses.py, docs/decisions.md "Addresses and the PROXY protocol")."""

from __future__ import annotations

import re

import pytest

from gateway.addresses import NetworkSet, format_hostport, normalize_ip, parse_network
from gateway.config import GatewayConfig, load_config, proxy_listeners
from gateway.errors import BadRequest
from gateway.frontdoor.bind import split_hosts
from gateway.services.connectors import ConnectorSettings, IpWhitelisting, ProvisioningSettings


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # a dual-stack socket's IPv4 client
        ("::FFFF:c000:0207", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::1%eth0"),
    ],
)
def test_normalize_ip(raw: str, want: str) -> None:
    assert normalize_ip(raw) == want


@pytest.mark.parametrize("raw", ["", "localhost", "1.2.3", "::g", "192.0.2.1/24", "[::1]"])
def test_normalize_ip_refuses_non_addresses(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_ip(raw)


def test_parse_network() -> None:
    assert str(parse_network("192.0.2.9/24")) == "192.0.2.0/24"  # host bits cleared
    assert str(parse_network("2001:db8::1/32")) == "2001:db8::/32"
    assert str(parse_network("::ffff:192.0.2.0/120")) == "192.0.2.0/24"
    assert str(parse_network("::ffff:192.0.2.7")) == "192.0.2.7/32"
    for bad in ("fe80::/10%eth0", "192.0.2.0/33", "2001:db8::/129", "nope"):
        with pytest.raises(ValueError):
            parse_network(bad)


def test_network_set_families_and_mapped_addresses() -> None:
    nets = NetworkSet(["192.0.2.0/24", "2001:db8::/32", "::1"])
    assert "192.0.2.200" in nets
    assert "::ffff:192.0.2.200" in nets  # IPv4-mapped compared as IPv4
    assert "2001:db8:ffff::5" in nets
    assert "2001:0db8::5" in nets
    assert "::1" in nets
    assert "0:0::1" in nets
    assert "192.0.3.1" not in nets
    assert "2001:db9::1" not in nets
    assert "::ffff:192.0.3.1" not in nets
    assert "" not in nets
    assert "garbage" not in nets
    assert None not in nets
    # an IPv4-mapped network holds the IPv4 addresses it maps
    assert "10.1.2.3" in NetworkSet(["::ffff:10.0.0.0/104"])
    # IPv4 networks do not match the IPv6 addresses that embed the same bits
    assert "::c000:0201" not in NetworkSet(["192.0.2.0/24"])


def test_network_set_names_the_bad_entry() -> None:
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/8x'")):
        NetworkSet(["192.0.2.0/24", "10.0.0.0/8x"])


def test_host_formatting_and_lists() -> None:
    assert format_hostport("::1", 8443) == "[::1]:8443"
    assert format_hostport("127.0.0.1", 8443) == "127.0.0.1:8443"
    assert split_hosts("127.0.0.1, [::1],") == ["127.0.0.1", "::1"]


def test_whitelist_over_ipv6_and_mapped() -> None:
    wl = IpWhitelisting(enabled=True, allowed=["2001:db8::/48", "192.0.2.0/24"])
    assert wl.permits("2001:db8:0:1::7")
    assert not wl.permits("2001:db8:1::7")
    assert wl.permits("::ffff:192.0.2.4")
    assert not wl.permits(None)
    assert IpWhitelisting(enabled=False, allowed=[]).permits(None)
    # an entry stored before validation existed refuses rather than widens
    assert not IpWhitelisting(enabled=True, allowed=["bogus"]).permits("192.0.2.4")


@pytest.mark.parametrize("entry", ["2001:db8::/129", "192.0.2.0/24/1", "fe80::1%eth0", "x"])
def test_whitelist_validation_names_the_entry(entry: str) -> None:
    settings = ConnectorSettings(
        provisioning=ProvisioningSettings(
            ip_whitelisting=IpWhitelisting(enabled=True, allowed=["::1", entry])
        )
    )
    with pytest.raises(BadRequest, match=re.escape("ip_whitelisting.allowed")) as info:
        settings.validate()
    assert repr(entry) in info.value.message


def test_proxy_settings_are_checked_at_load() -> None:
    base = {"data": "/nonexistent-gateway-dir"}
    ok = load_config({**base, "proxy_protocol": "tls,mqtt_tls", "proxy_trusted": "::1,10.0.0.0/8"})
    assert proxy_listeners(ok) == ["tls", "mqtt_tls"]
    assert proxy_listeners(GatewayConfig(proxy_protocol="all", proxy_trusted="::1")) == [
        "tls",
        "mqtt_tls",
        "dev_http",
        "dev_mqtt",
    ]
    with pytest.raises(ValueError, match="proxy_trusted"):
        load_config({**base, "proxy_protocol": "tls"})
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33'")):
        load_config({**base, "proxy_protocol": "tls", "proxy_trusted": "10.0.0.0/33"})
    with pytest.raises(ValueError, match="http is no listener"):
        load_config({**base, "proxy_protocol": "http", "proxy_trusted": "::1"})
