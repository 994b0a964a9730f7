"""End to end through the CLI only — the Management issue's acceptance test.

Every operator step is a ``python -m gateway ...`` subprocess against a ``gateway serve``
child; every device step is a real device client: Exosite's murano-client (``gdc`` from
``.venv-murano``, unchanged) and Debian's ``mosquitto_pub``.  The story:

1. create a connector and its resources, bulk-import 10,000 devices with tags from CSV, and
   filter them by tag;
2. follow the live log (``gateway logs --follow``) for the rest of the test;
3. lock a device: its next MQTT connect is refused with CONNACK 5, and the live log shows
   the refusal (``locked``), as it shows a bad token's (``not_authenticated``);
4. a ``gdc mqtt subscribe`` device connects (the live log shows it) and receives a value
   set with ``gateway state set``;
5. upload a 150 MB content file that the device downloads with ``gdc http content
   download``; both ends checksum it.

The connector is reached by name (``fleet1.m2.localhost``, mapped in /etc/hosts) on the TLS
ports with the gateway's development CA, so SNI and certificate checks are real.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.testing.server import TestGateway, gateway_process

ROOT = Path(__file__).resolve().parents[2]
GDC = ROOT / ".venv-murano" / "bin" / "gdc"
CID = "fleet1"
HOST = f"{CID}.m2.localhost"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.needs_tool,
    pytest.mark.skipif(
        not GDC.exists(), reason="murano-client missing: run scripts/bootstrap --system"
    ),
    pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="mosquitto-clients missing"),
]


def gw_cli(
    gw: TestGateway, *args: str, check: bool = True, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``python -m gateway <group> <command> <rest> --data DIR``."""
    r = subprocess.run(
        cli_cmd(gw, *args), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check:
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    return r


def cli_cmd(gw: TestGateway, *args: str) -> list[str]:
    """The command line as an operator types it: the data directory is all the CLI needs
    (the API address comes from ``DIR/run.json``, the token from ``DIR/admin.token``)."""
    return [sys.executable, "-m", "gateway", *args, "--data", gw.info.data]


def as_json(r: subprocess.CompletedProcess[str]) -> Any:
    return msgspec.json.decode(r.stdout)


def device_env(home: Path) -> dict[str, str]:
    # a private HOME: gdc must not read or write the invoking user's configuration
    return {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}


def gdc(gw: TestGateway, home: Path, *args: str, timeout: float = 60.0) -> str:
    """One ``gdc`` run to completion (exit 0 required); its stdout, stripped."""
    r = subprocess.run(
        [str(GDC), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(home),
        env=device_env(home),
        check=False,
    )
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    return r.stdout.strip()


def gdc_mqtt(gw: TestGateway, token: str | None = None) -> list[str]:
    """``gdc`` global options for MQTT over TLS on the MQTT-only port."""
    args = [str(GDC), "-H", f"mqtt://{HOST}", "-P", str(gw.ports["mqtt_tls"]), "-E", gw.ca]
    return [*args, "-k", token] if token else args


class LineReader:
    """Lines of a child's output collected by a thread; tests wait for one that matches."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stdout: Any) -> None:
        for line in stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if pred(line):
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"no matching line in {self.lines[-20:]!r}"
                self._cond.wait(left)


@contextmanager
def child(cmd: list[str], **kw: Any) -> Iterator[tuple[LineReader, LineReader]]:
    """A child process with piped stdout and stderr (readers for both) for the body;
    stopped (SIGINT, then kill) after."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        yield LineReader(proc.stdout), LineReader(proc.stderr)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def log_record(pred: Callable[[dict[str, Any]], bool]) -> Callable[[str], bool]:
    def match(line: str) -> bool:
        try:
            rec = msgspec.json.decode(line)
        except msgspec.DecodeError:
            return False
        return isinstance(rec, dict) and rec.get("event") is not None and pred(rec)

    return match


def wait_online(gw: TestGateway, identity: str, timeout: float = 10.0) -> None:
    """``device show`` until the device is online (its connect commits asynchronously)."""
    deadline = time.monotonic() + timeout
    while not as_json(gw_cli(gw, "device", "show", CID, identity, "--json"))["online"]:
        assert time.monotonic() < deadline, f"{identity} never came online"
        time.sleep(0.1)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_operator_workflow_through_the_cli(tmp_path: Path, resolve: Callable[..., None]) -> None:
    resolve(HOST)
    home = tmp_path / "device"
    home.mkdir()
    with gateway_process(tmp_path / "data") as (_proc, gw):
        # -- connector, resources ---------------------------------------------------------
        gw_cli(
            gw,
            "connector",
            "create",
            "Fleet",
            "--id",
            CID,
            "--settings",
            '{"provisioning": {"presenter_identity": false}}',
        )
        assert CID in gw_cli(gw, "connector", "list").stdout
        gw_cli(gw, "resource", "create", CID, "temp", "--format", "number")
        gw_cli(gw, "resource", "create", CID, "mode", "--settable")
        listed = as_json(gw_cli(gw, "resource", "list", CID, "--json"))
        aliases = [r["alias"] for r in listed["items"]]
        assert aliases == ["mode", "temp"]

        # -- 10,000 devices with tags from CSV, filtered by tag -------------------------------
        csv = tmp_path / "ids.csv"
        csv.write_text(
            "ID,tag:site,tag:batch\n"
            + "".join(
                f"dev{i:05},{'north' if i % 4 == 0 else 'south'},b{i % 10}\n" for i in range(10_000)
            )
        )
        t0 = time.monotonic()
        report = as_json(gw_cli(gw, "device", "import", CID, str(csv), "--json"))
        import_s = time.monotonic() - t0
        assert report["created"] == 10_000, report
        assert import_s < 30, import_s
        n = gw_cli(
            gw, "device", "list", CID, "--tag", "site:north", "--tag", "batch:b0", "--count"
        ).stdout.strip()
        assert n == "500"  # i % 4 == 0 and i % 10 == 0 -> i % 20 == 0
        bad = tmp_path / "bad.csv"
        bad.write_text("identity\nx\n")
        r = gw_cli(gw, "device", "import", CID, str(bad), check=False)
        assert r.returncode == 1
        assert r.stderr.splitlines()[-1] == (
            "error: the first line must be a header whose first column is ID (bad_request)"
        )

        # two imported devices activate with murano-client (MQTT, $provision/<identity>)
        tokens = {
            ident: gdc(gw, home, *gdc_mqtt(gw)[1:], "mqtt", "activate", "-u", ident)
            for ident in ("dev00001", "dev00042")
        }
        assert all(len(t) == 40 for t in tokens.values()), tokens

        # -- the live log, followed from here on ----------------------------------------------
        with child(cli_cmd(gw, "logs", CID, "--json", "--follow")) as (tail, tail_err):
            tail_err.wait_for(lambda line: line.startswith(f"following the live log of {CID}"))

            # -- lock: the next MQTT connect is refused with CONNACK 5 ------------------------
            gw_cli(gw, "device", "lock", CID, "dev00042")
            shown = as_json(gw_cli(gw, "device", "show", CID, "dev00042", "--json"))
            assert shown["locked"] is True
            gw_cli(gw, "device", "tag", CID, "dev00042", "owner:ops")
            assert "owner:ops" in gw_cli(gw, "device", "show", CID, "dev00042").stdout
            gw_cli(gw, "device", "untag", CID, "dev00042", "owner")
            pub = [
                "mosquitto_pub",
                *("-h", HOST, "-p", str(gw.ports["mqtt_tls"]), "--cafile", gw.ca),
                *("-q", "1", "-t", "$resource/temp", "-m", "21.5"),
            ]
            locked = subprocess.run(
                [*pub, "-i", "dev00042", "-u", "dev00042", "-P", tokens["dev00042"]],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            assert locked.returncode != 0
            assert "not authorised" in locked.stderr, locked.stderr  # CONNACK 5
            tail.wait_for(
                log_record(lambda r: r["event"] == "connect_refused" and r["reason"] == "locked")
            )
            wrong = subprocess.run(
                [*pub, "-i", "nobody", "-u", "x", "-P", "0" * 40],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            assert wrong.returncode != 0
            tail.wait_for(
                log_record(
                    lambda r: r["event"] == "connect_refused" and r["reason"] == "not_authenticated"
                )
            )
            st = gw_cli(gw, "state", "get", CID, "dev00042", "--json").stdout
            assert "21.5" not in st  # nothing was stored for the locked device

            # -- a connected murano-client device receives a value set by the operator --------
            sub_cmd = [
                *gdc_mqtt(gw, tokens["dev00001"]),
                *("mqtt", "subscribe", "--disconnect-after", "60"),
            ]
            with child(sub_cmd, cwd=str(home), env=device_env(home)) as (sub, _):
                tail.wait_for(
                    log_record(
                        lambda r: (
                            r["kind"] == "debug"
                            and r["event"] == "connect"
                            and r["identity"] == "dev00001"
                        )
                    )
                )
                wait_online(gw, "dev00001")
                state = as_json(gw_cli(gw, "state", "set", CID, "dev00001", "mode=eco", "--json"))
                assert state["mode"]["set"] == "eco"
                assert state["mode"]["pending"] is True
                got = sub.wait_for(lambda line: line.startswith("mode."))
            assert got == f"mode.{state['mode']['set_timestamp']}=eco"
            tail.wait_for(
                log_record(lambda r: r["event"] == "data_out" and r["identity"] == "dev00001")
            )
        events = gw_cli(gw, "events", CID, "--json").stdout
        assert '"data_out"' in events

        # -- 150 MB of content: the operator uploads, the device downloads --------------------
        blob = tmp_path / "fw.bin"
        with blob.open("wb") as fh:
            chunk = os.urandom(1 << 20)
            for i in range(150):
                fh.write(chunk[:-8] + i.to_bytes(8, "big"))
        digest = sha256_of(blob)
        info = as_json(gw_cli(gw, "content", "upload", CID, "fw/v2.bin", str(blob), "--json"))
        assert info["sha256"] == digest
        assert info["length"] == 150 << 20
        (home / "fw").mkdir()  # gdc writes the file under its content name, relative to cwd
        out = gdc(
            gw,
            home,
            *("-H", f"https://{HOST}:{gw.ports['tls']}/", "-E", gw.ca, "-k", tokens["dev00001"]),
            *("http", "content", "download", "fw/v2.bin"),
        )
        assert out == "[200] fw/v2.bin"
        assert sha256_of(home / "fw" / "v2.bin") == digest
        down = tmp_path / "down.bin"
        gw_cli(gw, "content", "download", CID, "fw/v2.bin", "-o", str(down))
        assert sha256_of(down) == digest
        gw_cli(gw, "content", "delete", CID, "fw/v2.bin")
        r = gw_cli(gw, "content", "show", CID, "fw/v2.bin", check=False)
        assert r.returncode == 1
        assert "not_found" in r.stderr

        r = gw_cli(gw, "connector", "show", "nosuch", check=False)
        assert r.returncode == 1
