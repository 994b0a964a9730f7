"""Exosite's murano-client 21.12.22 (``gdc mqtt …`` and the ``MuranoClient`` library),
unchanged, against the gateway's TLS ports: activation, writes, ``$resource.batch`` with µs
timestamps, pushes of set values and their acknowledgement (docs/protocol.md §3, §10, §13).

The client runs from its own virtualenv (``.venv-murano``, paho-mqtt 1.x) as a child process:
``scripts/bootstrap --system`` creates it.  It is pointed at ``mqtt://demo.m2.localhost`` with the
gateway's development CA (``--cacert``), so TLS, SNI and the certificate check are all real.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from gateway.testing.server import TestGateway

VENV = Path(__file__).resolve().parents[2] / ".venv-murano" / "bin"
HOST = "demo.m2.localhost"
TOKEN_RE = re.compile(r"[0-9a-f]{40}")
RUN_TIMEOUT_S = 20.0

pytestmark = [
    pytest.mark.needs_tool,
    pytest.mark.skipif(
        not (VENV / "gdc").exists(), reason="murano-client missing: run scripts/bootstrap --system"
    ),
]

PORTS = pytest.mark.parametrize("port_key", ["mqtt_tls", "tls"], ids=["mqtt-port", "multi-port"])


@pytest.fixture(autouse=True)
def _resolvable(gw: TestGateway, resolve: Callable[..., None]) -> None:
    """gdc connects by host name (SNI and the certificate check need it)."""
    assert gw.fqdn() == HOST
    resolve(HOST)


def _env(tmp_path: Path) -> dict[str, str]:
    # a private HOME: gdc must not read or write the invoking user's configuration
    return {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}


def _gdc_args(gw: TestGateway, port_key: str, *args: str, token: str | None = None) -> list[str]:
    cmd = [str(VENV / "gdc"), "-H", f"mqtt://{HOST}", "-P", str(gw.ports[port_key]), "-E", gw.ca]
    if token is not None:
        cmd += ["-k", token]
    return [*cmd, "mqtt", *args]


async def _gdc(
    gw: TestGateway, tmp_path: Path, port_key: str, *args: str, token: str | None = None
) -> str:
    """Run one ``gdc mqtt`` command to completion; its stdout, stripped.  Exit status 0 is
    required (``publish`` exits 0 only once its QoS 1 PUBACK arrived)."""
    with trio.fail_after(RUN_TIMEOUT_S):
        proc = await trio.run_process(
            _gdc_args(gw, port_key, *args, token=token),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=str(tmp_path),
            env=_env(tmp_path),
        )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return proc.stdout.decode().strip()


class _Lines:
    """Line-wise reading of a child's stdout with a timeout per line."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buf = b""

    async def next(self, timeout_s: float = 10.0) -> str:
        with trio.fail_after(timeout_s):
            while b"\n" not in self.buf:
                chunk = await self.stream.receive_some(4096)
                if not chunk:
                    raise AssertionError(f"EOF after {self.buf!r}")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


@asynccontextmanager
async def _child(
    args: Sequence[str], tmp_path: Path, *, stdin: bool = False
) -> AsyncIterator[trio.Process]:
    """A child with piped stdout (and stdin if asked) for the body of the ``async with``;
    the exit waits (bounded) for it to end, and a failing body kills it."""
    async with trio.open_nursery() as nursery:
        run = partial(
            trio.run_process,
            list(args),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            check=False,
            cwd=str(tmp_path),
            env=_env(tmp_path),
        )
        proc: trio.Process = await nursery.start(run)
        yield proc
        with trio.fail_after(10):
            await proc.wait()


async def _online(gw: TestGateway, identity: str, want: bool = True) -> None:
    for _ in range(500):
        if (await gw.services.devices.get("demo", identity)).online is want:
            return
        await trio.sleep(0.02)
    raise AssertionError(f"{identity} online is not {want}")


@PORTS
async def test_gdc_activate_publish_batch_subscribe_ack(
    gw: TestGateway, tmp_path: Path, port_key: str
) -> None:
    identity = f"gdc-{port_key}"
    state = gw.services.state

    # activate: anonymous CONNECT, $provision/<id> QoS 1, the token is the first message
    token = await _gdc(gw, tmp_path, port_key, "activate", "-u", identity)
    assert TOKEN_RE.fullmatch(token), token
    assert (await gw.services.devices.get("demo", identity)).status == "provisioned"
    assert (await gw.services.devices.authenticate_token("demo", token)).identity == identity

    # a batch of points with µs timestamps: every point is stored, the newest is the state
    base = int(time.time() * 1e6) - 3_000_000
    stamps = [base, base + 1_000_000, base + 2_000_000]
    batch = [
        {"timestamp": ts, "values": {"data_in": f'{{"001": {i}}}'}} for i, ts in enumerate(stamps)
    ]
    await _gdc(gw, tmp_path, port_key, "publish", "$resource.batch", json.dumps(batch), token=token)
    st = (await state.get("demo", identity))["data_in"]
    assert (st.reported, st.reported_timestamp) == ('{"001": 2}', stamps[-1])
    events = [e for e in await gw.services.events.read("demo", limit=1000) if e.type == "data_in"]
    assert events[-1].payload == batch
    conn = sqlite3.connect(Path(gw.info.data) / "gateway.db")  # the replay-check rows
    points = conn.execute(
        "SELECT ts FROM points JOIN devices ON devices.id = points.device_id "
        "WHERE devices.identity = ? AND alias = 'data_in' ORDER BY ts",
        (identity,),
    ).fetchall()
    conn.close()
    assert [ts for (ts,) in points] == stamps

    # a plain write: stamped by the gateway, newer than the batch
    await _gdc(gw, tmp_path, port_key, "publish", "$resource/data_in", '{"001": 9.45}', token=token)
    st = (await state.get("demo", identity))["data_in"]
    assert st.reported == '{"001": 9.45}'
    assert st.reported_timestamp is not None
    assert st.reported_timestamp > stamps[-1]

    # subscribe: a value set while it runs arrives as <alias>.<µs>=<value>
    args = _gdc_args(gw, port_key, "subscribe", "--disconnect-after", "15", token=token)
    async with _child(args, tmp_path) as sub:
        assert sub.stdout is not None
        await _online(gw, identity)
        new = await state.set_values("demo", identity, {"data_out": "reboot"})
        line = await _Lines(sub.stdout).next()
        sub.send_signal(signal.SIGINT)  # gdc subscribe ends cleanly on KeyboardInterrupt
    assert line == f"data_out.{new['data_out'].set_timestamp}=reboot"
    assert (await state.get("demo", identity))["data_out"].pending

    # the acknowledgement: the value published back to $resource/<alias>
    await _gdc(gw, tmp_path, port_key, "publish", "$resource/data_out", "reboot", token=token)
    st = (await state.get("demo", identity))["data_out"]
    assert not st.pending
    assert st.reported == "reboot"


async def test_gdc_pending_value_is_delivered_at_connect(gw: TestGateway, tmp_path: Path) -> None:
    """A config set while the device was offline reaches ``gdc mqtt subscribe`` on connect,
    without any SUBSCRIBE (§13 item 13)."""
    token = await _gdc(gw, tmp_path, "mqtt_tls", "activate", "-u", "gdc-offline")
    await gw.services.state.set_values("demo", "gdc-offline", {"config_io": '{"channels": {}}'})
    args = _gdc_args(gw, "mqtt_tls", "subscribe", "--disconnect-after", "15", token=token)
    async with _child(args, tmp_path) as sub:
        assert sub.stdout is not None
        line = await _Lines(sub.stdout).next()
        sub.send_signal(signal.SIGINT)
    ts = (await gw.services.state.get("demo", "gdc-offline"))["config_io"].set_timestamp
    assert line == f'config_io.{ts}={{"channels": {{}}}}'


LIBRARY_CLIENT = textwrap.dedent("""
    import json, sys, time
    from murano_client.client import MuranoClient

    host, port, ca, identity = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

    def say(**kw):
        print(json.dumps(kw), flush=True)

    client = MuranoClient(
        memory_queue=False,
        murano_host=host,
        murano_port=port,
        murano_cacert=ca,
        murano_id=identity,
        watchlist=["config_io", "data_out"],
    )
    client.client_activate()                      # $provision/<identity>, token kept in memory
    say(token=client.murano_token())
    client.start_client()                         # reconnect with the token, start watching
    say(connected=client.is_connected())
    msg = client.watch(timeout=20)                # ExoEdge: watch, apply, ack
    ok, _ = client.ack(msg.resource, msg.payload)
    say(resource=msg.resource, timestamp=msg.timestamp, payload=msg.payload, ack=ok)
    ok, _ = client.tell(resource="data_in", timestamp=time.time(), payload='{"001": 7}')
    say(tell=ok)
    sys.stdin.readline()                          # until the test has looked at the state
    client.stop_all()
""")


@PORTS
async def test_murano_client_library_watch_ack_tell(
    gw: TestGateway, tmp_path: Path, port_key: str
) -> None:
    """``MuranoClient`` over MQTT as ExoEdge drives it: activate, watch, ack, tell (which
    sends ``$resource.batch`` with a µs timestamp)."""
    identity = f"lib-{port_key}"
    script = tmp_path / "client.py"
    script.write_text(LIBRARY_CLIENT)
    args: Sequence[str] = [
        str(VENV / "python"),
        str(script),
        f"mqtt://{HOST}",
        str(gw.ports[port_key]),
        gw.ca,
        identity,
    ]
    async with _child(args, tmp_path, stdin=True) as proc:
        assert proc.stdout is not None
        assert proc.stdin is not None
        lines = _Lines(proc.stdout)
        token = json.loads(await lines.next())["token"]
        assert TOKEN_RE.fullmatch(token), token
        assert json.loads(await lines.next()) == {"connected": True}
        await _online(gw, identity)
        config = '{"channels": {"001": {"protocol_config": {"sample_rate": 1000}}}}'
        new = await gw.services.state.set_values("demo", identity, {"config_io": config})
        got = json.loads(await lines.next())
        assert got == {
            "resource": "config_io",
            "timestamp": str(new["config_io"].set_timestamp),
            "payload": config,
            "ack": True,
        }
        st = (await gw.services.state.get("demo", identity))["config_io"]
        assert not st.pending  # ack() returned after its PUBACK, i.e. after the commit
        assert st.reported == config
        assert json.loads(await lines.next()) == {"tell": True}
        data_in = (await gw.services.state.get("demo", identity))["data_in"]
        assert data_in.reported == '{"001": 7}'
        assert data_in.reported_timestamp is not None
        assert abs(data_in.reported_timestamp - time.time() * 1e6) < 30e6
        await proc.stdin.send_all(b"stop\n")
        with trio.fail_after(10):
            assert await proc.wait() == 0
    await _online(gw, identity, want=False)
