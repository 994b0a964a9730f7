"""The quick version of ``scripts/chaos-workers``: QoS 1 load from 60 devices while a
worker is killed twice: no acknowledged write lost, every device back within 10 s,
``integrity_check`` ok (bench/chaos_workers.py has the scenario)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos_workers import run_chaos


@pytest.mark.slow
def test_killing_workers_under_qos1_load_loses_nothing(tmp_path: Path) -> None:
    result = run_chaos(
        tmp_path / "data", devices=60, kills=2, interval_s=3.0, rate=5.0, log=lambda _m: None
    )
    assert result.acked > 200
    assert result.ok, result.summary()
