"""A real gateway (``python -m gateway serve`` as a child, ephemeral ports on 127.0.0.1)
shared by the management API conformance tests of one module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.testing.server import TestGateway, gateway_process


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestGateway]:
    data: Path = tmp_path_factory.mktemp("gw")
    with gateway_process(data) as (_proc, handle):
        yield handle


@pytest.fixture
def api(gw: TestGateway) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{gw.ports['api']}", headers=gw.admin_headers, timeout=30.0
    ) as client:
        yield client
