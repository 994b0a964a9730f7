"""Quick version of ``scripts/probe limits`` (docs/reliability.md section 11): a gateway with
few handshake slots (16, 4 per address, one worker, 2 s deadline) so that 100 silent
sockets of one address would hold every slot without the per-address limit; the other
attacks with the shipped limits."""

from __future__ import annotations

import shutil
from pathlib import Path

import trio

from gateway.testing.probes.limits import check_limits
from gateway.testing.probes.target import mgmt_client, spawn_gateway


def test_limits_probe_holds(tmp_path: Path, pki_dir: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(pki_dir, data / "tls")
    settings = {
        "synchronous": "NORMAL",
        "workers": 1,
        "max_handshakes": 16,
        "max_handshakes_per_ip": 4,
        "handshake_timeout_s": 2.0,
    }

    async def run() -> None:
        async with mgmt_client(target) as client:
            report = await check_limits(
                target,
                client,
                silent=100,
                writes=5,
                wrong=150,
                wrong_mqtt=110,
                activations=150,
                upload_mb=80,
            )
        assert report.ok, report.problems
        assert report.device_failed == 0
        assert report.device_max_ms < 1500  # not behind the silent sockets' 2 s deadline
        # the budget of 100, the one that backs off, and the 1/s refill while they ran
        assert 101 <= report.wrong_http["401"] <= 110, report.wrong_http
        assert report.wrong_http["429"] == 150 - report.wrong_http["401"]
        assert report.wrong_mqtt["3"] >= 1
        assert 101 <= report.activations["404"] <= 110, report.activations
        assert report.canary_after
        assert report.upload_sent_mib <= 70  # the 64 MiB quota, plus what was in flight

    with spawn_gateway(data, settings=settings, log_level="INFO") as (proc, target):
        trio.run(run)
        assert proc.poll() is None
