"""Cloud-to-cloud integration end to end: a real gateway (``open_test_gateway``: its
management API and integration scheduler), the pump-fleet API over HTTPS
(``gateway.testing.pump_api``), both on 127.0.0.1 (``gateway.testing.integrations``)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from gateway.model import LogRecord
from gateway.services.devices import Tag
from gateway.services.integrations.jobs import identity_for
from gateway.services.logs import LogFilter
from gateway.testing.integrations import IntegrationRig as Rig
from gateway.testing.integrations import open_integration_rig
from gateway.testing.pump_api import PASSWORD, TOKEN, PumpAPI

DATA = Path(__file__).parents[1] / "data"
CID = "demo"
CONFIG_IO = {
    "channels": {
        "temperature": {
            "display_name": "Temperature ${name}",
            "properties": {"data_unit": "DEG_CELSIUS"},
        }
    }
}


def settings_for(pump: PumpAPI, **extra: Any) -> dict[str, Any]:
    return {
        "host": pump.host,
        "ca_bundle": pump.ca_pem,
        "health_interval_s": 0.2,
        "sync_interval_s": 0,
        "fetch_interval_s": 0,
        "tag_fields": ["site"],
        "config_io_template": CONFIG_IO,
        "backoff_s": 0.05,
        "field_map": {"temperature": "temperature", "battery": "battery", "vibration": "vibration"},
        **extra,
    }


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with open_integration_rig(tmp_path) as r:
        yield r


async def add_pumps(rig: Rig, **extra: Any) -> dict[str, Any]:
    doc = (DATA / "pump-fleet-basic.yaml").read_text()
    r = await rig.api.post(
        f"/connectors/{CID}/integrations",
        json={
            "name": "pumps",
            "document": doc,
            "config": {"username": rig.pump.fleet.username, "password": PASSWORD},
            "settings": settings_for(rig.pump, **extra),
        },
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def wait_health(rig: Rig, healthy: bool) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            r = await rig.api.get(f"/connectors/{CID}/integrations/pumps/health")
            cur = r.json()["current"]
            if cur is not None and cur["healthy"] is healthy:
                return r.json()  # type: ignore[no-any-return]
            await trio.sleep(0.05)


async def test_pump_fleet_end_to_end(
    rig: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    services = rig.gw.services
    doc = (DATA / "pump-fleet-basic.yaml").read_text()
    # register and validate
    r = await rig.api.post(f"/connectors/{CID}/integrations/validate", json={"document": doc})
    assert r.json() == {
        "valid": True,
        "violations": [],
        "operations": ["assetData", "assetState", "assets", "health"],
    }
    view = await add_pumps(rig)
    assert view["missing_config"] == []
    assert {p["name"]: p["set"] for p in view["config_parameters"]} == {
        "username": True,
        "password": True,
    }
    assert view["config"] == {"username": rig.pump.fleet.username}
    # health turns green by itself (scheduled every 0.2 s)
    await wait_health(rig, True)
    # sync creates one device per asset with config_io
    r = await rig.api.post(f"/connectors/{CID}/integrations/pumps/jobs/sync")
    report = r.json()
    assert (report["status"], report["seen"], report["created"], report["failed"]) == (
        "ok",
        3,
        3,
        0,
    ), report
    fmt = services.registry.require(CID).settings.identity_format
    identities = {a: identity_for(a, fmt) for a in ("pump-001", "pump-002", "pump-003")}
    devices, _ = await services.devices.list(CID, tags=[Tag("integration", "pumps")])
    assert sorted(d.identity for d in devices) == sorted(identities.values())
    dev1 = await services.devices.get(CID, identities["pump-001"])
    assert Tag("site", "north") in dev1.tags
    assert Tag("asset_id", "pump-001") in dev1.tags
    config_io = msgspec.json.decode(
        (await services.state.get(CID, identities["pump-001"]))["config_io"].set or "null"
    )
    assert config_io["channels"]["temperature"]["display_name"] == "Temperature Pump pump-001"
    # a second sync changes nothing but updates
    r = await rig.api.post(f"/connectors/{CID}/integrations/pumps/jobs/sync")
    assert (r.json()["created"], r.json()["updated"]) == (0, 3)
    # fetch writes temperature, battery and vibration into data_in; the event log shows it
    after = await services.events.last_seq(CID)
    r = await rig.api.post(f"/connectors/{CID}/integrations/pumps/jobs/fetch")
    report = r.json()
    assert (report["status"], report["seen"], report["updated"]) == ("ok", 3, 3), report
    events = await services.events.read(CID, after=after, limit=100, wait=5)
    data = {e.identity: e for e in events if e.type == "data_in"}
    assert set(data) == set(identities.values())
    ev = data[identities["pump-002"]]
    assert ev.protocol == "c2c"
    point = msgspec.json.decode(ev.payload[0]["values"]["data_in"])
    assert point == {
        k: rig.pump.fleet.states["pump-002"][k] for k in ("temperature", "battery", "vibration")
    }
    state = await services.state.get(CID, identities["pump-002"])
    assert msgspec.json.decode(state["data_in"].reported or "{}")["battery"] == 98
    # an asset removed upstream is marked, not deleted
    rig.pump.fleet.remove_asset("pump-003")
    r = await rig.api.post(f"/connectors/{CID}/integrations/pumps/jobs/sync")
    assert (r.json()["vanished"], r.json()["seen"]) == (1, 2)
    gone = await services.devices.get(CID, identities["pump-003"])
    assert Tag("c2c_status", "vanished") in gone.tags
    # a 429 is retried after Retry-After
    rig.pump.fleet.throttle(1, retry_after="1")
    t0 = time.monotonic()
    r = await rig.api.post(f"/connectors/{CID}/integrations/pumps/jobs/fetch")
    report = r.json()
    assert (report["status"], report["updated"], report["failed"]) == ("ok", 2, 0), report
    assert report["retries"] == 1
    assert time.monotonic() - t0 >= 0.9
    # reports are kept
    r = await rig.api.get(f"/connectors/{CID}/integrations/pumps/jobs/fetch/runs")
    assert [x["updated"] for x in r.json()["items"]] == [2, 3]
    # stopping the API turns health red, logged live and on the event log
    seen: list[LogRecord] = []
    async with services.logs.subscribe(LogFilter(CID, kinds=("debug",))) as sub:
        await rig.pump.stop()
        with trio.fail_after(10):
            async for rec in sub.receive:
                if rec.event == "integration_health":
                    seen.append(rec)
                    break
    assert seen[0].reason == "unhealthy"
    hv = await wait_health(rig, False)
    assert hv["history"][0]["status_code"] is None
    events = await services.events.read(CID, after=0, limit=1000)
    health_events = [e.reason for e in events if e.type == "integration_health"]
    assert health_events == ["healthy", "unhealthy"]
    # secrets: never in API responses, logs or the database in clear
    shown = (await rig.api.get(f"/connectors/{CID}/integrations/pumps")).text
    listed = (await rig.api.get(f"/connectors/{CID}/integrations")).text
    assert PASSWORD not in shown
    assert PASSWORD not in listed
    assert PASSWORD not in caplog.text
    db = b"".join(p.read_bytes() for p in (tmp_path / "gw").glob("gateway.db*"))
    assert b"s3cret-Pump" not in db
    assert b"v1:" in db  # the ciphertext is there
    key = tmp_path / "gw" / "secrets.key"
    assert key.stat().st_mode & 0o777 == 0o600


async def test_token_variant_and_operation_calls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_integration_rig(tmp_path, auth="token") as rig:
        doc = (DATA / "pump-fleet-token.yaml").read_text()
        r = await rig.api.post(
            f"/connectors/{CID}/integrations",
            json={"name": "pumps", "document": doc, "settings": settings_for(rig.pump)},
        )
        assert r.json()["missing_config"] == ["token"]
        url = f"/connectors/{CID}/integrations/pumps/operations"
        r = await rig.api.post(f"{url}/assetState", json={"id": "pump-001"})
        assert (r.status_code, r.json()["error"]) == (400, "invalid_parameter")
        r = await rig.api.patch(
            f"/connectors/{CID}/integrations/pumps/config", json={"values": {"token": TOKEN}}
        )
        assert r.json()["missing_config"] == []
        assert TOKEN not in r.text
        r = await rig.api.post(f"{url}/assetState", json={"id": "pump-001"})
        assert r.status_code == 200, r.text
        assert r.json()["body"]["temperature"] == rig.pump.fleet.states["pump-001"]["temperature"]
        assert ("/api/v1.0/assets/pump-001/state", f"token={TOKEN}") in rig.pump.fleet.requests
        # Python face of the same call
        result = await (await rig.svc.bind(CID, "pumps")).call("assetData", id="pump-002")
        assert result.body["name"] == "Pump pump-002"
        # clear errors: unknown operation, missing parameter, upstream 404, unknown parameter
        r = await rig.api.post(f"{url}/nope", json={})
        assert (r.status_code, r.json()["error"]) == (404, "not_found")
        r = await rig.api.post(f"{url}/assetState", json={})
        assert r.json()["message"] == "assetState: parameter 'id' (path) is required"
        r = await rig.api.post(f"{url}/assetState", json={"id": "pump-999"})
        assert (r.status_code, r.json()["error"]) == (502, "upstream_error")
        assert "answered 404" in r.json()["message"]
        assert TOKEN not in r.text
        r = await rig.api.post(f"{url}/assets", json={"limit": 3})
        assert "unknown parameter(s) limit" in r.json()["message"]
        # a response outside the document is refused
        rig.pump.fleet.states["pump-001"]["battery"] = "full"
        r = await rig.api.post(f"{url}/assetState", json={"id": "pump-001"})
        assert r.json()["error"] == "upstream_response_invalid"
        assert "$.battery: expected number, got string" in r.json()["message"]
        # a broken document upload is refused whole, with paths
        bad = doc.replace('swagger: "2.0"', 'swagger: "3.0"').replace("basePath: /api/v1.0\n", "")
        r = await rig.api.put(
            f"/connectors/{CID}/integrations/pumps/document", json={"document": bad}
        )
        assert r.status_code == 400
        assert {v["path"] for v in r.json()["violations"]} == {"$.swagger", "$.basePath"}
        # removal
        r = await rig.api.delete(f"/connectors/{CID}/integrations/pumps")
        assert r.status_code == 204
        r = await rig.api.get(f"/connectors/{CID}/integrations/pumps")
        assert r.status_code == 404
    assert TOKEN not in caplog.text


async def test_https_is_verified_by_default(rig: Rig) -> None:
    view = await add_pumps(rig, ca_bundle=None, health_interval_s=0)
    assert view["health"] is None
    r = await rig.api.post(f"/connectors/{CID}/integrations/pumps/operations/assets")
    assert r.json()["error"] == "upstream_unreachable"
    host = rig.pump.host
    assert r.json()["message"] == (
        f"assets: GET /api/v1.0/assets failed: the TLS certificate of {host} is not trusted "
        "(unable to get local issuer certificate); set ca_bundle to the CA that issued it"
    )
    r = await rig.api.post(f"/connectors/{CID}/integrations/pumps/health")
    assert r.json()["healthy"] is False
    assert r.json()["detail"].startswith(
        f"GET /api/v1.0/health failed: the TLS certificate of {host} is not trusted"
    )


async def test_connection_errors_read_as_one_sentence(rig: Rig) -> None:
    """A stopped API: the operation answer, the health detail and the run report all say
    what happened in words, without errno numbers or library names."""
    await add_pumps(rig, health_interval_s=0, retries=0)
    host = rig.pump.host
    await rig.pump.stop()
    refused = f"could not connect to {host}: the connection was refused"
    base = f"/connectors/{CID}/integrations/pumps"
    r = await rig.api.post(f"{base}/operations/assets")
    assert (r.status_code, r.json()) == (
        502,
        {
            "error": "upstream_unreachable",
            "message": f"assets: GET /api/v1.0/assets failed: {refused}",
        },
    )
    r = await rig.api.post(f"{base}/health")
    assert r.json()["detail"] == f"GET /api/v1.0/health failed: {refused}"
    r = await rig.api.post(f"{base}/jobs/sync")
    assert (r.json()["status"], r.json()["error"]) == (
        "failed",
        f"assets: GET /api/v1.0/assets failed: {refused}",
    )


async def test_sync_runs_on_its_schedule(rig: Rig) -> None:
    await add_pumps(rig, sync_interval_s=0.2, fetch_interval_s=0.2)
    with trio.fail_after(10):
        while True:
            jobs = (await rig.api.get(f"/connectors/{CID}/integrations/pumps/jobs")).json()
            last = {j["job"]: j["last"] for j in jobs["jobs"]}
            if last["fetch"] and last["fetch"]["updated"] == 3:
                break
            await trio.sleep(0.05)
    assert last["sync"]["trigger"] == "schedule"
    runs = (await rig.api.get(f"/connectors/{CID}/integrations/pumps/jobs/sync/runs")).json()
    assert sum(x["created"] for x in runs["items"]) == 3


async def test_requests_need_the_admin_token(rig: Rig) -> None:
    r = await rig.api.get(f"/connectors/{CID}/integrations", headers={"Authorization": ""})
    assert r.status_code == 401
