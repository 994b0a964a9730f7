"""Quick versions of the other "what holds" probes (docs/reliability.md): idle sockets cut at
their deadlines, tokens of one connector refused on another, every management route 401
without a token, TLS 1.2/1.3 with AEAD and forward secrecy only, a short handshake flood,
and a secrets scan over 100 devices and two integrations.  ``scripts/probe`` runs the full
ones against a fresh gateway with its shipped settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.testing.probes import checks, leaks
from gateway.testing.probes.flood import handshake_flood
from gateway.testing.probes.target import QUICK_CONNECT_S as CONNECT_S
from gateway.testing.probes.target import QUICK_HANDSHAKE_S as HANDSHAKE_S
from gateway.testing.probes.target import Probed, mgmt_client


async def test_idle_sockets_are_cut_at_their_deadlines(probed: Probed) -> None:
    async with mgmt_client(probed.target) as client:
        cuts = await checks.check_idle_cuts(
            probed.target, client, handshake_s=HANDSHAKE_S, connect_s=CONNECT_S
        )
    assert len(cuts) == 5
    assert all(c.ok for c in cuts), cuts


async def test_tokens_of_one_connector_are_refused_on_another(probed: Probed) -> None:
    async with mgmt_client(probed.target) as client:
        result = await checks.check_cross_connector(probed.target, client)
    assert len(result.attempts) == 9
    assert result.ok, [a for a in result.attempts if not a[3]]


async def test_every_management_route_needs_a_token(probed: Probed) -> None:
    walk = await checks.check_management_auth(probed.target)
    assert walk.ok, walk.failures
    assert walk.operations > 30
    assert walk.refused == 2 * (walk.operations - len(walk.public))
    assert sorted(walk.public) == [
        "GET /api/v1/health",
        "GET /api/v1/openapi.json",
        "GET /metrics",
    ]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl (scripts/bootstrap)")
async def test_tls_policy(probed: Probed) -> None:
    policy = await checks.check_tls_policy(probed.target, quick=True)
    assert [p.port for p in policy] == ["tls", "mqtt_tls"]
    for port in policy:
        assert port.ok, port.problems
        assert port.versions["TLSv1.2"]
        assert port.versions["TLSv1.3"]


async def test_short_handshake_flood(probed: Probed) -> None:
    async with mgmt_client(probed.target) as client:
        flood = await handshake_flood(probed.target, client, seconds=2.0, workers=1, concurrency=8)
    assert flood.holds, flood
    assert flood.ok > 10


async def test_secrets_appear_nowhere(probed: Probed, tmp_path: Path) -> None:
    async with mgmt_client(probed.target) as client:
        found = await leaks.scan_for_secrets(probed.target, client, tmp_path, devices=100)
    assert found.devices == 100 + leaks.MQTT_DEVICES
    assert found.ok, found.findings
    assert "gateway log file" in found.corpora
    assert any(name.startswith("file gateway.db") for name in found.corpora)
