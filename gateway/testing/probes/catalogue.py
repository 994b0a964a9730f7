"""Run the MQTT and HTTP catalogues against a gateway, one case at a time.

For every case: open a connection from the case's own source address (plain or TLS), send
the bytes while reading whatever comes back until the gateway closes, then check

1. the answer (the refusing CONNACK or nothing for MQTT; the status line for HTTP);
2. that the gateway closed the connection (within :data:`CLOSE_TIMEOUT_S`);
3. the reason of the connection's debug record in the live log (MQTT: ``disconnect``;
   HTTP: ``http_refused`` when the case names a reason);
4. that the process is up and the canary device is served (MQTT and HTTP).

Each case connects from its own 127.x.y.z address and follows the live log filtered on
it, so a record that arrives late can never be taken for another case's.
"""

from __future__ import annotations

import secrets
import ssl

import httpx
import msgspec
import trio

from gateway.testing import mqtt_bytes as mb
from gateway.testing.probes import wire
from gateway.testing.probes.http_cases import HttpCase, fill
from gateway.testing.probes.mqtt_cases import PEER_CLOSED, MqttCase
from gateway.testing.probes.target import Canary, DebugTail, Target, open_debug_tail

__all__ = [
    "ATTACK_SOURCE",
    "CaseResult",
    "case_source",
    "probe_device",
    "run_http_case",
    "run_http_catalogue",
    "run_mqtt_case",
    "run_mqtt_catalogue",
]

ATTACK_SOURCE = "127.0.0.2"  # the address of the probes that need only one


def case_source(kind: int, transport: str, index: int) -> str:
    """The source address of case ``index`` (``kind`` 1: MQTT, 2: HTTP): 127.kind.t.i+1."""
    return f"127.{kind}.{0 if transport == 'plain' else 1}.{index % 250 + 1}"


CLOSE_TIMEOUT_S = 10.0  # the gateway must close a refused connection well before this
RECORD_TIMEOUT_S = 5.0  # the debug record of a closed connection arrives at once
_SSL_CLOSED = "ssl_closed"


class CaseResult(msgspec.Struct, frozen=True):
    """One case on one transport: ``ok`` when every check held; ``problems`` says which
    did not."""

    name: str
    transport: str
    ok: bool
    answer: str
    reason: str | None
    close_s: float
    problems: list[str]


def _tls_context(target: Target, alpn: str) -> ssl.SSLContext:
    return wire.client_context(target.ca, alpn=[alpn])


async def _open(
    target: Target, transport: str, plain_port: str, tls_port: str, alpn: str, source: str
) -> trio.abc.Stream:
    if transport == "plain":
        return await wire.open_plain(target.host, target.ports[plain_port], local=source)
    return await wire.open_tls(
        target.host, target.ports[tls_port], target.fqdn(), _tls_context(target, alpn), source
    )


async def _send_and_read(
    stream: trio.abc.Stream, data: bytes, end: str, timeout: float
) -> wire.Answer:
    """Send ``data`` while reading the answer (the gateway may answer and close before a
    big request is sent whole); end our side first for ``end == "eof"``."""
    result: list[wire.Answer] = []

    async def send() -> None:
        try:
            if data:
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        if end == "eof":
            reader = await _end_our_side(stream)
            try:
                result.append(await wire.read_until_closed(reader, timeout=timeout))
            finally:
                if reader is not stream:  # TLS unwrapped: the TCP stream is ours to close
                    await trio.aclose_forcefully(reader)
            nursery.cancel_scope.cancel()

    async def read() -> None:
        if end == "eof":
            return
        result.append(await wire.read_until_closed(stream, timeout=timeout))
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(read)
    return result[0] if result else wire.Answer(b"", True, 0.0, "send failed")


async def _end_our_side(stream: trio.abc.Stream) -> trio.abc.Stream:
    """Half-close (plain) or send close_notify (TLS); returns the stream to read from."""
    if isinstance(stream, trio.SSLStream):
        try:
            transport, _ = await stream.unwrap()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return stream
        return transport
    assert isinstance(stream, trio.SocketStream)
    await stream.send_eof()
    return stream


async def _checks_after(
    target: Target, canary: Canary, problems: list[str], protocols: tuple[str, ...]
) -> None:
    if not target.alive():
        problems.append("the gateway process is gone")
        return
    try:
        await canary.check(protocols)
    except (AssertionError, OSError, trio.BrokenResourceError) as exc:
        problems.append(f"canary not served: {exc}")


# -- MQTT ------------------------------------------------------------------------------------


async def run_mqtt_case(
    target: Target,
    client: httpx.AsyncClient,
    canary: Canary,
    case: MqttCase,
    transport: str,
    *,
    source: str = ATTACK_SOURCE,
    close_timeout: float = CLOSE_TIMEOUT_S,
    canary_protocols: tuple[str, ...] = ("mqtt", "http"),
) -> CaseResult:
    """One case (see the module docstring); the canary is checked over ``canary_protocols``."""
    async with open_debug_tail(client, target.connector, source) as tail:
        result = await _mqtt_case(target, tail, canary, case, transport, source, close_timeout)
    problems = list(result.problems)
    await _checks_after(target, canary, problems, canary_protocols)
    return msgspec.structs.replace(result, ok=not problems, problems=problems)


async def _mqtt_case(
    target: Target,
    tail: DebugTail,
    canary: Canary,
    case: MqttCase,
    transport: str,
    source: str,
    close_timeout: float,
) -> CaseResult:
    problems: list[str] = []
    stream = await _open(target, transport, "dev_mqtt", "mqtt_tls", "mqtt", source)
    try:
        if case.stage == "anonymous":
            await stream.send_all(mb.gen_connect("probe"))
            got = await wire.read_exactly(stream, 4, timeout=close_timeout)
            if got != mb.gen_connack(0):
                problems.append(f"anonymous CONNECT answered {got!r}")
        answer = await _send_and_read(stream, case.data, case.end, close_timeout)
    except (trio.BrokenResourceError, OSError) as exc:
        answer = wire.Answer(b"", True, 0.0, repr(exc))
    finally:
        await trio.aclose_forcefully(stream)
    if answer.data != case.reply:
        problems.append(f"answered {answer.data[:64]!r}, expected {case.reply!r}")
    if not answer.closed:
        problems.append(f"not closed within {close_timeout} s")
    want = case.reason
    if transport == "tls" and want == PEER_CLOSED:
        want = _SSL_CLOSED
    rec = await tail.wait_for(("disconnect",), timeout=RECORD_TIMEOUT_S)
    got_reason = None if rec is None else rec.get("reason")
    if got_reason != want:
        problems.append(f"debug reason {got_reason!r}, expected {want!r}")
    return CaseResult(
        case.name,
        f"mqtt-{transport}",
        not problems,
        answer.data[:16].hex(),
        got_reason,
        answer.elapsed,
        problems,
    )


async def run_mqtt_catalogue(
    target: Target,
    client: httpx.AsyncClient,
    canary: Canary,
    cases: list[MqttCase],
    *,
    transports: tuple[str, ...] = ("plain", "tls"),
) -> list[CaseResult]:
    out: list[CaseResult] = []
    for transport in transports:
        for i, case in enumerate(cases):
            source = case_source(1, transport, i)
            out.append(await run_mqtt_case(target, client, canary, case, transport, source=source))
    return out


# -- HTTP ------------------------------------------------------------------------------------


def _status(data: bytes) -> int | None:
    """The status code of the first answer, or None if nothing (or no HTTP) came back."""
    line = data.split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit():
        return int(parts[1])
    return None


async def run_http_case(
    target: Target,
    client: httpx.AsyncClient,
    canary: Canary,
    case: HttpCase,
    transport: str,
    *,
    token: str,
    source: str = ATTACK_SOURCE,
    close_timeout: float = CLOSE_TIMEOUT_S,
    canary_protocols: tuple[str, ...] = ("mqtt", "http"),
) -> CaseResult:
    """One case (see the module docstring); the canary is checked over ``canary_protocols``."""
    async with open_debug_tail(client, target.connector, source) as tail:
        result = await _http_case(
            target, tail, canary, case, transport, token, source, close_timeout
        )
    problems = list(result.problems)
    await _checks_after(target, canary, problems, canary_protocols)
    return msgspec.structs.replace(result, ok=not problems, problems=problems)


async def _http_case(
    target: Target,
    tail: DebugTail,
    canary: Canary,
    case: HttpCase,
    transport: str,
    token: str,
    source: str,
    close_timeout: float,
) -> CaseResult:
    problems: list[str] = []
    host = target.devmode_fqdn() if transport == "plain" else target.fqdn()
    data = fill(case.data, host=host, token=token)
    stream = await _open(target, transport, "dev_http", "tls", "http/1.1", source)
    try:
        answer = await _send_and_read(stream, data, case.end, close_timeout)
    except (trio.BrokenResourceError, OSError) as exc:
        answer = wire.Answer(b"", True, 0.0, repr(exc))
    finally:
        await trio.aclose_forcefully(stream)
    status = _status(answer.data)
    if status not in case.statuses:
        problems.append(f"answered {answer.data[:80]!r}, expected status {case.statuses}")
    if case.closes and not answer.closed:
        problems.append(f"not closed within {close_timeout} s")
    got_reason = None
    if case.reason is not None:
        rec = await tail.wait_for(("http_refused",), timeout=RECORD_TIMEOUT_S)
        got_reason = None if rec is None else rec.get("reason")
        if got_reason != case.reason:
            problems.append(f"debug reason {got_reason!r}, expected {case.reason!r}")
    return CaseResult(
        case.name,
        f"http-{transport}",
        not problems,
        answer.data.split(b"\r\n", 1)[0][:60].decode("latin-1"),
        got_reason,
        answer.elapsed,
        problems,
    )


async def probe_device(client: httpx.AsyncClient, target: Target) -> str:
    """A token device for the cases that must get past authentication; its token."""
    token = secrets.token_hex(20)
    identity = "probe-victim"
    cid = target.connector
    await client.delete(f"/api/v1/connectors/{cid}/devices/{identity}")
    resp = await client.post(
        f"/api/v1/connectors/{cid}/devices",
        json={"identity": identity, "auth": {"type": "token", "key": token}},
    )
    resp.raise_for_status()
    return token


async def run_http_catalogue(
    target: Target,
    client: httpx.AsyncClient,
    canary: Canary,
    cases: list[HttpCase],
    *,
    transports: tuple[str, ...] = ("plain", "tls"),
) -> list[CaseResult]:
    token = await probe_device(client, target)
    out: list[CaseResult] = []
    for transport in transports:
        for i, case in enumerate(cases):
            source = case_source(2, transport, i)
            result = await run_http_case(
                target, client, canary, case, transport, token=token, source=source
            )
            out.append(result)
    return out
