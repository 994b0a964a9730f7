"""A real front door on 127.0.0.1 (ephemeral ports) with stand-in protocol handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from gateway.testing.tlsclient import Gateway, start_gateway

__all__ = ["Gateway", "start_gateway"]


@pytest.fixture
async def gateway(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = await start_gateway(nursery, tmp_path)
    yield gw
    gw.scope.cancel()
