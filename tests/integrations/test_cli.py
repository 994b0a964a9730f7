"""``gateway integration …`` (gateway/cli/integration.py) end to end: the CLI in a worker
thread, the whole gateway in this Trio run and the pump-fleet API over HTTPS
(``gateway.testing.integrations``).  The CLI finds the gateway as an operator's would,
through its data directory (``--data DIR``: run.json, admin.token); every command in table
and ``--json`` form."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner, Result

from gateway.cli.main import cli
from gateway.testing.integrations import IntegrationRig, open_integration_rig
from gateway.testing.pump_api import CLIENT_ID, CLIENT_SECRET, PASSWORD

DATA = Path(__file__).parents[1] / "data"
CID = "demo"
ENV: dict[str, str | None] = {"GATEWAY_API": None, "GATEWAY_TOKEN": None, "COLUMNS": "200"}


class Cli:
    def __init__(self, rig: IntegrationRig) -> None:
        self.rig = rig

    async def __call__(self, *args: str, input: str | None = None, code: int = 0) -> Result:
        argv = ["integration", *args, "--data", self.rig.gw.info.data]
        result = await trio.to_thread.run_sync(
            lambda: CliRunner().invoke(cli, argv, input=input, env=ENV, catch_exceptions=False)
        )
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result

    async def json(self, *args: str, input: str | None = None) -> Any:
        return json.loads((await self(*args, "--json", input=input)).stdout)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[IntegrationRig]:
    async with open_integration_rig(tmp_path) as r:
        yield r


async def test_every_integration_command(rig: IntegrationRig, tmp_path: Path) -> None:
    run = Cli(rig)
    as_json = run.json
    settings = tmp_path / "settings.json"
    field_map = {"temperature": "temperature", "battery": "battery"}
    settings.write_text(json.dumps(rig.settings(field_map=field_map)))
    doc = str(DATA / "pump-fleet-basic.yaml")

    r = await run("validate", CID, str(DATA / "broken" / "basepath-missing.yaml"), code=1)
    assert "basepath-missing.yaml is refused (1 problem)" in r.stderr
    assert "  $.basePath: is required" in r.stderr
    r = await run("validate", CID, doc)
    assert r.stdout.startswith("valid; operations: ")
    assert "assetState" in r.stdout
    r = await run(
        "add",
        CID,
        "pumps",
        doc,
        "--set",
        f"username={rig.pump.fleet.username}",
        "--secret",
        "password",
        "--settings-file",
        str(settings),
        "--setting",
        "tag_fields=site",  # an array in the settings schema: comma-separated
        "--setting",
        "retries=2",
        input=PASSWORD + "\n",
    )
    assert PASSWORD not in r.stdout
    assert "assetState  GET     /assets/{id}/state  id:string" in r.stdout
    view = await as_json("show", CID, "pumps")
    assert view["missing_config"] == []
    assert (view["settings"]["tag_fields"], view["settings"]["retries"]) == (["site"], 2)
    state_op = next(o for o in view["operations"] if o["operation_id"] == "assetState")
    assert state_op["parameter_specs"] == [
        {"name": "id", "location": "path", "type": "string", "items": None, "required": True}
    ]
    assert PASSWORD not in json.dumps(view)
    listed = await as_json("list", CID)
    assert [i["name"] for i in listed["items"]] == ["pumps"]
    r = await run("list", CID)
    assert r.stdout.splitlines()[1].split()[0] == "pumps"

    assert (await as_json("health", CID, "pumps", "--check"))["healthy"] is True
    r = await run("health", CID, "pumps", "--check")
    assert r.stdout.splitlines()[0].split()[:3] == ["TIME", "HEALTHY", "STATUS"]
    assert " yes " in r.stdout.splitlines()[1]
    history = await as_json("health", CID, "pumps", "--changes")
    assert [h["healthy"] for h in history["history"]] == [True]

    assert (await as_json("sync", CID, "pumps"))["created"] == 3
    r = await run("fetch", CID, "pumps")
    assert "status    ok" in r.stdout
    assert "running fetch of pumps (the gateway answers when it is done)" in r.stderr
    assert len((await as_json("fetch", CID, "pumps", "--runs"))["items"]) == 1
    assert "api" in (await run("sync", CID, "pumps", "--runs")).stdout
    jobs = await as_json("jobs", CID, "pumps")
    assert {j["job"] for j in jobs["jobs"]} == {"sync", "fetch"}
    assert "fetch" in (await run("jobs", CID, "pumps")).stdout

    result = await as_json("call", CID, "pumps", "assetState", "id=pump-001")
    assert (result["status"], result["body"]["battery"]) == (200, 99)
    r = await run("call", CID, "pumps", "assetState", "id=pump-001")
    assert json.loads(r.stdout)["battery"] == 99
    # A string parameter stays text however numeric it looks: the pump API answers 404
    # for asset "123", the gateway never refuses the value's type.
    r = await run("call", CID, "pumps", "assetState", "id=123", code=1)
    assert "must be" not in r.stderr
    assert r.stderr.startswith("error: ")
    r = await run("call", CID, "pumps", "nosuchOp", "id=1", code=1)
    assert "pumps has no operation 'nosuchOp' (operations: " in r.stderr
    r = await run("call", CID, "pumps", "assetState", code=1)
    assert "parameter 'id' (path) is required" in r.stderr

    configured = await as_json("config", CID, "pumps", "--setting", "fetch_interval_s=0")
    assert configured["settings"]["fetch_interval_s"] == 0
    r = await run("config", CID, "pumps")
    assert "settings.fetch_interval_s" in r.stdout
    assert PASSWORD not in r.stdout
    r = await run("config", CID, "pumps", "--setting", "fetch_interval_s=soon", code=2)
    assert r.stderr == "error: fetch_interval_s is a number, not 'soon'\n"
    r = await run("config", CID, "pumps", "--setting", "nope=1", code=2)
    assert "IntegrationSettings has no setting 'nope'" in r.stderr

    assert "swagger" in (await run("document", CID, "pumps")).stdout
    assert (await as_json("update", CID, "pumps", doc))["doc_version"] == 2
    assert (await run("remove", CID, "pumps")).stdout == "removed integration pumps\n"
    r = await run("show", CID, "pumps", code=1)
    assert "not_found" in r.stderr


async def test_forms_arrays_and_files_from_the_command_line(tmp_path: Path) -> None:
    """The OAuth2 pump API: arrays given comma-separated reach it in each parameter's
    collectionFormat, integers as integers, and ``image=@file`` uploads the file's bytes."""
    async with open_integration_rig(tmp_path, auth="oauth2") as rig:
        run = Cli(rig)
        await run(
            "add",
            CID,
            "pumps",
            str(DATA / "pump-fleet-oauth2.yaml"),
            "--set",
            f"client_id={CLIENT_ID}",
            "--secret",
            "client_secret",
            "--setting",
            f"host={rig.pump.host}",
            "--setting",
            "ca_bundle=" + rig.pump.ca_pem,
            "--setting",
            "sync_operation=listPumps",
            "--setting",
            "fetch_operation=pumpState",
            "--setting",
            "fetch_id_parameter=pumpId",
            "--setting",
            "health_interval_s=0",
            input=CLIENT_SECRET + "\n",
        )
        view = await run.json("show", CID, "pumps")
        search = next(o for o in view["operations"] if o["operation_id"] == "searchPumps")
        limits = next(p for p in search["parameter_specs"] if p["name"] == "limits")
        assert (limits["type"], limits["items"]) == ("array", "integer")
        found = await run.json(
            "call",
            CID,
            "pumps",
            "searchPumps",
            "ids=pump-001,pump-002,pump-003",
            "sites=north,south",
            "limits=5,7",
        )
        assert found["body"]["decoded"]["ids"] == ["pump-001", "pump-002", "pump-003"]
        assert found["body"]["decoded"]["limits"] == ["5", "7"]
        r = await run("call", CID, "pumps", "searchPumps", "limits=5,many", code=2)
        assert r.stderr == "error: limits is an integer in the document, not 'many'\n"
        image = tmp_path / "px200.bin"
        image.write_bytes(bytes(range(256)) * 8)
        uploaded = await run.json(
            "call",
            CID,
            "pumps",
            "uploadFirmware",
            "pumpId=pump-002",
            "version=2.1.0",
            "channels=beta,stable",
            f"image=@{image}",
        )
        assert uploaded["body"]["fields"] == {"version": ["2.1.0"], "channels": ["beta,stable"]}
        sent = uploaded["body"]["files"][0]
        assert (sent["filename"], sent["size"]) == ("px200.bin", 2048)
        assert sent["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
        r = await run("call", CID, "pumps", "uploadFirmware", f"image=@{tmp_path}/nope", code=2)
        assert "image: cannot read" in r.stderr
