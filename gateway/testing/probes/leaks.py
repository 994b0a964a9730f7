"""The secrets scan: device tokens and integration secrets appear nowhere they should not.

1. Two integrations with secrets are added (the pump-fleet API of
   :mod:`gateway.testing.pump_api`, served over HTTPS on 127.0.0.1 by this probe): HTTP
   Basic with a password, and a token; an operation is called and health is probed, so the
   secrets travel upstream.
2. ``devices`` devices activate over HTTP (the answer carries the token) and a few over MQTT
   (``$provision/<identity>``); a sample then writes with its token over HTTP and MQTT, and
   a few present a wrong one.
3. Everything an operator or attacker could read is collected: the gateway's log file (when
   the probe started it), every live-log record of the connector during the run, the whole
   event log, ``/metrics``, the answer of every ``GET`` route of the OpenAPI document (with
   real identities and names), and every file of the data directory (the database, its WAL).
4. Every token and secret (and the Basic credential in base64) is searched for in each.

The only places a token may appear are the answers that deliver it to its device; those are
not collected.
"""

from __future__ import annotations

import base64
import re
import secrets
from pathlib import Path

import httpx
import msgspec
import trio

from gateway.testing import mqtt_bytes as mb
from gateway.testing.probes import wire
from gateway.testing.probes.target import Target
from gateway.testing.pump_api import PASSWORD, TOKEN, USERNAME, open_pump_api

__all__ = ["LeakResult", "scan_for_secrets"]

DOCS = Path(__file__).resolve().parents[3] / "tests" / "data"
_HEX40 = re.compile(rb"[0-9a-f]{40}")
SAMPLE_WRITES = 200  # devices that also write with their token over HTTP
MQTT_DEVICES = 2  # devices that provision (and write) over MQTT


class LeakResult(msgspec.Struct, frozen=True):
    devices: int
    secrets: int
    corpora: dict[str, int]  # name -> bytes scanned
    findings: list[str]
    seconds: float
    ok: bool


async def _activate_http(target: Target, identities: list[str], concurrency: int) -> dict[str, str]:
    tokens: dict[str, str] = {}
    plain = "dev_http" in target.ports
    base = (
        f"http://127.0.0.1:{target.ports['dev_http']}"
        if plain
        else f"https://{target.fqdn()}:{target.ports['tls']}"
    )
    host = target.devmode_fqdn() if plain else target.fqdn()
    todo = list(identities)

    async def worker(client: httpx.AsyncClient) -> None:
        while todo:
            ident = todo.pop()
            r = await client.post(
                "/provision/activate",
                content=f"id={ident}",
                headers={"Host": host, "Content-Type": "application/x-www-form-urlencoded"},
            )
            if r.status_code != 200:
                raise AssertionError(f"activation of {ident}: {r.status_code} {r.text}")
            tokens[ident] = r.text.strip()

    transport = (
        httpx.AsyncHTTPTransport(verify=target.ca, local_address="127.0.0.5")
        if not plain
        else httpx.AsyncHTTPTransport(local_address="127.0.0.5")
    )
    async with (
        httpx.AsyncClient(base_url=base, transport=transport, timeout=60) as client,
        trio.open_nursery() as nursery,
    ):
        for _ in range(concurrency):
            nursery.start_soon(worker, client)
    return tokens


async def _mqtt_stream(target: Target) -> trio.abc.Stream:
    if "dev_mqtt" in target.ports:
        return await wire.open_plain(target.host, target.ports["dev_mqtt"], local="127.0.0.5")
    ctx = wire.client_context(target.ca, alpn=["mqtt"])
    return await wire.open_tls(
        target.host, target.ports["mqtt_tls"], target.fqdn(), ctx, "127.0.0.5"
    )


async def _provision_mqtt(target: Target, identity: str) -> str:
    """``$provision/<identity>`` on an anonymous connection; the token from the reply."""
    async with await _mqtt_stream(target) as s:
        await s.send_all(
            mb.gen_connect(identity) + mb.gen_publish(f"$provision/{identity}", b"", qos=1, mid=1)
        )
        want = mb.gen_connack(0) + mb.gen_puback(1)
        got = await wire.read_exactly(s, len(want), timeout=10)
        if got != want:
            raise AssertionError(f"MQTT provisioning of {identity}: {got!r}")
        topic = f"$provision/{identity}".encode()
        head = await wire.read_exactly(s, 2 + 2 + len(topic), timeout=10)
        token = await wire.read_exactly(s, head[1] - 2 - len(topic), timeout=10)
        await s.send_all(mb.gen_disconnect())
    return token.decode()


async def _mqtt_write(target: Target, token: str) -> None:
    async with await _mqtt_stream(target) as s:
        await s.send_all(
            mb.gen_connect("w", username="", password=token)
            + mb.gen_publish("$resource/data_in", b"7", qos=1, mid=1)
        )
        await wire.read_exactly(s, 8, timeout=10)
        await s.send_all(mb.gen_disconnect())


async def _http_writes(target: Target, tokens: list[str]) -> None:
    plain = "dev_http" in target.ports
    base = (
        f"http://127.0.0.1:{target.ports['dev_http']}"
        if plain
        else f"https://{target.fqdn()}:{target.ports['tls']}"
    )
    host = target.devmode_fqdn() if plain else target.fqdn()
    async with httpx.AsyncClient(
        base_url=base, verify=target.ca if not plain else True, timeout=60
    ) as client:
        for tok in tokens:
            r = await client.post(
                "/onep:v1/stack/alias",
                content="data_in=leak-probe",
                headers={
                    "Host": host,
                    "X-Exosite-CIK": tok,
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            if r.status_code != 204:
                raise AssertionError(f"write with a device token: {r.status_code}")
        # a wrong token that differs from a real one in its last character only
        wrong = tokens[0][:-1] + ("0" if tokens[0][-1] != "0" else "1")
        await client.post(
            "/onep:v1/stack/alias",
            content="data_in=x",
            headers={"Host": host, "X-Exosite-CIK": wrong},
        )


async def _add_integrations(
    client: httpx.AsyncClient, cid: str, pump_host: str, ca_pem: str
) -> None:
    settings = {
        "host": pump_host,
        "ca_bundle": ca_pem,
        "health_interval_s": 0.5,
        "sync_interval_s": 0,
        "fetch_interval_s": 0,
        "backoff_s": 0.05,
    }
    basic = (DOCS / "pump-fleet-basic.yaml").read_text()
    token_doc = (DOCS / "pump-fleet-token.yaml").read_text()
    for name, doc, config in (
        ("pumps", basic, {"username": USERNAME, "password": PASSWORD}),
        ("pumptok", token_doc, {"token": TOKEN}),
    ):
        await client.delete(f"/api/v1/connectors/{cid}/integrations/{name}")
        r = await client.post(
            f"/api/v1/connectors/{cid}/integrations",
            json={"name": name, "document": doc, "config": config, "settings": settings},
        )
        if r.status_code != 201:
            raise AssertionError(f"adding integration {name}: {r.status_code} {r.text}")
        r = await client.post(
            f"/api/v1/connectors/{cid}/integrations/{name}/operations/assetState",
            json={"id": "pump-001"},
        )
        await client.post(f"/api/v1/connectors/{cid}/integrations/{name}/health")


async def _collect_api(
    client: httpx.AsyncClient, cid: str, identities: list[str]
) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    doc = (await client.get("/api/v1/openapi.json")).json()
    values = {"cid": cid, "name": "pumps", "alias": "data_in"}
    for path, item in sorted(doc["paths"].items()):
        if "get" not in item or path.endswith("/logs"):
            continue
        params = re.findall(r"{([^}]+)}", path)
        idents = identities[:25] if "identity" in params else [""]
        for ident in idents:
            url = path
            missing = False
            for p in params:
                v = ident if p == "identity" else values.get(p)
                if v is None:
                    missing = True
                    break
                url = url.replace("{" + p + "}", v)
            if missing:
                continue
            body = b""
            cursor: str | None = None
            for _ in range(1000):  # every page of a listing
                r = await client.get(url, params={"cursor": cursor} if cursor else None)
                body += r.content
                try:
                    cursor = (
                        r.json().get("next")
                        if r.headers.get("content-type", "").startswith("application/json")
                        and isinstance(r.json(), dict)
                        else None
                    )
                except ValueError:
                    cursor = None
                if not isinstance(cursor, str) or not cursor:
                    break
            out[f"GET {path}"] = out.get(f"GET {path}", b"") + body
    after = 0
    events = b""
    while True:
        r = await client.get(
            f"/api/v1/connectors/{cid}/events", params={"after": after, "limit": 1000}
        )
        page = r.json()
        events += r.content
        if not page["items"]:
            break
        after = page["next"]
    out["event log"] = events
    out["/metrics"] = (await client.get("/metrics")).content
    return out


def _files(target: Target) -> dict[str, bytes]:
    """The gateway's log file and every file of its data directory (the database, its WAL)."""
    out: dict[str, bytes] = {}
    if target.log_file:
        out["gateway log file"] = Path(target.log_file).read_bytes()
    if target.data_dir:
        for path in sorted(Path(target.data_dir).rglob("*")):
            if path.is_file():
                out[f"file {path.relative_to(target.data_dir)}"] = path.read_bytes()
    return out


async def scan_for_secrets(
    target: Target,
    client: httpx.AsyncClient,
    workdir: Path,
    *,
    devices: int = 5000,
    concurrency: int = 32,
) -> LeakResult:
    """Run the scan (see the module docstring); ``devices`` activate over HTTP, plus
    :data:`MQTT_DEVICES` over MQTT."""
    start = trio.current_time()
    cid = target.connector
    live: list[bytes] = []

    async def follow(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with client.stream(
            "GET", f"/api/v1/connectors/{cid}/logs", params={"heartbeat": "1"}, timeout=None
        ) as resp:
            async for line in resp.aiter_lines():
                if line.startswith(": stream open"):
                    task_status.started()
                live.append(line.encode())

    run_id = secrets.token_hex(3)
    async with (
        trio.open_nursery() as nursery,
        open_pump_api(workdir / "pump", auth="basic") as pump,
    ):
        await nursery.start(follow)
        await _add_integrations(client, cid, pump.host, pump.ca_pem)
        identities = [f"leak-{run_id}-{i:05d}" for i in range(devices)]
        tokens = await _activate_http(target, identities, concurrency)
        for i in range(MQTT_DEVICES):
            ident = f"leak-{run_id}-mqtt-{i}"
            tokens[ident] = await _provision_mqtt(target, ident)
            await _mqtt_write(target, tokens[ident])
        await _http_writes(target, list(tokens.values())[:SAMPLE_WRITES])
        await trio.sleep(1.5)  # a few health probes with the secrets go out meanwhile
        corpora = await _collect_api(client, cid, sorted(tokens))
        nursery.cancel_scope.cancel()
    corpora["live log"] = b"\n".join(live)
    corpora.update(await trio.to_thread.run_sync(_files, target))
    token_set = {t.encode() for t in tokens.values()}
    if len(token_set) != len(tokens) or not all(_HEX40.fullmatch(t) for t in token_set):
        raise AssertionError("activation answered something other than distinct 40-hex tokens")
    other = {
        "pump password": PASSWORD.encode(),
        "pump token": TOKEN.encode(),
        "pump Basic credential": base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()),
    }
    findings: list[str] = []
    for name, blob in corpora.items():
        found = token_set.intersection(_HEX40.findall(blob.lower()))
        if found:
            findings.append(f"{len(found)} device token(s) in {name}")
        findings += [f"{what} in {name}" for what, value in other.items() if value in blob]
    return LeakResult(
        devices=len(tokens),
        secrets=len(other),
        corpora={k: len(v) for k, v in corpora.items()},
        findings=findings,
        seconds=round(trio.current_time() - start, 1),
        ok=not findings,
    )
