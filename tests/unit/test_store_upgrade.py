"""The store opens a database written by release 0.1.0 (tests/data/upgrade/README.md): the
new migration steps run, the counters start equal to the rows, and the typed reads answer
for what that release stored."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from gateway.app import open_services
from gateway.config import GatewayConfig
from gateway.services.devices import Tag
from gateway.store.api import DeviceConnected, DeviceDisconnected, EventMeta, EventQuery
from gateway.store.sqlite import open_store
from gateway.store.sqlite.migrations import MIGRATIONS

from .conftest import CheckCounters

V010 = Path(__file__).resolve().parents[1] / "data" / "upgrade" / "v0.1.0"


def _copy(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(V010, data)
    return data


async def test_a_v010_database_migrates_and_reads(
    tmp_path: Path, counters_exact: CheckCounters
) -> None:
    data = _copy(tmp_path)
    async with open_store(data / "gateway.db") as store:
        await counters_exact(store)
        st = await store.stats()
        assert st.event_log_size == 17
        dev = await store.device("demo", "dev-001")
        assert dev is not None
        assert dev.tags == [Tag("site", "north")]
        assert {r.alias for r in await store.pending(dev.id)} == {"data_out", "config_io"}
        # the column added by migration 101 works for a device of the old release
        a = EventMeta(connection_id="a", ip="127.0.0.1", protocol="mqtt")
        b = EventMeta(connection_id="b", ip="127.0.0.1", protocol="mqtt")
        await store.write([DeviceConnected("demo", dev.id, "dev-001", a, 1)])
        await store.write([DeviceConnected("demo", dev.id, "dev-001", b, 2)])
        await store.write([DeviceDisconnected("demo", dev.id, "dev-001", a, 3, "x")])
        assert (await store.device("demo", "dev-001")).online  # type: ignore[union-attr]
        assert len(await store.events(EventQuery("demo", limit=1000))) > 3
        (rec,) = await store.integrations("demo")
        assert rec.name == "pumps"
        assert len(await store.integration_assets("demo", "pumps")) == 3
        assert [t.name for t in await store.admin_tokens()] == ["ci"]
    conn = sqlite3.connect(data / "gateway.db")
    versions = [v for (v,) in conn.execute("SELECT version FROM _migrations ORDER BY version")]
    conn.close()
    assert versions == [m.version for m in MIGRATIONS]


async def test_the_services_start_on_a_v010_data_directory(tmp_path: Path) -> None:
    data = _copy(tmp_path)
    async with open_services(GatewayConfig(data=str(data))) as services:
        assert {c.id for c in services.registry.all()} == {"demo", "fleet"}
        auth = await services.devices.authenticate_token("demo", "x" * 24)
        assert auth.identity == "pre-token"
        st = await services.state.get("demo", "dev-000")
        assert st["data_in"].reported == '{"001":22}'
        info = await services.content.info("demo", "firmware.bin")
        assert info.length == 10_244
