"""Every operator command of the ``gateway`` CLI in table and ``--json`` form, against a
real gateway (the ``gw`` fixture: the whole gateway in this Trio run, ephemeral ports).

The commands run in a worker thread through click's ``CliRunner`` (the gateway keeps
serving on the Trio thread), found the way a user's are: ``--data DIR`` only, so the
address comes from ``DIR/run.json`` and the token from ``DIR/admin.token``.  The live tails
(``logs``, ``events --follow``) and the terminal progress bar run as child processes.

Human output is checked for what an operator must never see: raw µs epochs, ``True`` /
``False``, ``[]``.
"""

from __future__ import annotations

import os
import pty
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from click.testing import CliRunner, Result

from gateway.cli.main import cli
from gateway.testing.mqtt_bytes import gen_connect
from gateway.testing.ports import free_port as closed_port
from gateway.testing.server import TestGateway

CID = "demo"
ENV: dict[str, str | None] = {
    "GATEWAY_API": None,
    "GATEWAY_TOKEN": None,
    "GATEWAY_DATA": None,
    "COLUMNS": "200",
}
RAW_EPOCH = re.compile(r"\b1\d{15}\b")
LOCAL_TIME = re.compile(r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\b")


class Cli:
    """``gateway ARGS --data DIR`` in a worker thread; its result."""

    def __init__(self, gw: TestGateway) -> None:
        self.gw = gw

    async def __call__(
        self, *args: str, input: str | None = None, code: int = 0, data: bool = True
    ) -> Result:
        full = [*args, "--data", self.gw.info.data] if data else list(args)
        result = await trio.to_thread.run_sync(
            lambda: CliRunner().invoke(cli, full, input=input, env=ENV, catch_exceptions=False)
        )
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result

    async def json(self, *args: str, input: str | None = None) -> Any:
        return msgspec.json.decode((await self(*args, "--json", input=input)).stdout)

    async def table(self, *args: str, input: str | None = None) -> str:
        out = (await self(*args, input=input)).stdout
        assert_human(out)
        return out


def assert_human(text: str) -> None:
    assert not RAW_EPOCH.search(text), text
    for raw in ("True", "False", "[]", "None"):
        assert raw not in text, (raw, text)


def rows(table: str) -> list[list[str]]:
    """A table's lines split on runs of two or more spaces (cells hold single spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in table.strip().splitlines()]


def fields(record: str) -> dict[str, str]:
    """A ``key  value`` record as a dict."""
    out = {}
    for line in record.strip().splitlines():
        key, _, value = line.strip().partition("  ")
        out[key] = value.strip()
    return out


@pytest.fixture
def run(gw: TestGateway) -> Cli:
    return Cli(gw)


# -- finding the gateway, errors -------------------------------------------------------------


def walk(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name, sub in getattr(group, "commands", {}).items():
        out += walk(sub, (*path, name))
    return out


def test_help_needs_no_token_and_no_gateway(tmp_path: Path) -> None:
    empty = tmp_path / "nothing-here"
    for path in walk(cli):
        r = CliRunner().invoke(cli, [*path, "--help"], env={**ENV, "GATEWAY_DATA": str(empty)})
        assert r.exit_code == 0, (path, r.output)
        assert "Usage: gateway" in r.stdout
    assert not empty.exists()


async def test_without_a_token_the_error_says_what_to_pass(run: Cli, tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{run.gw.ports['api']}"
    r = await run("device", "list", CID, "--data", str(tmp_path), "--api", api, data=False, code=2)
    assert r.stderr == (
        f"error: no {tmp_path}/admin.token; pass --data DIR (the gateway's data directory), "
        "--token TOKEN or set GATEWAY_TOKEN\n"
    )


async def test_a_refused_token_names_where_it_came_from(run: Cli) -> None:
    r = await run("device", "list", CID, "--token", "wrong", code=1)
    assert "refused the admin token from --token (invalid admin token); check --token" in r.stderr
    assert len(r.stderr.splitlines()) == 1


async def test_no_gateway_is_one_sentence(run: Cli, tmp_path: Path) -> None:
    port = closed_port()
    r = await run("connector", "list", "--api", f"http://127.0.0.1:{port}", code=3)
    assert r.stderr == (
        f"error: no gateway answers at http://127.0.0.1:{port} (connection refused); check --api\n"
    )
    # a run.json left by a gateway that died: the error says so
    data = tmp_path / "stale"
    data.mkdir()
    (data / "admin.token").write_text("t")
    child = await trio.run_process(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_stdout=True
    )
    info = {"pid": int(child.stdout), "ports": {"api": port}, "api_host": "127.0.0.1"}
    (data / "run.json").write_text(msgspec.json.encode(info).decode())
    r = await run("connector", "list", "--data", str(data), data=False, code=3)
    assert f"{data}/run.json is left from a gateway that is no longer running" in r.stderr
    assert "Traceback" not in r.stderr


async def test_api_address_from_run_json_env_or_flag(run: Cli, tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{run.gw.ports['api']}"
    token = run.gw.admin_token

    def with_env(value: str) -> Result:
        env = {**ENV, "GATEWAY_API": value, "GATEWAY_DATA": str(tmp_path)}
        return CliRunner().invoke(cli, ["connector", "list", "--token", token], env=env)

    for value in (api, api + "/api/v1"):  # one meaning: both spellings work
        r = await trio.to_thread.run_sync(with_env, value)
        assert r.exit_code == 0, r.output
        assert CID in r.stdout
    status = await run.json("status")
    assert status["api"] == api
    assert status["api_from"] == f"{run.gw.info.data}/run.json"
    assert status["token_from"] == f"{run.gw.info.data}/admin.token"
    shown = await run.table("status")
    assert fields(shown)["gateway"] == f"{api} (from {run.gw.info.data}/run.json)"
    assert fields(shown)["admin token"] == f"{run.gw.info.data}/admin.token (accepted)"


async def test_common_options_before_or_after_any_subcommand(run: Cli) -> None:
    data = run.gw.info.data
    for args in (
        ["--json", "--data", data, "connector", "list"],
        ["connector", "--json", "--data", data, "list"],
        ["connector", "list", "--json", "--data", data],
        ["--data", data, "connector", "list", "--json"],
    ):
        r = await run(*args, data=False)
        assert msgspec.json.decode(r.stdout)["items"][0]["id"] == CID, args


# -- connectors and resources ----------------------------------------------------------------


async def test_connector_commands(run: Cli) -> None:
    made = await run.json(
        "connector",
        "create",
        "Fleet",
        "--id",
        "fleet1",
        "--set",
        "provisioning.presenter_identity=false",
        "--set",
        "limits.max_payload=65536",
    )
    assert made["id"] == "fleet1"
    assert made["settings"]["provisioning"]["presenter_identity"] is False
    assert made["settings"]["limits"]["max_payload"] == 65536
    listed = await run.json("connector", "list")
    assert listed["next"] is None
    assert [c["id"] for c in listed["items"]] == [CID, "fleet1"]
    table = await run.table("connector", "list")
    assert rows(table)[0] == ["ID", "NAME", "FQDN", "CREATED", "DESCRIPTION"]
    assert rows(table)[2][:3] == ["fleet1", "Fleet", "fleet1.m2.localhost"]
    assert LOCAL_TIME.search(table)
    shown = await run.table("connector", "show", "fleet1")
    assert fields(shown)["settings.provisioning.presenter_identity"] == "no"
    assert (await run.json("connector", "show", "fleet1"))["name"] == "Fleet"
    updated = await run.table("connector", "update", "fleet1", "--description", "north site")
    assert fields(updated)["description"] == "north site"
    assert (await run.json("connector", "update", "fleet1", "--name", "F2"))["name"] == "F2"
    settings = await run.json("connector", "settings", "fleet1", "--set", "limits.max_payload=128")
    assert settings["limits"]["max_payload"] == 128
    shown = await run.table("connector", "settings", "fleet1")
    assert fields(shown)["limits.max_payload"] == "128"
    r = await run("connector", "settings", "fleet1", "--set", "limits.nope=1", code=2)
    assert (
        "limits has no setting 'nope' (known: activation_failures_per_ip, auth_failures_per_ip, "
        "connections, connections_per_ip, flapping, max_packet_size, max_payload, "
        "publish_bytes, publishes, upload_quota)"
    ) in r.stderr
    r = await run("connector", "settings", "fleet1", "--set", "limits.max_payload=lots", code=2)
    assert r.stderr == "error: limits.max_payload is an integer, not 'lots'\n"
    assert (await run("connector", "delete", "fleet1")).stdout == "deleted connector fleet1\n"
    r = await run("connector", "show", "fleet1", code=1)
    assert r.stderr == "error: connector 'fleet1' not found (not_found)\n"


async def test_resource_commands(run: Cli) -> None:
    made = await run.json("resource", "create", CID, "temp", "--format", "number", "--unit", "C")
    assert made["format"] == "number"
    table = await run.table("resource", "create", CID, "mode", "--settable", "--allowed", "eco,max")
    assert rows(table)[1] == ["mode", "string", "yes", "yes", "-", "eco, max", "-"]
    listed = await run.json("resource", "list", CID)
    assert {"temp", "mode"} <= {r["alias"] for r in listed["items"]}
    table = await run.table("resource", "list", CID)
    assert ["temp", "number", "no", "yes", "C", "-", "-"] in rows(table)
    changed = await run.json("resource", "update", CID, "temp", "settable=true", "unit=°F")
    assert (changed["settable"], changed["unit"]) == (True, "°F")
    assert "°F" in await run.table("resource", "update", CID, "temp", "sync=false")
    assert (await run.json("resource", "delete", CID, "temp")) == {"deleted": "temp"}
    assert (await run("resource", "delete", CID, "mode")).stdout == "deleted resource mode\n"


# -- devices and state -----------------------------------------------------------------------


async def test_device_listing_pages_hints_and_cursor(run: Cli, tmp_path: Path) -> None:
    csv = tmp_path / "ids.csv"
    csv.write_text(
        "ID,tag:site\n" + "".join(f"d{i:04},{'n' if i % 2 else 's'}\n" for i in range(1250))
    )
    await run("device", "import", CID, str(csv))
    r = await run("device", "list", CID)
    assert_human(r.stdout)
    assert len(rows(r.stdout)) == 101  # heading + one page
    assert rows(r.stdout)[0] == [
        "IDENTITY",
        "STATUS",
        "LOCKED",
        "ONLINE",
        "LAST SEEN",
        "LAST IP",
        "TAGS",
    ]
    assert rows(r.stdout)[1] == ["d0000", "whitelisted", "no", "no", "-", "-", "site:s"]
    page = await run.json("device", "list", CID, "--limit", "3")
    assert [d["identity"] for d in page["items"]] == ["d0000", "d0001", "d0002"]
    assert page["next"]  # --json keeps the cursor
    hinted = re.search(r"--cursor (\S+) shows the next page", r.stderr)
    assert hinted, r.stderr
    after = await run.json("device", "list", CID, "--cursor", hinted.group(1))
    assert after["items"][0]["identity"] == "d0100"
    more = await run.json("device", "list", CID, "--limit", "3", "--cursor", page["next"])
    assert more["items"][0]["identity"] == "d0003"
    r = await run("device", "list", CID, "--limit", "1000")
    assert "1,000 devices shown, 250 more: --all lists every one" in r.stderr
    r = await run("device", "list", CID, "--limit", "5")
    assert "5 devices shown, 1,000+ more" in r.stderr
    everything = await run.json("device", "list", CID, "--all", "--limit", "500")
    assert (len(everything["items"]), everything["next"]) == (1250, None)
    r = await run("device", "list", CID, "--all", "--tag", "site:n")
    assert len(rows(r.stdout)) == 626
    assert "625 devices" in r.stderr
    assert (await run("device", "list", CID, "--count", "--prefix", "d00")).stdout == "100\n"
    assert await run.json("device", "list", CID, "--count") == {"count": 1250}
    ids = (await run("device", "list", CID, "--ids", "--prefix", "d120")).stdout
    assert ids == "".join(f"d{i}\n" for i in range(1200, 1210))
    r = await run("device", "list", CID, "--tag", "nocolon", code=2)
    assert "tag 'nocolon' must look like name:value" in r.stderr


async def test_device_commands_one_at_a_time(run: Cli) -> None:
    made = await run.json("device", "add", CID, "dev-1", "--tag", "site:lab")
    assert made["tags"] == [{"name": "site", "value": "lab"}]
    shown = await run.table(
        "device", "add", CID, "dev-2", "--auth-type", "token", "--key", "k" * 24
    )
    assert fields(shown)["status"] == "provisioned"
    shown = await run.table("device", "show", CID, "dev-1")
    assert fields(shown)["tags"] == "site:lab"
    assert LOCAL_TIME.search(shown)
    assert (await run.json("device", "show", CID, "dev-1"))["locked"] is False
    assert (await run.json("device", "lock", CID, "dev-1"))["locked"] is True
    assert fields(await run.table("device", "lock", CID, "dev-1"))["locked"] == "yes"
    assert fields(await run.table("device", "unlock", CID, "dev-1"))["locked"] == "no"
    assert (await run.json("device", "unlock", CID, "dev-1"))["locked"] is False
    assert fields(await run.table("device", "reset", CID, "dev-2"))["reprovision"] == "yes"
    assert (await run.json("device", "reset", CID, "dev-2"))["reprovision"] is True
    tagged = await run.json("device", "tag", CID, "dev-1", "owner:ops", "team:a")
    assert {"name": "owner", "value": "ops"} in tagged["tags"]
    replaced = await run.table("device", "tag", CID, "dev-1", "team:b", "--replace")
    assert fields(replaced)["tags"] == "owner:ops, site:lab, team:b"
    untagged = await run.json("device", "untag", CID, "dev-1", "owner", "team:b")
    assert [t["name"] for t in untagged["tags"]] == ["site"]
    assert fields(await run.table("device", "untag", CID, "dev-1", "x"))["tags"] == "site:lab"
    assert (await run.json("device", "delete", CID, "dev-2")) == {"deleted": "dev-2"}
    assert (await run("device", "delete", CID, "dev-1")).stdout == "deleted device dev-1\n"
    r = await run("device", "show", CID, "dev-1", code=1)
    assert "not_found" in r.stderr


async def test_bulk_edits_from_stdin_with_progress(run: Cli, tmp_path: Path) -> None:
    csv = tmp_path / "ids.csv"
    csv.write_text("ID\n" + "".join(f"b{i:03}\n" for i in range(300)))
    first = await run("device", "import", CID, str(csv), "--import-id", "batch-b")
    assert first.stdout == "created 300 of 300 devices\n"
    # the same command again (as after a lost answer): the first run's report, nothing new
    again = await run("device", "import", CID, str(csv), "--import-id", "batch-b")
    assert again.stdout == (
        "import batch-b was already done: it created 300 of 300 devices (nothing written now)\n"
    )
    ids = (await run("device", "list", CID, "--ids", "--prefix", "b")).stdout
    r = await run("device", "lock", CID, "-", input=ids)
    assert r.stdout == "locked 300 of 300 devices\n"
    assert "locking 300 devices" in r.stderr
    assert "done, 300" in r.stderr
    assert (await run("device", "list", CID, "--count", "--status", "locked")).stdout == "300\n"
    report = await run.json("device", "unlock", CID, "-", input=ids)
    assert report == {"done": 300, "failed": []}
    r = await run("device", "tag", CID, "-", "batch:7", input=ids)
    assert r.stdout == "tagged 300 of 300 devices\n"
    assert (await run("device", "list", CID, "--count", "--tag", "batch:7")).stdout == "300\n"
    await run("device", "untag", CID, "-", "batch", input=ids)
    await run("device", "reset", CID, "b000", "b001")  # several named: bulk too
    # one failure among many: reported by identity, exit 1
    r = await run("device", "lock", CID, "b002", "nosuch", code=1)
    assert "locked 1 of 2 devices" in r.stdout
    assert ["nosuch", "device 'nosuch' not found"] in rows(r.stdout)
    assert r.stderr.endswith("error: 1 of 2 devices failed\n")
    failed = await run("device", "lock", CID, "b002", "nosuch", "--json", code=1)
    body = msgspec.json.decode(failed.stdout)
    assert body["done"] == 1
    assert body["failed"][0]["identity"] == "nosuch"
    r = await run("device", "delete", CID, "-", input=ids, code=2)
    assert "deleting 300 devices needs --yes" in r.stderr
    r = await run("device", "delete", CID, "-", "--yes", input=ids)
    assert r.stdout == "deleted 300 of 300 devices\n"
    assert (await run("device", "list", CID, "--count", "--prefix", "b")).stdout == "0\n"


async def test_state_commands(run: Cli) -> None:
    await run("device", "add", CID, "s-1")
    state = await run.json("state", "set", CID, "s-1", "data_out=reboot")
    assert state["data_out"]["set"] == "reboot"
    assert state["data_out"]["pending"] is True
    table = await run.table("state", "set", CID, "s-1", "data_out=again")
    assert rows(table)[0] == ["ALIAS", "REPORTED", "SET", "PENDING", "UPDATED"]
    assert rows(table)[1][:4] == ["data_out", "-", "again", "yes"]
    assert LOCAL_TIME.search(rows(table)[1][4])
    assert (await run.json("state", "get", CID, "s-1"))["data_out"]["set"] == "again"
    assert "again" in await run.table("state", "get", CID, "s-1")
    r = await run("state", "set", CID, "s-1", "novalue", code=2)
    assert "'novalue' must look like ALIAS=VALUE" in r.stderr


# -- bulk import -----------------------------------------------------------------------------


def write_ids(path: Path, prefix: str, n: int) -> None:
    with path.open("w") as fh:
        fh.write("ID,tag:site\n")
        fh.writelines(f"{prefix}{i:06},{'north' if i % 4 == 0 else 'south'}\n" for i in range(n))


@pytest.mark.slow
async def test_import_of_100k_rows_shows_progress(run: Cli, tmp_path: Path) -> None:
    csv = tmp_path / "ids.csv"
    write_ids(csv, "p", 100_000)
    r = await run("device", "import", CID, str(csv))
    assert r.stdout == "created 100,000 of 100,000 devices\n"
    size = f"{csv.stat().st_size / 1024 / 1024:.1f} MiB"
    assert f"uploading ids.csv ({size})…" in r.stderr
    assert f"uploading ids.csv: done, {size} in" in r.stderr
    assert "importing 100,000 rows (the gateway answers when all are written)…" in r.stderr
    assert re.search(r"importing 100,000 rows .*: done in \d+\.\d s", r.stderr)
    assert (await run("device", "list", CID, "--count", "--tag", "site:north")).stdout == "25000\n"

    # On a terminal: a rich bar for the upload, then a spinner while the gateway imports.
    csv2 = tmp_path / "more.csv"
    write_ids(csv2, "q", 100_000)
    screen = await run_on_terminal(run.gw, "device", "import", CID, str(csv2), "--json")
    assert "uploading more.csv" in screen
    assert "━" in screen  # the bar
    assert "importing 100,000 rows" in screen
    assert '"created":100000' in screen.replace(" ", "").replace("\n", "")


async def run_on_terminal(gw: TestGateway, *args: str) -> str:
    """``python -m gateway ARGS`` with stdout and stderr on a pseudo-terminal; what it
    wrote (with the terminal's control sequences)."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    for k in ("GATEWAY_API", "GATEWAY_TOKEN", "GATEWAY_DATA", "NO_COLOR"):
        env.pop(k, None)
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "gateway", *args, "--data", gw.info.data],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)

    def read_all() -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        screen = await trio.to_thread.run_sync(read_all)
        code = await proc.wait()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    text = screen.decode(errors="replace")
    assert code == 0, text[-3000:]
    return text


async def test_import_refusals(run: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("ID\nok-1\nbad/1\nok-2\n")
    r = await run("device", "import", CID, str(bad), code=1)
    assert rows(r.stdout)[0] == ["LINE", "IDENTITY", "ERROR"]
    assert rows(r.stdout)[1][:2] == ["3", "bad/1"]
    assert len(rows(r.stdout)) == 2
    assert r.stderr.splitlines()[-1] == (
        "error: 1 of 3 rows are refused, nothing was written; fix them, or pass --partial to "
        "write the good rows anyway"
    )
    assert (await run("device", "list", CID, "--count", "--prefix", "ok-")).stdout == "0\n"
    dry = await run("device", "import", CID, str(bad), "--dry-run", "--partial")
    assert dry.stdout.startswith("checked 3 rows: 2 fine, 1 refused (dry run: nothing written)")
    report = msgspec.json.decode(
        (await run("device", "import", CID, str(bad), "--partial", "--json")).stdout
    )
    assert (report["created"], report["errors"][0]["line"]) == (2, 3)
    header = tmp_path / "header.csv"
    header.write_text("identity\nx\n")
    r = await run("device", "import", CID, str(header), code=1)
    assert "the first line must be a header whose first column is ID (bad_request)" in r.stderr


# -- content ---------------------------------------------------------------------------------


async def test_content_commands(run: Cli, tmp_path: Path) -> None:
    blob = tmp_path / "fw.bin"
    blob.write_bytes(os.urandom(300_000))
    info = await run.json("content", "upload", CID, "fw/v1.bin", str(blob), "--description", "v1")
    assert info["length"] == 300_000
    r = await run("content", "upload", CID, "fw/v2.bin", str(blob))
    assert_human(r.stdout)
    assert fields(r.stdout)["length"] == "293.0 KiB"
    assert "uploading fw.bin (293.0 KiB)" in r.stderr
    listed = await run.json("content", "list", CID, "--prefix", "fw/")
    assert [c["id"] for c in listed["items"]] == ["fw/v1.bin", "fw/v2.bin"]
    table = await run.table("content", "list", CID)
    assert rows(table)[1][:3] == ["fw/v1.bin", "293.0 KiB", "application/octet-stream"]
    assert (await run.json("content", "show", CID, "fw/v1.bin"))["description"] == "v1"
    assert fields(await run.table("content", "show", CID, "fw/v1.bin"))["description"] == "v1"
    out = tmp_path / "down.bin"
    got = await run.json("content", "download", CID, "fw/v1.bin", "-o", str(out))
    assert got == {"id": "fw/v1.bin", "length": 300_000, "file": str(out)}
    assert out.read_bytes() == blob.read_bytes()
    r = await run("content", "download", CID, "fw/v2.bin", "-o", str(out))
    assert r.stdout == f"fw/v2.bin -> {out} (300,000 bytes)\n"
    assert await run.json("content", "delete", CID, "fw/v1.bin") == {"deleted": "fw/v1.bin"}
    assert (await run("content", "delete", CID, "fw/v2.bin")).stdout == "deleted fw/v2.bin\n"
    missing = tmp_path / "missing.bin"
    r = await run("content", "download", CID, "fw/v2.bin", "-o", str(missing), code=1)
    assert "not_found" in r.stderr
    assert not missing.exists()
    assert not (tmp_path / "missing.bin.part").exists()


# -- events, logs, tokens, status ------------------------------------------------------------


async def test_events_page_and_hint(run: Cli) -> None:
    await run("device", "add", CID, "e-1")
    for i in range(4):
        await run("state", "set", CID, "e-1", f"data_out=v{i}")
    page = await run.json("events", CID, "--limit", "3")
    assert [e["payload"][0]["values"]["data_out"] for e in page["items"]] == ["v3", "v2", "v1"]
    assert page["next"] == page["items"][-1]["seq"]  # newest first: next is --before
    r = await run("events", CID, "--limit", "3")
    assert_human(r.stdout)
    assert rows(r.stdout)[0] == [
        "SEQ",
        "TIME",
        "TYPE",
        "IDENTITY",
        "IP",
        "PROTOCOL",
        "REASON",
        "PAYLOAD",
    ]
    assert [row[-1] for row in rows(r.stdout)[1:]] == ["data_out=v3", "data_out=v2", "data_out=v1"]
    assert f"3 events shown, 1 older: --all lists every one, --before {page['next']}" in r.stderr
    rest = await run.json("events", CID, "--before", str(page["next"]))
    assert [e["payload"][0]["values"]["data_out"] for e in rest["items"]] == ["v0"]
    assert rest["next"] is None
    # forwards, oldest first, from a cursor
    fwd = await run.json("events", CID, "--oldest-first", "--limit", "2", "--type", "data_out")
    assert [e["payload"][0]["values"]["data_out"] for e in fwd["items"]] == ["v0", "v1"]
    r = await run("events", CID, "--oldest-first", "--limit", "2", "--type", "data_out")
    assert f"2 events shown, 2 newer: --all lists every one, --after {fwd['next']}" in r.stderr
    more = await run.json("events", CID, "--after", str(fwd["next"]), "--type", "data_out")
    assert [e["payload"][0]["values"]["data_out"] for e in more["items"]] == ["v2", "v3"]
    # --all in both directions, small pages, one JSON document
    back = await run.json("events", CID, "--all", "--limit", "1", "--type", "data_out")
    assert [e["seq"] for e in back["items"]] == [e["seq"] for e in [*page["items"], *rest["items"]]]
    assert back["next"] is None
    ahead = await run.json("events", CID, "--all", "--oldest-first", "--limit", "3")
    assert [e["seq"] for e in ahead["items"]][-4:] == [e["seq"] for e in reversed(back["items"])]
    assert ahead["next"] == back["items"][0]["seq"]  # where --after continues
    r = await run("events", CID, "--all", "--limit", "1", "--type", "data_out")
    assert len(rows(r.stdout)) == 5
    assert "4 events" in r.stderr
    r = await run("events", CID, "--before", "3", "--oldest-first", code=2)
    assert "--before pages backwards" in r.stderr


# -- the forensic timeline: real refusals, found with the filters ---------------------------


async def http_write(gw: TestGateway, token: str, body: str = "data_in=1") -> int:
    """A device write on the development HTTP port with ``token`` (its status)."""
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(
            f"http://127.0.0.1:{gw.ports['dev_http']}/onep:v1/stack/alias",
            content=body,
            headers={
                "Host": gw.devmode_fqdn(),
                "X-Exosite-CIK": token,
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            },
        )
    return r.status_code


async def mqtt_connect(gw: TestGateway, password: str) -> int:
    """An MQTT 3.1.1 CONNECT on the development MQTT port (its CONNACK return code)."""
    stream = await trio.open_tcp_stream("127.0.0.1", gw.ports["dev_mqtt"])
    async with stream:
        await stream.send_all(gen_connect("", username="", password=password))
        ack = b""
        with trio.fail_after(10):
            while len(ack) < 4:
                chunk = await stream.receive_some(4 - len(ack))
                assert chunk, ack
                ack += chunk
    return ack[3]


async def committed(gw: TestGateway, after: int, want: set[tuple[str, str | None]]) -> None:
    """Wait (long-polling the event log) until events of each (type, reason) in ``want``
    have committed after seq ``after``: refusal events are written from the refusals'
    debug-log records, a moment after the refused request was answered."""
    seen: set[tuple[str, str | None]] = set()
    with trio.fail_after(10):
        while not want <= seen:
            items = await gw.services.events.read(CID, after=after, wait=5.0)
            seen |= {(e.type, e.reason) for e in items}
            after = items[-1].seq if items else after


async def test_events_forensic_timeline_filters(run: Cli) -> None:
    token = secrets.token_hex(20)
    start_us = int(time.time() * 1e6)
    await run("device", "add", CID, "f-1", "--auth-type", "token", "--key", token)
    mark = run.gw.services.events
    begin = await mark.last_seq(CID)
    assert await http_write(run.gw, token) == 204  # a good write: a data_in to filter out
    assert await http_write(run.gw, "f" * 40) == 401  # a wrong token over HTTP
    assert await mqtt_connect(run.gw, "0" * 40) != 0  # ... and over MQTT
    await committed(
        run.gw,
        begin,
        {
            ("data_in", None),
            ("write_refused", "not_authenticated"),
            ("connection_refused", "not_authenticated"),
        },
    )

    refused = ("--type", "write_refused", "--type", "connection_refused")
    page = await run.json("events", CID, *refused)
    assert [(e["type"], e["reason"], e["ip"]) for e in page["items"]] == [
        ("connection_refused", "not_authenticated", "127.0.0.1"),
        ("write_refused", "not_authenticated", "127.0.0.1"),
    ]  # newest first
    assert page["items"][0]["protocol"] == "murano:v1/mqtt"
    assert page["items"][1]["protocol"] == "onep:v1/http"
    assert page["next"] is None
    table = await run.table("events", CID, *refused)
    got = rows(table)
    assert got[0][:7] == ["SEQ", "TIME", "TYPE", "IDENTITY", "IP", "PROTOCOL", "REASON"]
    assert [r[2:7] for r in got[1:]] == [
        ["connection_refused", "-", "127.0.0.1", "murano:v1/mqtt", "not_authenticated"],
        ["write_refused", "-", "127.0.0.1", "onep:v1/http", "not_authenticated"],
    ]
    assert all(LOCAL_TIME.fullmatch(r[1]) for r in got[1:])
    # one type; the device's own events; an address with nothing
    only = await run.json("events", CID, "--type", "write_refused")
    assert [e["type"] for e in only["items"]] == ["write_refused"]
    mine = await run.json("events", CID, "--identity", "f-1")
    assert [e["type"] for e in mine["items"]] == ["data_in"]
    assert rows(await run.table("events", CID, "--identity", "f-1"))[1][2:4] == ["data_in", "f-1"]
    nobody = await run("events", CID, "--ip", "192.0.2.1")
    assert (nobody.stdout, nobody.stderr.strip()) == ("", "(none)")
    assert (await run.json("events", CID, "--ip", "127.0.0.1", *refused))["items"] == page["items"]
    # time, in the forms a person types: ago, ISO 8601 local, µs
    assert (await run.json("events", CID, *refused, "--since", "-1h"))["items"] == page["items"]
    assert (await run.json("events", CID, *refused, "--since", "30m"))["items"] == page["items"]
    before_start = datetime.fromtimestamp((start_us - 1_000_000) / 1e6).isoformat(sep=" ")
    assert (await run.json("events", CID, *refused, "--until", before_start))["items"] == []
    assert (await run.json("events", CID, *refused, "--since", before_start))["items"] == (
        page["items"]
    )
    newest = page["items"][0]["timestamp"]
    at = await run.json("events", CID, *refused, "--since", str(newest), "--until", str(newest))
    assert [e["seq"] for e in at["items"]] == [page["items"][0]["seq"]]
    # paging with the filters kept: one at a time, newest first
    r = await run("events", CID, *refused, "--limit", "1")
    hint = re.search(r"1 event shown, 1 older: --all lists every one, --before (\d+)", r.stderr)
    assert hint, r.stderr
    older = await run.json("events", CID, *refused, "--before", hint.group(1))
    assert older["items"] == page["items"][1:]
    everything = await run.json("events", CID, *refused, "--all", "--limit", "1")
    assert everything == {"items": page["items"], "next": None}
    # the gateway's refusals of a query are one line, exit status 1; a bad WHEN is ours (2)
    r = await run("events", CID, "--type", "write_refusd", code=1)
    assert "unknown event type 'write_refusd'" in r.stderr
    r = await run("events", CID, "--since", "soon", code=2)
    assert "'soon' is no time I know" in r.stderr
    r = await run("events", CID, "--since", "now", "--until", "-1h", code=1)
    assert "since must not be after until" in r.stderr


async def test_events_follow_keeps_the_filters(run: Cli) -> None:
    token = secrets.token_hex(20)
    await run("device", "add", CID, "w-1", "--auth-type", "token", "--key", token)
    assert await http_write(run.gw, "e" * 40) == 401  # before the follow: its first page
    follow, out, _ = await start(
        run.gw, "events", CID, "--follow", "--json", "--type", "write_refused", "--limit", "5"
    )
    try:
        first = msgspec.json.decode(await out.wait_for(lambda s: '"write_refused"' in s))
        begin = first["seq"]
        assert await http_write(run.gw, token) == 204  # a data_in the filter keeps out
        assert await http_write(run.gw, "d" * 40) == 401
        line = await out.wait_for(lambda s: '"write_refused"' in s and f'"seq":{begin}' not in s)
        later = msgspec.json.decode(line)
        assert later["seq"] > begin
        assert (later["type"], later["reason"]) == ("write_refused", "not_authenticated")
        assert all('"write_refused"' in s for s in out.seen), out.seen
    finally:
        await stop(follow)


async def test_tokens_and_status(run: Cli) -> None:
    made = await run.json("token", "create", "ci")
    assert made["name"] == "ci"
    assert made["token"]
    shown = await run("token", "create", "ops")
    assert "the token is shown only now" in shown.stderr
    listed = await run.json("token", "list")
    assert [t["name"] for t in listed] == ["ci", "ops"]
    table = await run.table("token", "list")
    assert rows(table)[1][:2] == [made["id"], "ci"]
    status = await run.json("status", "--token", made["token"])
    assert status["token_from"] == "--token"
    assert CID in status["connectors"]
    assert await run.json("token", "revoke", made["id"]) == {"revoked": made["id"]}
    r = await run("status", "--token", made["token"], code=1)
    assert "refused the admin token from --token" in r.stderr


async def test_certs_commands_table_and_json(tmp_path: Path) -> None:
    data = str(tmp_path / "var")
    r = CliRunner().invoke(cli, ["certs", "show-ca", "--data", data, "--json"], env=ENV)
    assert r.exit_code == 0, r.output
    ca = msgspec.json.decode(r.stdout)
    assert ca["pem"].startswith("-----BEGIN CERTIFICATE-----")
    out = str(tmp_path / "out")
    args = ["certs", "issue-device", "--connector", "c1", "--cn", "d1", "--out", out]
    r = CliRunner().invoke(cli, [*args, "--data", data, "--json"], env=ENV)
    issued = msgspec.json.decode(r.stdout)
    assert issued["server_name"] == "c1.m2.localhost"
    r = CliRunner().invoke(cli, ["--data", data, *args, "--base-domain", "example.net"], env=ENV)
    assert fields(r.stdout)["server_name"] == "c1.m2.example.net"
    r = CliRunner().invoke(
        cli,
        [
            "certs",
            "bundle",
            "--connector",
            "c1",
            "--cn",
            "d2",
            "--out",
            out,
            "--data",
            data,
            "--json",
        ],
        env=ENV,
    )
    assert msgspec.json.decode(r.stdout)["files"] == [
        "ca.pem",
        "device.pem",
        "device.key",
        "server_name",
    ]


async def start(gw: TestGateway, *args: str) -> tuple[trio.Process, Lines, Lines]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "gateway", *args, "--data", gw.info.data],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    return proc, Lines(proc.stdout), Lines(proc.stderr)


class Lines:
    """Lines of a child's output, read as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buf = b""
        self.seen: list[str] = []

    async def wait_for(self, pred: Callable[[str], bool], timeout: float = 20.0) -> str:
        with trio.fail_after(timeout):
            while True:
                for line in self.seen:
                    if pred(line):
                        return line
                while b"\n" not in self.buf:
                    chunk = await self.stream.receive_some()
                    assert chunk, f"the child ended; it wrote {self.seen!r}"
                    self.buf += chunk
                line, _, self.buf = self.buf.partition(b"\n")
                self.seen.append(line.decode())


async def stop(proc: trio.Process) -> None:
    proc.send_signal(signal.SIGINT)
    with trio.fail_after(10):
        code = await proc.wait()
    assert code == 0, code


async def test_logs_and_events_follow(run: Cli) -> None:
    await run("device", "add", CID, "l-1")
    table, table_out, table_err = await start(run.gw, "logs", CID)
    jsonl, json_out, json_err = await start(run.gw, "logs", CID, "--json", "--identity", "l-1")
    events, events_out, _ = await start(run.gw, "events", CID, "--follow", "--json")
    try:
        await table_err.wait_for(lambda s: s == f"following the live log of {CID} (Ctrl-C to stop)")
        await json_err.wait_for(lambda s: s.startswith("following the live log"))
        await run("state", "set", CID, "l-1", "data_out=go")
        line = await table_out.wait_for(lambda s: "data_out" in s)
        assert LOCAL_TIME.search(line)
        assert line.split()[2:] == ["events", "data_out", "l-1", "api"]
        rec = msgspec.json.decode(await json_out.wait_for(lambda s: '"data_out"' in s))
        assert (rec["kind"], rec["identity"]) == ("events", "l-1")
        ev = msgspec.json.decode(await events_out.wait_for(lambda s: '"data_out"' in s))
        assert ev["payload"][0]["values"] == {"data_out": "go"}
    finally:
        for proc in (table, jsonl, events):
            await stop(proc)
