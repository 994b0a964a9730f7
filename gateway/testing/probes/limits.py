"""The "limits" probe: the attacks of docs/reliability.md section 11, against the limits
of gateway/services/limits.py and gateway/frontdoor/limits.py, with the gateway's own
settings (the shipped defaults on a fresh gateway).

* **Silent sockets**: ``silent`` TCP connections from one address that never send a byte
  to the TLS port, then ``writes`` HTTPS writes of the canary device from another address,
  each on a new connection: their times and failures.
* **Wrong tokens**: ``wrong`` HTTPS requests (one keep-alive connection) and ``wrong_mqtt``
  MQTT/TLS CONNECTs with wrong tokens from one address: how many were looked up (``401`` /
  CONNACK 4) and how many refused by the back-off (``429`` / CONNACK 3); then the canary,
  from another address, is served.
* **Activations**: ``activations`` activations of identities nobody whitelisted, from one
  address on the plain dev port of a connector made for it: ``404`` versus ``429``.
* **Upload**: one device streams ``upload_mb`` MiB (chunked) to ``/provision/upload``: the
  bytes sent when the gateway answered, its answer, and what was stored.
"""

from __future__ import annotations

import secrets
import statistics

import h11
import httpx
import msgspec
import trio

from gateway.testing import mqtt_bytes as mb
from gateway.testing.probes import wire
from gateway.testing.probes.target import Canary, Target

__all__ = ["LimitsReport", "check_limits"]

SILENT_SOURCE = "127.0.0.2"
DEVICE_SOURCE = "127.0.0.4"
WRONG_SOURCE = "127.0.0.5"
ACTIVATION_SOURCE = "127.0.0.6"
UPLOAD_SOURCE = "127.0.0.7"
PROBE_CONNECTOR = "probelimits"
TIMEOUT_S = 30.0


class LimitsReport(msgspec.Struct):
    silent: int = 0
    device_writes: int = 0
    device_failed: int = 0
    device_p50_ms: float = 0.0
    device_max_ms: float = 0.0
    wrong_http: dict[str, int] = msgspec.field(default_factory=dict)  # status -> count
    wrong_http_per_s: float = 0.0
    wrong_mqtt: dict[str, int] = msgspec.field(default_factory=dict)  # CONNACK code -> count
    canary_after: bool = False
    activations: dict[str, int] = msgspec.field(default_factory=dict)
    upload_sent_mib: float = 0.0
    upload_answer: str = ""
    upload_stored: int = 0
    problems: list[str] = msgspec.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def _http(
    stream: trio.abc.Stream, conn: h11.Connection, method: str, target: str, host: str, **kw: str
) -> int:
    """One request on a keep-alive connection; its status (0: the connection ended)."""
    body = kw.pop("body", "").encode()
    headers = [("Host", host), ("Content-Length", str(len(body))), *kw.items()]
    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
        conn.start_next_cycle()
    data = conn.send(h11.Request(method=method, target=target, headers=headers))
    data += (conn.send(h11.Data(data=body)) or b"") if body else b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)
    status = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return status
            conn.receive_data(bytes(chunk))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status


async def _device_write(target: Target, token: str) -> float | None:
    """One HTTPS write on a new connection: seconds, or None when it failed."""
    start = trio.current_time()
    try:
        with trio.fail_after(TIMEOUT_S):
            ctx = wire.client_context(target.ca, alpn=["http/1.1"])
            stream = await wire.open_tls(
                target.host, target.ports["tls"], target.fqdn(), ctx, DEVICE_SOURCE
            )
            async with stream:
                conn = h11.Connection(h11.CLIENT)
                status = await _http(
                    stream,
                    conn,
                    "POST",
                    "/onep:v1/stack/alias",
                    target.fqdn(),
                    body="data_in=limits",
                    **{"X-Exosite-CIK": token, "Content-Type": "application/x-www-form-urlencoded"},
                )
    except (trio.TooSlowError, trio.BrokenResourceError, OSError, h11.ProtocolError):
        return None
    return trio.current_time() - start if status == 204 else None


async def _silent_sockets(target: Target, token: str, report: LimitsReport, writes: int) -> None:
    silent: list[trio.SocketStream] = []
    try:
        silent.extend(
            [
                await wire.open_plain(target.host, target.ports["tls"], local=SILENT_SOURCE)
                for _ in range(report.silent)
            ]
        )
        times = [await _device_write(target, token) for _ in range(writes)]
    finally:
        for s in silent:
            await trio.aclose_forcefully(s)
    done = [t for t in times if t is not None]
    report.device_writes = writes
    report.device_failed = writes - len(done)
    if done:
        report.device_p50_ms = round(statistics.median(done) * 1000, 1)
        report.device_max_ms = round(max(done) * 1000, 1)
    if report.device_failed:
        report.problems.append(f"{report.device_failed} of {writes} device writes failed")


async def _wrong_tokens(target: Target, report: LimitsReport, wrong: int, wrong_mqtt: int) -> None:
    ctx = wire.client_context(target.ca, alpn=["http/1.1"])
    stream = await wire.open_tls(target.host, target.ports["tls"], target.fqdn(), ctx, WRONG_SOURCE)
    start = trio.current_time()
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        for _ in range(wrong):
            status = await _http(
                stream,
                conn,
                "POST",
                "/onep:v1/stack/alias",
                target.fqdn(),
                body="data_in=1",
                **{"X-Exosite-CIK": secrets.token_hex(20)},
            )
            report.wrong_http[str(status)] = report.wrong_http.get(str(status), 0) + 1
    report.wrong_http_per_s = round(wrong / max(trio.current_time() - start, 1e-6), 1)
    mctx = wire.client_context(target.ca, alpn=["mqtt"])
    for _ in range(wrong_mqtt):
        s = await wire.open_tls(
            target.host, target.ports["mqtt_tls"], target.fqdn(), mctx, WRONG_SOURCE
        )
        async with s:
            await s.send_all(mb.gen_connect("x", username="", password=secrets.token_hex(20)))
            got = await wire.read_exactly(s, 4, timeout=TIMEOUT_S)
        code = str(got[3]) if len(got) == 4 else "closed"
        report.wrong_mqtt[code] = report.wrong_mqtt.get(code, 0) + 1
    if not report.wrong_http.get("429") or not report.wrong_mqtt.get("3"):
        report.problems.append("wrong tokens were never backed off")


async def _activations(
    target: Target, client: httpx.AsyncClient, report: LimitsReport, n: int
) -> None:
    await client.delete(f"/api/v1/connectors/{PROBE_CONNECTOR}")
    resp = await client.post(
        "/api/v1/connectors",
        json={
            "id": PROBE_CONNECTOR,
            "name": "limits probe",
            "settings": {
                "protocol": {"devmode": True},
                "provisioning": {"presenter_identity": False},
            },
        },
    )
    resp.raise_for_status()
    host = target.devmode_fqdn(PROBE_CONNECTOR)
    stream = await wire.open_plain(target.host, target.ports["dev_http"], local=ACTIVATION_SOURCE)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        for i in range(n):
            status = await _http(
                stream, conn, "POST", "/provision/activate", host, body=f"id=nobody{i}"
            )
            report.activations[str(status)] = report.activations.get(str(status), 0) + 1
    await client.delete(f"/api/v1/connectors/{PROBE_CONNECTOR}")
    if not report.activations.get("429"):
        report.problems.append("failed activations were never backed off")


async def _upload(target: Target, token: str, report: LimitsReport, mib: int) -> None:
    stream = await wire.open_plain(target.host, target.ports["dev_http"], local=UPLOAD_SOURCE)
    head = (
        f"POST /provision/upload?id=big.bin HTTP/1.1\r\nHost: {target.devmode_fqdn()}\r\n"
        f"X-Exosite-CIK: {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"u" * (1 << 20))
    sent = 0
    answer = b""
    async with stream:
        await stream.send_all(head)

        async def read() -> None:
            nonlocal answer
            answer = (await wire.read_until_closed(stream, timeout=TIMEOUT_S)).data

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            try:
                for _ in range(mib):
                    if answer:
                        break
                    await stream.send_all(chunk)
                    sent += 1
                if not answer:
                    await stream.send_all(b"0\r\n\r\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
    report.upload_sent_mib = sent
    report.upload_answer = answer.split(b"\r\n", 1)[0].decode("latin-1")
    if not report.upload_answer.startswith("HTTP/1.1 413"):
        report.problems.append(f"a {mib} MiB upload was answered {report.upload_answer!r}")


async def check_limits(
    target: Target,
    client: httpx.AsyncClient,
    *,
    silent: int = 2000,
    writes: int = 20,
    wrong: int = 2000,
    wrong_mqtt: int = 300,
    activations: int = 1000,
    upload_mb: int = 100,
) -> LimitsReport:
    """Run the attacks above with the target's own limits (see the module docstring)."""
    report = LimitsReport(silent=silent)
    canary = await Canary.create(target, client)
    await _silent_sockets(target, canary.token, report, writes)
    await _wrong_tokens(target, report, wrong, wrong_mqtt)
    try:
        await canary.check()
        report.canary_after = True
    except AssertionError as exc:
        report.problems.append(f"canary not served after the wrong tokens: {exc}")
    await _activations(target, client, report, activations)
    device = f"limits-{secrets.token_hex(4)}"
    token = secrets.token_hex(20)
    resp = await client.post(
        f"/api/v1/connectors/{target.connector}/devices",
        json={"identity": device, "auth": {"type": "token", "key": token}},
    )
    resp.raise_for_status()
    await _upload(target, token, report, upload_mb)
    items = await client.get(
        f"/api/v1/connectors/{target.connector}/content", params={"prefix": f"device2/{device}/"}
    )
    report.upload_stored = len(items.json()["items"])
    if report.upload_stored:
        report.problems.append("the refused upload was stored")
    return report
