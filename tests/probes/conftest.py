"""The gateway the quick probes attack: one ``gateway serve`` process per test module, with
the session's PKI, ephemeral ports on 127.0.0.1 and short deadlines (so the idle-cut probes
take seconds; ``scripts/probe`` measures the shipped 10 s / 5 s).

A subprocess rather than an in-process gateway: "the process is still up" must be a
separate process to mean anything, and the probes' own clients must not share its Trio loop.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.testing.probes.target import (
    QUICK_CONNECT_S,
    QUICK_HANDSHAKE_S,
    Canary,
    Probed,
    spawn_gateway,
)


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Probed]:
    data = tmp_path_factory.mktemp("probed") / "data"
    shutil.copytree(pki_dir, data / "tls")
    settings = {
        "synchronous": "NORMAL",
        "handshake_timeout_s": QUICK_HANDSHAKE_S,
        "connect_timeout_s": QUICK_CONNECT_S,
    }
    with spawn_gateway(data, settings=settings) as (proc, target):
        yield Probed(target, Canary.create_sync(target).token)
        assert proc.poll() is None, "the gateway died during the probes"
