"""The certificates the device ports serve, on a whole gateway: listed with their expiry
(``GET /api/v1/tls/certificates`` and the ``/metrics`` gauge), the node certificate
reloaded from ``DIR/tls`` by ``POST /api/v1/tls/reload`` or SIGHUP for new handshakes."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest
import trio

from gateway.testing.server import TestGateway, gateway_process
from gateway.testing.tlsclient import client_context, open_tls_client
from gateway.tls.pki import certificate_info, fingerprint, issue_server_cert, server_names

METRIC = "gateway_tls_certificate_expiry_timestamp_seconds"


async def served_fingerprint(gw: TestGateway, name: str = "demo.m2.localhost") -> str:
    stream = await open_tls_client(gw.ports["tls"], name, client_context(gw.ca, alpn=["mqtt"]))
    der = stream.getpeercert(binary_form=True)
    await trio.aclose_forcefully(stream)
    assert der is not None
    return fingerprint(der)


def expiry_samples(metrics_text: str) -> dict[str, float]:
    out = {}
    for line in metrics_text.splitlines():
        if line.startswith(METRIC + "{"):
            labels, value = line[len(METRIC) :].rsplit(" ", 1)
            out[labels.split('"')[1]] = float(value)
    return out


def new_node_certificate(data: Path, days: int) -> str:
    """Issue a node certificate from the data directory's CA and write it in place."""
    tls = data / "tls"
    chain, key = issue_server_cert(
        (tls / "ca.pem").read_text(),
        (tls / "ca.key").read_text(),
        server_names("localhost"),
        days=days,
    )
    (tls / "server.key").write_text(key)
    (tls / "server.pem").write_text(chain)
    return chain


async def test_list_reload_and_expiry_metric(gw: TestGateway) -> None:
    data = Path(gw.info.data)
    old = (data / "tls" / "server.pem").read_text()
    async with httpx.AsyncClient(base_url=gw.api, headers=gw.admin_headers) as api:
        listed = (await api.get("/tls/certificates")).json()["items"]
        assert [(c["connector"], c["certificate"]["fingerprint"]) for c in listed] == [
            (None, fingerprint(old))
        ]
        metrics = (await api.get(gw.api.removesuffix("/api/v1") + "/metrics")).text
        assert expiry_samples(metrics) == {"": certificate_info(old).not_after}

        # a connector with its own certificate appears beside the node's
        tls = data / "tls"
        own, own_key = issue_server_cert(
            (tls / "ca.pem").read_text(),
            (tls / "ca.key").read_text(),
            ["acme.m2.localhost"],
            days=90,
        )
        created = await api.post(
            "/connectors",
            json={
                "name": "Acme",
                "id": "acme",
                "settings": {
                    "pki": {"server_cert": own, "server_key": own_key},
                    "tls": {"policy": "legacy"},
                },
            },
        )
        assert created.status_code == 201, created.text
        listed = (await api.get("/tls/certificates")).json()["items"]
        assert [(c["connector"], c["policy"]) for c in listed] == [(None, None), ("acme", "legacy")]
        metrics = (await api.get(gw.api.removesuffix("/api/v1") + "/metrics")).text
        assert expiry_samples(metrics)["acme"] == certificate_info(own).not_after
        assert await served_fingerprint(gw, "acme.m2.localhost") == fingerprint(own)

        # reload: half-written files are refused and the old certificate stays
        (tls / "server.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n")
        refused = await api.post("/tls/reload")
        assert refused.status_code == 400
        assert refused.json()["error"] == "bad_request"
        assert "old one stays" in refused.json()["message"]
        assert await served_fingerprint(gw) == fingerprint(old)

        new = new_node_certificate(data, days=30)
        reloaded = await api.post("/tls/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["certificate"]["fingerprint"] == fingerprint(new)
        assert await served_fingerprint(gw) == fingerprint(new)
        assert await served_fingerprint(gw, "acme.m2.localhost") == fingerprint(own)
        metrics = (await api.get(gw.api.removesuffix("/api/v1") + "/metrics")).text
        assert expiry_samples(metrics)[""] == certificate_info(new).not_after
        assert certificate_info(new).not_after < certificate_info(old).not_after


@pytest.mark.slow
def test_sighup_reloads_the_node_certificate(tmp_path: Path, pki_dir: Path) -> None:
    """The signal operators send after replacing DIR/tls/server.pem (docs/deployment.md):
    the process stays up and new handshakes get the new certificate."""
    data = tmp_path / "data"
    shutil.copytree(pki_dir, data / "tls")
    with gateway_process(data, dev=False) as (proc, gw):
        old = (data / "tls" / "server.pem").read_text()
        assert trio.run(served_fingerprint, gw) == fingerprint(old)
        new = new_node_certificate(data, days=60)
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while trio.run(served_fingerprint, gw) != fingerprint(new):
            assert proc.poll() is None, "SIGHUP must not stop the gateway"
            assert time.monotonic() < deadline, "the new certificate was not served"
            time.sleep(0.05)
        assert proc.poll() is None
