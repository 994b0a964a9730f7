"""Debian's mosquitto-clients (``mosquitto_pub`` / ``mosquitto_sub``, libmosquitto 2.0) against
a live gateway: QoS 0/1 writes over plain dev MQTT and over TLS (MQTT port, multi-protocol port
with and without ALPN "mqtt"), pushes of set values, acknowledgement, keep-alive expiry, clean
disconnect and takeover (docs/protocol.md §3.1, §3.3, §3.4; §12 items 7-9, 24).

Every client is a real child process started with :func:`trio.run_process`; assertions read the
gateway's committed state, event log and debug log, never the clients' word alone.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Sequence

import pytest
import trio

from gateway.model import LogRecord, Protocol
from gateway.services.events import EventOut
from gateway.services.logs import LogFilter
from gateway.testing.mqtt_bytes import gen_connack, gen_connect
from gateway.testing.server import TestGateway

pytestmark = [
    pytest.mark.needs_tool,
    pytest.mark.skipif(
        shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None,
        reason="mosquitto-clients missing (apt-get install mosquitto-clients)",
    ),
]

IDENTITY = "mosq-1"
CLIENT_TIMEOUT_S = 15.0
MQTT = Protocol.MQTT.value  # "murano:v1/mqtt", the events' protocol field


@pytest.fixture
async def token(gw: TestGateway) -> str:
    """A provisioned token device of the demo connector (``IDENTITY``)."""
    tok = secrets.token_hex(20)
    await gw.services.devices.add("demo", IDENTITY, auth_type="token", key=tok)
    return tok


async def _run(args: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    """Run one client to completion (bounded), capturing its output."""
    with trio.fail_after(CLIENT_TIMEOUT_S):
        return await trio.run_process(
            list(args), capture_stdout=True, capture_stderr=True, check=False
        )


def _plain(gw: TestGateway, token: str) -> list[str]:
    """Connection options for the plain dev MQTT port (token auth, empty user name)."""
    return ["-h", "127.0.0.1", "-p", str(gw.ports["dev_mqtt"]), "-u", "", "-P", token]


def _tls(gw: TestGateway, token: str, port_key: str, alpn: str | None) -> list[str]:
    """Connection options for a TLS port: SNI and certificate check on the connector FQDN
    (the test maps the name with the ``resolve`` fixture)."""
    args = ["-h", gw.fqdn(), "-p", str(gw.ports[port_key]), "--cafile", gw.ca]
    if alpn is not None:
        args += ["--tls-alpn", alpn]
    return [*args, "-u", "", "-P", token]


async def _pub(conn: list[str], topic: str, value: str, qos: int) -> None:
    proc = await _run(["mosquitto_pub", *conn, "-q", str(qos), "-t", topic, "-m", value])
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


async def _eventually(predicate: Callable[[], Awaitable[object]], timeout_s: float = 5.0) -> None:
    """Poll ``predicate`` (committed state and device rows have no change event to await)."""
    for _ in range(int(timeout_s / 0.02)):
        if await predicate():
            return
        await trio.sleep(0.02)
    raise AssertionError(f"condition not reached within {timeout_s} s")


async def _events(gw: TestGateway, kind: str) -> list[EventOut]:
    return [e for e in await gw.services.events.read("demo", limit=1000) if e.type == kind]


def _online(gw: TestGateway, want: bool = True) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await gw.services.devices.get("demo", IDENTITY)).online is want

    return check


def _reported(gw: TestGateway, value: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await gw.services.state.get("demo", IDENTITY))["data_in"].reported == value

    return check


async def _written_values(gw: TestGateway) -> list[str]:
    """The ``data_in`` values of the device's data_in events, in commit order."""
    out: list[str] = []
    for ev in await _events(gw, "data_in"):
        assert ev.identity == IDENTITY
        assert ev.protocol == MQTT
        out.extend(p["values"]["data_in"] for p in ev.payload)
    return out


async def _check_qos0_qos1(gw: TestGateway, conn: list[str], tag: str) -> None:
    """QoS 1 returns after PUBACK (= committed); QoS 0 is stored shortly after."""
    await _pub(conn, "$resource/data_in", f"{tag}-q1", 1)
    # mosquitto_pub exits 0 only after the PUBACK, which is sent only after the commit
    assert (await gw.services.state.get("demo", IDENTITY))["data_in"].reported == f"{tag}-q1"
    await _pub(conn, "$resource/data_in", f"{tag}-q0", 0)
    await _eventually(_reported(gw, f"{tag}-q0"))
    values = await _written_values(gw)
    assert values[-2:] == [f"{tag}-q1", f"{tag}-q0"]


async def test_publish_qos0_and_qos1_plain(gw: TestGateway, token: str) -> None:
    await _check_qos0_qos1(gw, _plain(gw, token), "plain")
    # two connections, each recorded as connect + clean disconnect
    await _eventually(_online(gw, want=False))
    connects = await _events(gw, "connect")
    assert len(connects) == 2
    assert all(e.identity == IDENTITY and e.ip == "127.0.0.1" for e in connects)


@pytest.mark.parametrize(
    ("port_key", "alpn"),
    [("mqtt_tls", None), ("tls", "mqtt"), ("tls", None)],
    ids=["mqtt-port", "multi-port-alpn", "multi-port-sniffed"],
)
async def test_publish_qos0_and_qos1_tls(
    gw: TestGateway, token: str, port_key: str, alpn: str | None, resolve: Callable[..., None]
) -> None:
    """The MQTT TLS port, and the multi-protocol port chosen by ALPN "mqtt" or, without
    ALPN, by sniffing the first bytes (§12 item 7)."""
    resolve(gw.fqdn())
    await _check_qos0_qos1(gw, _tls(gw, token, port_key, alpn), port_key)


async def test_bad_token_is_refused_with_connack_4(gw: TestGateway, token: str) -> None:
    """A wrong token gets CONNACK 4 (murano-client then stops retrying; §10 item 11):
    mosquitto_pub reports it and nothing is stored."""
    proc = await _run(
        ["mosquitto_pub", *_plain(gw, "f" * 40), "-q", "1", "-t", "$resource/data_in", "-m", "x"]
    )
    assert proc.returncode != 0
    assert b"bad user name or password" in proc.stderr.lower()
    assert "data_in" not in await gw.services.state.get("demo", IDENTITY)


async def _sub_one(conn: list[str], out: list[subprocess.CompletedProcess[bytes]]) -> None:
    """``mosquitto_sub`` until one message arrives (at most 10 s), topics printed (-v)."""
    out.append(
        await _run(["mosquitto_sub", *conn, "-t", "$resource/#", "-C", "1", "-W", "10", "-v"])
    )


def _parse_push(proc: subprocess.CompletedProcess[bytes]) -> tuple[str, str, int, str]:
    """``$resource/<alias>/<µs> <value>`` → (first level, alias, µs, value)."""
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    topic, value = proc.stdout.decode().rstrip("\n").split(" ", 1)
    first, alias, ts = topic.split("/")
    return first, alias, int(ts), value


async def test_subscriber_receives_set_value_and_ack_clears_pending(
    gw: TestGateway, token: str
) -> None:
    """A value set while mosquitto_sub is connected arrives as ``$resource/data_out/<µs>``;
    publishing it back to ``$resource/data_out`` acknowledges it (§3.4)."""
    conn = _plain(gw, token)
    out: list[subprocess.CompletedProcess[bytes]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_sub_one, conn, out)
        await _eventually(_online(gw))
        await gw.services.state.set_values("demo", IDENTITY, {"data_out": "reboot now"})
    first, alias, ts, value = _parse_push(out[0])
    st = (await gw.services.state.get("demo", IDENTITY))["data_out"]
    assert (first, alias, value) == ("$resource", "data_out", "reboot now")
    assert ts == st.set_timestamp
    assert st.pending
    await _pub(conn, "$resource/data_out", "reboot now", 1)
    st = (await gw.services.state.get("demo", IDENTITY))["data_out"]
    assert not st.pending
    assert st.reported == "reboot now"


async def test_value_set_while_offline_is_pushed_on_connect(gw: TestGateway, token: str) -> None:
    """Clean Session behaves as 0: a pending value reaches the next connection (§3.1)."""
    await gw.services.state.set_values("demo", IDENTITY, {"config_io": '{"channels": {}}'})
    out: list[subprocess.CompletedProcess[bytes]] = []
    await _sub_one(_plain(gw, token), out)
    _, alias, ts, value = _parse_push(out[0])
    assert (alias, value) == ("config_io", '{"channels": {}}')
    assert ts == (await gw.services.state.get("demo", IDENTITY))["config_io"].set_timestamp


async def test_clean_disconnect_is_recorded(gw: TestGateway, token: str) -> None:
    """mosquitto_pub ends with DISCONNECT: the disconnect event says ``client_disconnect``
    and the device is offline again."""
    await _pub(_plain(gw, token), "$resource/data_in", "bye", 1)
    await _eventually(_online(gw, want=False))
    (ev,) = await _events(gw, "disconnect")
    assert (ev.identity, ev.reason, ev.protocol) == (IDENTITY, "client_disconnect", MQTT)


async def _wait_debug(
    receive: Callable[[], Awaitable[LogRecord]], event: str, reason: str | None
) -> LogRecord:
    with trio.fail_after(5):
        while True:
            rec = await receive()
            if rec.event == event and rec.reason == reason:
                return rec


async def test_second_connection_takes_over(gw: TestGateway, token: str) -> None:
    """A second connection for the same identity closes the first one; the debug log says
    ``duplicate_connection`` for the first connection, and the second one works."""
    port = gw.ports["dev_mqtt"]
    async with (
        gw.services.logs.subscribe(LogFilter("demo", kinds=["debug"])) as sub,
        await trio.open_tcp_stream("127.0.0.1", port) as first,
    ):
        await first.send_all(gen_connect("", keepalive=60, username="", password=token))
        with trio.fail_after(5):
            assert await first.receive_some(4) == gen_connack(0)
        await _eventually(_online(gw))
        old = await _wait_debug(sub.receive.receive, "connect", None)
        # the newcomer: a subscriber that gets one push, then disconnects cleanly
        out: list[subprocess.CompletedProcess[bytes]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sub_one, _plain(gw, token), out)
            kicked = await _wait_debug(sub.receive.receive, "disconnect", "duplicate_connection")
            with trio.fail_after(5):
                assert await first.receive_some(1024) == b""  # closed by the gateway
            assert (await gw.services.devices.get("demo", IDENTITY)).online
            await gw.services.state.set_values("demo", IDENTITY, {"data_out": "to-second"})
    assert kicked.connection_id == old.connection_id
    _, alias, _, value = _parse_push(out[0])
    assert (alias, value) == ("data_out", "to-second")
    await _eventually(_online(gw, want=False))
