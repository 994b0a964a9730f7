"""A whole gateway wired to the pump-fleet API, for cloud-to-cloud integration tests.

:func:`open_integration_rig` starts the gateway in-process (``open_test_gateway``: its
management API, with the integration routes, and its integration scheduler) and the pump
API over HTTPS (:mod:`gateway.testing.pump_api`), both on ephemeral 127.0.0.1 ports, and
hands out an httpx client for ``/api/v1`` carrying the admin token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from gateway.services.integrations import IntegrationService
from gateway.testing.pump_api import AuthMode, PumpAPI, open_pump_api
from gateway.testing.server import TestGateway, open_test_gateway

__all__ = ["IntegrationRig", "open_integration_rig"]


class IntegrationRig:
    """The running pieces: the gateway, the pump API and a management API client."""

    def __init__(self, gw: TestGateway, pump: PumpAPI, api: httpx.AsyncClient) -> None:
        self.gw, self.pump, self.api = gw, pump, api

    @property
    def svc(self) -> IntegrationService:
        found = self.gw.services.integrations
        assert isinstance(found, IntegrationService)
        return found

    def settings(self, **extra: Any) -> dict[str, Any]:
        """Settings reaching the pump API (its host and CA) with every schedule off and
        short retry back-off; ``extra`` overrides or adds."""
        return {
            "host": self.pump.host,
            "ca_bundle": self.pump.ca_pem,
            "health_interval_s": 0,
            "sync_interval_s": 0,
            "fetch_interval_s": 0,
            "backoff_s": 0.05,
            **extra,
        }


@asynccontextmanager
async def open_integration_rig(
    workdir: Path, *, auth: AuthMode = "basic", **fleet: Any
) -> AsyncIterator[IntegrationRig]:
    """Run a gateway (``workdir/gw``) and a pump API (``workdir/pump``, ``auth`` and further
    :class:`~gateway.testing.pump_api.PumpFleet` options) until the block ends."""
    async with (
        open_test_gateway(workdir / "gw") as gw,
        open_pump_api(workdir / "pump", auth=auth, **fleet) as pump,
        httpx.AsyncClient(base_url=gw.api, headers=gw.admin_headers, timeout=20) as api,
    ):
        yield IntegrationRig(gw, pump, api)
