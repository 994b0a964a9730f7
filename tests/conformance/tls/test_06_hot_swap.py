"""Replacing a connector's server certificate through the settings API under live devices
(docs/decisions.md "Certificate hot swap"): new handshakes get the new certificate, and not
one of the connected devices is dropped.  ``bench/tls_hot_swap.py`` runs the same scenario
with 1,000 devices."""

from __future__ import annotations

from pathlib import Path

from gateway.testing.hotswap import run_hot_swap
from gateway.testing.server import TestGateway

LIVE_DEVICES = 300


async def test_connector_certificate_swap_drops_no_device(gw: TestGateway) -> None:
    tls = Path(gw.info.data) / "tls"
    result = await run_hot_swap(
        api=gw.api,
        admin_headers=gw.admin_headers,
        tls_port=gw.ports["tls"],
        ca_path=gw.ca,
        ca_key_pem=(tls / "ca.key").read_text(),
        devices=LIVE_DEVICES,
    )
    print(result)
    assert result.served_after == result.new_fingerprint != result.old_fingerprint
    assert result.new_device_connected
    assert result.alive == LIVE_DEVICES
    assert result.dropped == 0
    assert result.connections_gauge == LIVE_DEVICES + 1  # + the one after the swap
    assert gw.services.registry.get("hotswap") is None  # cleaned up
