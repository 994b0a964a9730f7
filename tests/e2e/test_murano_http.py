"""Exosite's murano-client (``gdc http …`` and the ``MuranoClient`` watch/ack loop),
unchanged, against the gateway over TLS (docs/protocol.md §2, §10, §13).

murano-client lives in ``.venv-murano`` (``scripts/bootstrap --system``); it is run as a
child process from the test's Trio run while the gateway runs in this process.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from gateway.store.api import EventMeta
from gateway.testing.server import TestGateway

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-murano" / "bin"
HOST = "demo.m2.localhost"

pytestmark = [
    pytest.mark.needs_tool,
    pytest.mark.skipif(
        not (VENV / "gdc").exists(), reason="murano-client missing: run scripts/bootstrap --system"
    ),
]


@pytest.fixture(autouse=True)
def _host_name(resolve: Callable[..., None]) -> None:
    resolve(HOST)


def _url(gw: TestGateway) -> str:
    return f"https://{HOST}:{gw.ports['tls']}/"


async def gdc(
    gw: TestGateway, tmp: Path, *args: str, token: str | None = None, uuid: str | None = None
) -> str:
    cmd = [str(VENV / "gdc"), "-H", _url(gw), "-E", gw.ca]
    if token:
        cmd += ["-k", token]
    if uuid:
        cmd += ["-u", uuid]
    result = await trio.run_process(
        [*cmd, "http", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=str(tmp),
        env={"HOME": str(tmp), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return result.stdout.decode().strip()


async def test_gdc_http_commands(gw: TestGateway, tmp_path: Path) -> None:
    now = await gdc(gw, tmp_path, "timestamp")
    assert abs(int(now) - time.time()) < 5

    token = await gdc(gw, tmp_path, "activate", uuid="gdc-dev-1")
    assert len(token) == 40
    assert (await gw.services.devices.get("demo", "gdc-dev-1")).status == "provisioned"
    assert (await gdc(gw, tmp_path, "activate", uuid="gdc-dev-1")).startswith("[409]")

    out = await gdc(gw, tmp_path, "write", "data_in", '{"001": 9.45, "002": 150}', token=token)
    assert out.startswith("[204]")
    assert (await gw.services.state.get("demo", "gdc-dev-1"))[
        "data_in"
    ].reported == '{"001": 9.45, "002": 150}'
    out = await gdc(gw, tmp_path, "read", "data_in", token=token)
    assert out == '[200] data_in={"001": 9.45, "002": 150}'
    assert await gdc(gw, tmp_path, "read", "config_io", token=token) == "[204] No Content"

    out = await gdc(gw, tmp_path, "poll", "config_io", "500", "0", token=token)
    assert out.startswith("[304]")

    async def set_later() -> None:
        await gw.long_poll_waiting("gdc-dev-1", "demo")
        await gw.services.state.set_values("demo", "gdc-dev-1", {"config_io": '{"x": 1}'})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(set_later)
        out = await gdc(gw, tmp_path, "poll", "config_io", "20000", "0", token=token)
    assert out == '[200] config_io={"x": 1}'

    ts = int(time.time()) - 30
    out = await gdc(gw, tmp_path, "record", str(ts), "data_in", '{"001": 1}', token=token)
    assert out.startswith("[204]")
    # the point is older than the write above, so state keeps the write; the event has it
    events = [e for e in await gw.services.events.read("demo", limit=1000) if e.type == "data_in"]
    assert any(p["timestamp"] == ts * 1_000_000 for e in events for p in e.payload)

    async def blob() -> AsyncIterator[bytes]:
        yield b"firmware-bytes"

    await gw.services.content.put("demo", "fw.bin", blob(), description="Firmware")
    assert await gdc(gw, tmp_path, "content", "list", token=token) == "fw.bin"
    info = await gdc(gw, tmp_path, "content", "info", "fw.bin", token=token)
    assert info.startswith("[200] application/octet-stream,14,")
    assert info.endswith(",Firmware")
    out = await gdc(gw, tmp_path, "content", "download", "fw.bin", token=token)
    assert out == "[200] fw.bin"
    assert (tmp_path / "fw.bin").read_bytes() == b"firmware-bytes"

    assert (await gdc(gw, tmp_path, "write", "data_in", "x", token="0" * 40)).startswith("[401]")


WATCHER = textwrap.dedent("""
    import json, sys
    from murano_client.client import MuranoClient
    url, ca, token = sys.argv[1:4]
    client = MuranoClient(murano_host=url, murano_token=token, murano_cacert=ca,
                          watchlist=["config_io", "data_out"], http_timeout=5)
    client.start_client()
    msg = client.watch(timeout=30)
    assert msg is not None, "nothing received"
    ok, resp = client.ack(msg.resource, msg.payload)
    print(json.dumps({"resource": msg.resource, "payload": msg.payload, "ack": ok}))
    sys.stdout.flush()
    client.stop_all()
""")


async def test_murano_client_watch_and_ack(gw: TestGateway, tmp_path: Path) -> None:
    """The ExoEdge path: long-poll over HTTPS receives a value set from the management
    side; the raw (un-encoded) ack clears the pending state."""
    await gw.services.devices.add("demo", "watcher-1")
    token = await gw.services.devices.activate("demo", "watcher-1", ip=None, meta=EventMeta())
    assert token is not None
    script = tmp_path / "watch.py"
    script.write_text(WATCHER)

    async def set_later() -> None:
        await gw.long_poll_waiting("watcher-1", "demo", timeout_s=30)
        await gw.services.state.set_values(
            "demo", "watcher-1", {"config_io": '{"channels": {"001": {"a": 1}}}'}
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(set_later)
        with trio.fail_after(40):
            result = await trio.run_process(
                [str(VENV / "python"), str(script), _url(gw), gw.ca, token],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=str(tmp_path),
                env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
            )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    line = result.stdout.decode().strip().splitlines()[-1]
    got = json.loads(line)
    assert got == {
        "resource": "config_io",
        "payload": '{"channels": {"001": {"a": 1}}}',
        "ack": True,
    }
    st = (await gw.services.state.get("demo", "watcher-1"))["config_io"]
    assert not st.pending
    assert st.reported == '{"channels": {"001": {"a": 1}}}'
