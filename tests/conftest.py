"""Shared fixtures: a real SQLite store in tmp_path, services over it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.services.bundle import Services
from gateway.services.control import ControlHub
from gateway.services.logs import LogHub
from gateway.store.sqlite.writer import SqliteStore, open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store(tmp_path / "gateway.db", synchronous="NORMAL") as s:
        yield s


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    config = GatewayConfig(data=str(tmp_path))
    async with open_store(tmp_path / "gateway.db", synchronous="NORMAL") as s:
        svc = Services(config, s, logs=LogHub(), control=ControlHub())
        s.on_events = svc.on_events
        svc.connectors.load()
        yield svc
