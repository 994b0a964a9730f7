"""The integrations' storage calls: typed store ops and reads (``gateway/store/api.py``),
turned into this feature's own values (:class:`RunReport`, :class:`HealthCheck`).

The tables and their SQL belong to the store (``gateway/store/sqlite``); secret
configuration values reach it already encrypted.
"""

from __future__ import annotations

import msgspec

from gateway.errors import NotFound
from gateway.services.integrations.models import HealthCheck, RunReport
from gateway.store.api import (
    AppendEvent,
    AssetRow,
    CreateIntegration,
    DeleteIntegration,
    FinishRun,
    HealthRow,
    IntegrationRecord,
    MarkVanished,
    RecordHealth,
    StartRun,
    Store,
    UpdateIntegration,
    UpsertAsset,
)

__all__ = [
    "HEALTH_HISTORY",
    "RUN_HISTORY",
    "AssetRow",
    "StoredIntegration",
    "delete_integration",
    "finish_run",
    "get_integration",
    "insert_integration",
    "list_integrations",
    "load_assets",
    "mark_vanished",
    "read_health",
    "read_runs",
    "record_health",
    "start_run",
    "update_integration",
    "upsert_asset",
]

HEALTH_HISTORY = 500  # health probes kept per integration
RUN_HISTORY = 200  # job reports kept per integration and job

StoredIntegration = IntegrationRecord


async def insert_integration(store: Store, rec: StoredIntegration) -> None:
    """Raises ``AlreadyExists``."""
    await store.write([CreateIntegration(rec)])


async def update_integration(store: Store, rec: StoredIntegration) -> None:
    """Raises ``NotFound``."""
    await store.write([UpdateIntegration(rec)])


async def get_integration(store: Store, cid: str, name: str) -> StoredIntegration:
    rec = await store.integration(cid, name)
    if rec is None:
        raise NotFound(f"integration {name!r} not found")
    return rec


async def list_integrations(store: Store, cid: str | None = None) -> list[StoredIntegration]:
    return await store.integrations(cid)


async def delete_integration(store: Store, cid: str, name: str) -> None:
    """Remove the integration and its history.  Devices it created stay (they are the
    connector's devices now); only the asset mapping goes.  Raises ``NotFound``."""
    await store.write([DeleteIntegration(cid, name)])


def _check(row: HealthRow) -> HealthCheck:
    return HealthCheck(
        row.timestamp, row.healthy, row.status_code, row.latency_ms, row.detail, row.changed
    )


async def record_health(
    store: Store,
    cid: str,
    name: str,
    *,
    timestamp: int,
    healthy: bool,
    status_code: int | None,
    latency_ms: float,
    detail: str,
    on_change: AppendEvent,
) -> HealthCheck:
    """Keep one probe; ``on_change`` goes to the event log when the state changed."""
    (changed,) = await store.write(
        [
            RecordHealth(
                cid,
                name,
                timestamp,
                healthy,
                status_code,
                latency_ms,
                detail,
                on_change,
                history=HEALTH_HISTORY,
            )
        ]
    )
    return HealthCheck(timestamp, healthy, status_code, latency_ms, detail, bool(changed))


async def read_health(
    store: Store, cid: str, name: str, *, limit: int = 50, changes_only: bool = False
) -> list[HealthCheck]:
    """Newest first."""
    rows = await store.integration_health(cid, name, limit=limit, changes_only=changes_only)
    return [_check(r) for r in rows]


async def start_run(store: Store, cid: str, name: str, report: RunReport) -> int:
    (run_id,) = await store.write(
        [StartRun(cid, name, report.job, msgspec.to_builtins(report), history=RUN_HISTORY)]
    )
    assert isinstance(run_id, int)
    return run_id


async def finish_run(store: Store, report: RunReport) -> None:
    await store.write([FinishRun(report.id, msgspec.to_builtins(report))])


async def read_runs(
    store: Store, cid: str, name: str, job: str | None = None, *, limit: int = 20
) -> list[RunReport]:
    """Newest first."""
    rows = await store.integration_runs(cid, name, job, limit=limit)
    return [msgspec.convert(r.report, RunReport) for r in rows]


async def load_assets(store: Store, cid: str, name: str) -> list[AssetRow]:
    return await store.integration_assets(cid, name)


async def upsert_asset(
    store: Store, cid: str, name: str, asset_id: str, identity: str, ts: int
) -> None:
    await store.write([UpsertAsset(cid, name, asset_id, identity, ts)])


async def mark_vanished(store: Store, cid: str, name: str, asset_ids: list[str]) -> None:
    await store.write([MarkVanished(cid, name, asset_ids)])
