"""OAuth2 client credentials, form uploads and collection formats end to end: a real
gateway and the pump-fleet API over HTTPS in its OAuth2 variant
(``tests/data/pump-fleet-oauth2.yaml``), both on 127.0.0.1.  The API parses every request
with its own decoders (Starlette, python-multipart) and echoes what it understood."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.testing.integrations import IntegrationRig, open_integration_rig
from gateway.testing.pump_api import CLIENT_ID, CLIENT_SECRET

DATA = Path(__file__).parents[1] / "data"
DOC = (DATA / "pump-fleet-oauth2.yaml").read_text()
CID = "demo"
BASE = f"/connectors/{CID}/integrations"
JOBS = {"sync_operation": "listPumps", "fetch_operation": "pumpState"}
SETTINGS = {**JOBS, "fetch_id_parameter": "pumpId"}


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[IntegrationRig]:
    async with open_integration_rig(tmp_path, auth="oauth2") as r:
        yield r


async def add(rig: IntegrationRig, doc: str = DOC, **settings: Any) -> dict[str, Any]:
    r = await rig.api.post(
        BASE,
        json={
            "name": "pumps",
            "document": doc,
            "config": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            "settings": rig.settings(**{**SETTINGS, **settings}),
        },
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def call(rig: IntegrationRig, operation: str, **params: Any) -> Any:
    r = await rig.api.post(f"{BASE}/pumps/operations/{operation}", json=params)
    assert r.status_code == 200, r.text
    return r.json()["body"]


async def test_job_settings_must_name_operations_of_the_document(rig: IntegrationRig) -> None:
    body = {"name": "pumps", "document": DOC, "settings": rig.settings()}
    r = await rig.api.post(BASE, json=body)
    assert (r.status_code, r.json()) == (
        400,
        {
            "error": "invalid_settings",
            "message": "settings.sync_operation: the document has no operation 'assets' (its "
            "operations: addNote, health, listPumps, pumpBatch, pumpState, searchPumps, "
            "uploadFirmware); set sync_operation to the operationId to use, or null to turn "
            "the sync job off",
        },
    )
    r = await rig.api.post(BASE, json={**body, "settings": rig.settings(**JOBS)})
    assert r.json()["message"] == (
        "settings.fetch_id_parameter: operation 'pumpState' has no parameter 'id' "
        "(its parameters: pumpId)"
    )
    r = await rig.api.get(f"{BASE}/pumps")
    assert r.status_code == 404  # nothing was stored
    # null turns a job off; it can then not be run
    await add(rig, sync_operation=None)
    r = await rig.api.get(f"{BASE}/pumps/jobs")
    assert {j["job"]: j["operation"] for j in r.json()["jobs"]} == {
        "sync": None,
        "fetch": "pumpState",
    }
    r = await rig.api.post(f"{BASE}/pumps/jobs/sync")
    assert (r.status_code, r.json()["error"]) == (400, "invalid_settings")
    # later changes are checked the same way, and change nothing when refused
    r = await rig.api.patch(f"{BASE}/pumps/config", json={"settings": {"fetch_operation": "x"}})
    assert r.status_code == 400
    assert "no operation 'x'" in r.json()["message"]
    smaller = DOC.replace("operationId: pumpState", "operationId: pumpReadings")
    r = await rig.api.put(f"{BASE}/pumps/document", json={"document": smaller})
    assert r.status_code == 400
    assert "no operation 'pumpState'" in r.json()["message"]
    r = await rig.api.get(f"{BASE}/pumps")
    assert (r.json()["doc_version"], r.json()["settings"]["fetch_operation"]) == (1, "pumpState")


async def test_document_route_answers_404_before_judging_the_document(
    rig: IntegrationRig,
) -> None:
    r = await rig.api.put(f"{BASE}/nope/document", json={"document": "x"})
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    r = await rig.api.put(f"{BASE}/nope/document", json={"document": ""})
    assert (r.status_code, r.json()["error"]) == (400, "bad_request")  # the schema's minLength


@pytest.mark.parametrize("client_auth", ["basic", "body"])
async def test_oauth2_client_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, client_auth: str
) -> None:
    caplog.set_level(logging.DEBUG)
    doc = DOC.replace(
        "    x-exosite-secret-field: client_secret\n",
        f"    x-exosite-secret-field: client_secret\n    x-exosite-client-auth: {client_auth}\n",
    )
    async with open_integration_rig(tmp_path, auth="oauth2", client_auth=(client_auth,)) as rig:
        fleet = rig.pump.fleet
        view = await add(rig, doc)
        assert view["config"] == {"client_id": CLIENT_ID}
        assert view["missing_config"] == []
        # one token for the read scope, reused by the next calls
        assert [p["id"] for p in await call(rig, "listPumps")] == [
            "pump-001",
            "pump-002",
            "pump-003",
        ]
        await call(rig, "pumpState", pumpId="pump-001")
        assert [(t.client_auth, t.scope) for t in fleet.token_requests] == [
            (client_auth, "assets:read")
        ]
        # an operation needing another scope gets its own token
        note = await call(rig, "addNote", pumpId="pump-002", text="checked")
        assert note["fields"] == {"text": ["checked"]}
        assert [t.scope for t in fleet.token_requests] == ["assets:read", "assets:write"]
        # the API expires every token: the next call gets 401, renews once, succeeds
        fleet.expire_tokens()
        await call(rig, "pumpState", pumpId="pump-003")
        assert fleet.refused_tokens == 1
        assert [t.scope for t in fleet.token_requests][2:] == ["assets:read"]
        # sync and fetch (4 assets at once) share one token; after an expiry, one renewal
        r = await rig.api.post(f"{BASE}/pumps/jobs/sync")
        assert (r.json()["status"], r.json()["created"]) == ("ok", 3), r.text
        fleet.expire_tokens()
        before = len(fleet.token_requests)
        r = await rig.api.post(f"{BASE}/pumps/jobs/fetch")
        assert (r.json()["status"], r.json()["updated"]) == ("ok", 3), r.text
        assert len(fleet.token_requests) == before + 1
        # secrets and tokens: never in answers, logs, events or the database
        tokens = [t.token for t in fleet.token_requests]
        shown = [
            (await rig.api.get(f"{BASE}/pumps")).text,
            (await rig.api.get(BASE)).text,
            (await rig.api.get(f"{BASE}/pumps/jobs/fetch/runs")).text,
            (await rig.api.get(f"{BASE}/pumps/health")).text,
        ]
        events = await rig.gw.services.events.read(CID, after=0, limit=1000)
        db = b"".join(p.read_bytes() for p in (tmp_path / "gw").glob("gateway.db*"))
        for secret in [CLIENT_SECRET, *tokens]:
            assert all(secret not in text for text in shown)
            assert secret not in caplog.text
            assert all(secret not in repr(e) for e in events)
            assert secret.encode() not in db


async def test_oauth2_refusals_are_clear(rig: IntegrationRig) -> None:
    await add(rig)
    r = await rig.api.patch(
        f"{BASE}/pumps/config", json={"values": {"client_secret": "wrong-Secret-123"}}
    )
    assert r.status_code == 200
    r = await rig.api.post(f"{BASE}/pumps/operations/listPumps", json={})
    assert (r.status_code, r.json()) == (
        502,
        {
            "error": "upstream_auth_failed",
            "message": "OAuth2 token request (pumpOAuth): POST /oauth/token answered 401: "
            "invalid_client",
        },
    )
    r = await rig.api.patch(f"{BASE}/pumps/config", json={"values": {"client_secret": None}})
    assert r.json()["missing_config"] == ["client_secret"]
    r = await rig.api.post(f"{BASE}/pumps/operations/listPumps", json={})
    assert (r.status_code, r.json()["message"]) == (
        400,
        "pumpOAuth: configuration parameter 'client_secret' is not set",
    )
    assert rig.pump.fleet.token_requests == []


async def test_collection_formats_reach_the_api_as_declared(rig: IntegrationRig) -> None:
    await add(rig)
    body = await call(
        rig,
        "searchPumps",
        ids=["pump-001", "pump-002", "pump-003"],
        sites=["north", "south"],
        models=["PX-200", "QX-1"],
        tags=["new seal", "b"],
        fields=["id", "site"],
        limits=[5, "7"],
        **{"X-Sites": ["east", "north"]},
    )
    assert body["query"] == (
        "ids=pump-001%2Cpump-002%2Cpump-003&sites=north&sites=south&models=PX-200+QX-1"
        "&tags=new+seal%09b&fields=id%7Csite&limits=5%2C7"
    )
    assert body["decoded"] == {
        "ids": ["pump-001", "pump-002", "pump-003"],
        "sites": ["north", "south"],
        "models": ["PX-200", "QX-1"],
        "tags": ["new seal", "b"],
        "fields": ["id", "site"],
        "limits": ["5", "7"],
        "X-Sites": ["east", "north"],
    }
    assert [p["id"] for p in body["pumps"]] == ["pump-001", "pump-002", "pump-003"]
    batch = await call(rig, "pumpBatch", ids=["pump-003", "pump-001"])
    assert [p["id"] for p in batch] == ["pump-003", "pump-001"]
    # an item the API could not split back is refused before anything is sent
    sent = len(rig.pump.fleet.requests)
    r = await rig.api.post(f"{BASE}/pumps/operations/searchPumps", json={"ids": ["a,b"]})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_parameter")
    assert len(rig.pump.fleet.requests) == sent


async def test_urlencoded_form_post(rig: IntegrationRig) -> None:
    await add(rig)
    body = await call(
        rig,
        "addNote",
        pumpId="pump-001",
        text="seal leaks & hums = bad",
        priority="4",
        urgent=False,
        labels=["seal", "noise, loud"],
        codes=["E1", "E7"],
    )
    assert body == {
        "pump": "pump-001",
        "content_type": "application/x-www-form-urlencoded",
        "fields": {
            "text": ["seal leaks & hums = bad"],
            "priority": ["4"],
            "urgent": ["false"],
            "labels": ["seal", "noise, loud"],
            "codes": ["E1|E7"],
        },
        "files": [],
    }
    r = await rig.api.post(
        f"{BASE}/pumps/operations/addNote", json={"pumpId": "pump-001", "priority": 2}
    )
    assert r.json()["message"] == "addNote: parameter 'text' (formData) is required"


async def test_multipart_upload_with_a_file(rig: IntegrationRig) -> None:
    await add(rig)
    image = bytes(range(256)) * 40 + b"\r\n--not-a-boundary--\r\n"
    body = await call(
        rig,
        "uploadFirmware",
        pumpId="pump-002",
        version="2.1.0",
        channels=["beta", "stable"],
        image={
            "filename": 'px200 "fw".bin',
            "content_type": "application/x-px-firmware",
            "content_base64": base64.b64encode(image).decode(),
        },
    )
    assert body["content_type"] == "multipart/form-data"
    assert body["fields"] == {"version": ["2.1.0"], "channels": ["beta,stable"]}
    assert body["files"] == [
        {
            "field": "image",
            "filename": "px200 %22fw%22.bin",
            "content_type": "application/x-px-firmware",
            "size": len(image),
            "sha256": hashlib.sha256(image).hexdigest(),
        }
    ]
    # a file given as plain text travels as UTF-8, named after its parameter
    body = await call(rig, "uploadFirmware", pumpId="pump-002", version="1", image="héllo")
    assert body["files"][0]["filename"] == "image"
    assert body["files"][0]["size"] == len("héllo".encode())
