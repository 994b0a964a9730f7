"""The quick version of ``scripts/chaos`` (bench/chaos.py): the default node under MQTT
QoS 1 from 100 devices, HTTP writes, management sets and a 5,000-row CSV import with an
import id, while the supervisor, the store owner and a worker are each SIGKILLed once (the
first kill aimed at the import's request); after each restart and at the end: nothing
acknowledged missing, ``integrity_check`` ok, the import all or nothing and finally
complete with each identity once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import run_chaos


@pytest.mark.slow
def test_mixed_load_survives_kills_of_every_process(tmp_path: Path) -> None:
    report = run_chaos(
        tmp_path, devices=100, kills=3, seconds=15.0, rows=5000, rate=1.0, log=lambda _m: None
    )
    assert sorted(k.target.split()[0] for k in report.kills) == ["owner", "supervisor", "worker"]
    assert report.acked_mqtt > 300
    assert report.acked_http > 20
    assert report.acked_sets > 20
    for k in report.kills:
        assert (k.missing, k.integrity, k.import_duplicates) == (0, "ok", 0), k
        assert k.import_devices in (0, 5000), k  # never a part of the import
    assert report.import_records == 1
    assert report.import_resend_replayed
    assert report.ok, report.as_json()
