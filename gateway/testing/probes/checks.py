"""The smaller "what holds" probes: idle-socket cuts, tokens across connectors, management
routes without a token, and the TLS policy.

Each returns a result Struct with ``ok`` and the figures docs/reliability.md reports.
"""

from __future__ import annotations

import re
import secrets
import shutil
from typing import Any

import httpx
import msgspec
import trio

from gateway.testing import mqtt_bytes as mb
from gateway.testing.probes import wire
from gateway.testing.probes.catalogue import ATTACK_SOURCE
from gateway.testing.probes.target import Target, open_debug_tail

__all__ = [
    "AuthWalk",
    "CrossConnector",
    "IdleCut",
    "TestsslResult",
    "TlsPolicy",
    "check_cross_connector",
    "check_idle_cuts",
    "check_management_auth",
    "check_tls_policy",
    "run_testssl",
]

REFUSED = "connection_refused"  # the debug event of a connection refused before a handler
CUT_SLACK_S = 2.0  # a cut may come this much after its deadline on a loaded machine
EARLY_S = 0.05  # ... and never this much before it


# -- idle sockets ----------------------------------------------------------------------------


class IdleCut(msgspec.Struct, frozen=True):
    """One silent (or trickling) client: when the gateway cut it and why."""

    name: str
    deadline_s: float
    cut_after_s: float | None  # None: still open after deadline + slack
    reason: str | None
    ok: bool


async def _silent(
    target: Target,
    name: str,
    open_stream: Any,
    deadline_s: float,
    reason: str,
    trickle: bytes = b"",
) -> tuple[str, float | None, str | None]:
    stream = await open_stream()
    start = trio.current_time()
    answer: wire.Answer | None = None
    try:
        limit = deadline_s + CUT_SLACK_S
        if trickle:
            # one byte a second: the deadline moves only on complete packets
            with trio.move_on_after(limit):
                for b in trickle:
                    try:
                        await stream.send_all(bytes((b,)))
                    except (trio.BrokenResourceError, OSError):
                        break
                    with trio.move_on_after(1.0):
                        if not await stream.receive_some(1):
                            break
        answer = await wire.read_until_closed(
            stream, timeout=max(0.0, start + limit - trio.current_time())
        )
    except (trio.BrokenResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)
    cut = trio.current_time() - start if answer is None or answer.closed else None
    return name, cut, reason


async def check_idle_cuts(
    target: Target, client: httpx.AsyncClient, *, handshake_s: float, connect_s: float
) -> list[IdleCut]:
    """Silent clients on every port: no TLS handshake (TLS ports), no CONNECT (MQTT, plain and
    after a TLS handshake), and a CONNECT trickled one byte a second.  ``handshake_s`` and
    ``connect_s`` are the gateway's ``handshake_timeout_s`` and ``connect_timeout_s``."""
    t = target
    ctx = wire.client_context(t.ca, alpn=["mqtt"])

    def tcp(port: str) -> Any:
        return lambda: wire.open_plain(t.host, t.ports[port], local=ATTACK_SOURCE)

    def tls(port: str) -> Any:
        return lambda: wire.open_tls(t.host, t.ports[port], t.fqdn(), ctx, ATTACK_SOURCE)

    plan: list[tuple[str, Any, float, str, str, bytes]] = [
        (f"no TLS handshake on {port}", tcp(port), handshake_s, "idle_timeout", REFUSED, b"")
        for port in ("tls", "mqtt_tls")
        if port in t.ports
    ]
    if "mqtt_tls" in t.ports:
        plan.append(
            (
                "no CONNECT after the TLS handshake",
                tls("mqtt_tls"),
                connect_s,
                "idle_timeout",
                "disconnect",
                b"",
            )
        )
    if "dev_mqtt" in t.ports:
        plan.append(
            (
                "no CONNECT on plain MQTT",
                tcp("dev_mqtt"),
                connect_s,
                "idle_timeout",
                "disconnect",
                b"",
            )
        )
        plan.append(
            (
                "CONNECT trickled a byte a second",
                tcp("dev_mqtt"),
                connect_s,
                "idle_timeout",
                "disconnect",
                mb.gen_connect("slow") * 4,
            )
        )
    out: list[IdleCut] = []
    async with open_debug_tail(client, t.connector, ATTACK_SOURCE) as tail:
        # all at once: each waits out its own deadline
        results: list[tuple[str, float | None, str | None]] = []

        async def one(item: tuple[str, Any, float, str, str, bytes]) -> None:
            name, opener, deadline, reason, _, trickle = item
            results.append(await _silent(t, name, opener, deadline, reason, trickle))

        async with trio.open_nursery() as nursery:
            for item in plan:
                nursery.start_soon(one, item)
        await trio.sleep(0.2)  # the last records are on their way
        records = tail.drain()
    for name, _, deadline, reason, event, _ in plan:
        cut = next(c for n, c, _ in results if n == name)
        seen = [r for r in records if r.get("event") == event and r.get("reason") == reason]
        ok = cut is not None and deadline - EARLY_S <= cut <= deadline + CUT_SLACK_S and bool(seen)
        out.append(
            IdleCut(
                name, deadline, None if cut is None else round(cut, 2), reason if seen else None, ok
            )
        )
    return out


# -- tokens of one connector on another ------------------------------------------------------


class CrossConnector(msgspec.Struct, frozen=True):
    """Each attempt: (what, expected, got, ok)."""

    attempts: list[tuple[str, str, str, bool]]
    ok: bool


async def _http_write(
    target: Target, server_name: str, host: str, token: str, *, plain: bool
) -> str:
    body = b"data_in=cross"
    if plain:
        stream: trio.abc.Stream = await wire.open_plain(
            target.host, target.ports["dev_http"], local=ATTACK_SOURCE
        )
    else:
        ctx = wire.client_context(target.ca, alpn=["http/1.1"])
        stream = await wire.open_tls(
            target.host, target.ports["tls"], server_name, ctx, ATTACK_SOURCE
        )
    async with stream:
        await stream.send_all(
            b"POST /onep:v1/stack/alias HTTP/1.1\r\nHost: %s\r\nX-Exosite-CIK: %s\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (host.encode(), token.encode(), len(body), body)
        )
        answer = await wire.read_until_closed(stream, timeout=10)
    return answer.data.split(b"\r\n", 1)[0].decode("latin-1")


async def _mqtt_connect(target: Target, server_name: str, token: str) -> str:
    ctx = wire.client_context(target.ca, alpn=["mqtt"])
    stream = await wire.open_tls(
        target.host, target.ports["mqtt_tls"], server_name, ctx, ATTACK_SOURCE
    )
    async with stream:
        await stream.send_all(mb.gen_connect("cross", username="", password=token))
        got = await wire.read_exactly(stream, 4, timeout=10)
    return f"CONNACK {got[3]}" if len(got) == 4 and got[0] == 0x20 else repr(got)


async def check_cross_connector(target: Target, client: httpx.AsyncClient) -> CrossConnector:
    """A device token of connector A presented to connector B (HTTPS by SNI, plain HTTP by
    Host, MQTT/TLS by SNI) is refused like an unknown token; B's own token works on B, and
    A's on A (so the refusals are not a broken setup)."""
    a = target.connector
    b = "probe" + secrets.token_hex(4)
    resp = await client.post(
        "/api/v1/connectors",
        json={"name": "probe B", "id": b, "settings": {"protocol": {"devmode": True}}},
    )
    resp.raise_for_status()
    tokens: dict[str, str] = {}
    try:
        for cid in (a, b):
            tokens[cid] = secrets.token_hex(20)
            await client.delete(f"/api/v1/connectors/{cid}/devices/probe-cross")
            r = await client.post(
                f"/api/v1/connectors/{cid}/devices",
                json={"identity": "probe-cross", "auth": {"type": "token", "key": tokens[cid]}},
            )
            r.raise_for_status()
        t = target
        attempts: list[tuple[str, str, str]] = [
            (
                "HTTPS write, A's token on A",
                "204",
                await _http_write(t, t.fqdn(a), t.fqdn(a), tokens[a], plain=False),
            ),
            (
                "HTTPS write, B's token on B",
                "204",
                await _http_write(t, t.fqdn(b), t.fqdn(b), tokens[b], plain=False),
            ),
            (
                "HTTPS write, A's token on B",
                "401",
                await _http_write(t, t.fqdn(b), t.fqdn(b), tokens[a], plain=False),
            ),
            (
                "HTTPS write, B's token on A",
                "401",
                await _http_write(t, t.fqdn(a), t.fqdn(a), tokens[b], plain=False),
            ),
            (
                "HTTPS write, SNI A with Host B and B's token",
                "421",
                await _http_write(t, t.fqdn(a), t.fqdn(b), tokens[b], plain=False),
            ),
            (
                "MQTT/TLS CONNECT, A's token on A",
                "CONNACK 0",
                await _mqtt_connect(t, t.fqdn(a), tokens[a]),
            ),
            (
                "MQTT/TLS CONNECT, A's token on B",
                "CONNACK 4",
                await _mqtt_connect(t, t.fqdn(b), tokens[a]),
            ),
            (
                "MQTT/TLS CONNECT, B's token on A",
                "CONNACK 4",
                await _mqtt_connect(t, t.fqdn(a), tokens[b]),
            ),
        ]
        if "dev_http" in t.ports:
            attempts.append(
                (
                    "plain HTTP write, A's token on B's devmode host",
                    "401",
                    await _http_write(t, "", t.devmode_fqdn(b), tokens[a], plain=True),
                )
            )
    finally:
        await client.delete(f"/api/v1/connectors/{b}")
        await client.delete(f"/api/v1/connectors/{a}/devices/probe-cross")
    checked = [
        (what, want, got, got == want or got.startswith(f"HTTP/1.1 {want}"))
        for what, want, got in attempts
    ]
    return CrossConnector(checked, all(ok for *_, ok in checked))


# -- management routes without a token -------------------------------------------------------


class AuthWalk(msgspec.Struct, frozen=True):
    """Every operation of the OpenAPI document, called without a token and with a wrong one."""

    operations: int
    public: list[str]
    refused: int
    failures: list[str]
    dropped: list[str]  # calls the server closed without an answer (tried again once)
    ok: bool


_PARAM = re.compile(r"{([^}]+)}")


async def check_management_auth(target: Target) -> AuthWalk:
    """Walk ``/api/v1/openapi.json``: every operation that declares a security requirement
    answers ``401`` without a token and with a wrong one, before looking at its input
    (path parameters name nothing that exists); the public ones are listed."""
    failures: list[str] = []
    dropped: list[str] = []
    public: list[str] = []
    refused = 0
    operations = 0
    async with httpx.AsyncClient(base_url=target.api, timeout=30) as anon:
        doc = (await anon.get("/api/v1/openapi.json")).json()
        for path, item in sorted(doc["paths"].items()):
            for method, op in sorted(item.items()):
                if method not in ("get", "put", "post", "patch", "delete"):
                    continue
                operations += 1
                if op.get("security") == []:
                    public.append(f"{method.upper()} {path}")
                    continue
                url = _PARAM.sub(lambda m: f"probe-{m.group(1)}", path)
                for headers in ({}, {"Authorization": "Bearer " + secrets.token_urlsafe(32)}):
                    what = f"{method.upper()} {path} {'wrong token' if headers else 'no token'}"
                    try:
                        resp = await anon.request(method.upper(), url, headers=headers, json={})
                    except httpx.TransportError as exc:
                        # seen once, in a whole-suite run on the loaded machine, not since and
                        # not explained: report it, and judge the route by a second call on a
                        # new connection (what is probed here is the 401)
                        dropped.append(f"{what}: {exc!r}")
                        resp = await anon.request(
                            method.upper(), url, headers={**headers, "Connection": "close"}, json={}
                        )
                    if resp.status_code != 401:
                        failures.append(f"{what}: {resp.status_code}")
                    else:
                        refused += 1
    return AuthWalk(operations, public, refused, failures, dropped, not failures)


# -- TLS policy ------------------------------------------------------------------------------


class TlsPolicy(msgspec.Struct, frozen=True):
    """What each TLS port accepted: protocol versions and TLS 1.2 cipher suites."""

    port: str
    versions: dict[str, bool]  # "TLSv1" ... "TLSv1.3" -> accepted
    tls12_accepted: list[str]
    tls12_refused: int
    tls13_accepted: list[str]
    problems: list[str]
    ok: bool


_AEAD = ("GCM", "CHACHA20", "CCM")
_FS = ("ECDHE", "DHE")
_VERSION_FLAGS = {
    "SSLv3": "-ssl3",
    "TLSv1": "-tls1",
    "TLSv1.1": "-tls1_1",
    "TLSv1.2": "-tls1_2",
    "TLSv1.3": "-tls1_3",
}


async def _s_client(port: int, server_name: str, ca: str, *args: str) -> tuple[bool, str]:
    """One ``openssl s_client`` handshake; (handshake completed, negotiated cipher)."""
    cmd = [
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        server_name,
        "-CAfile",
        ca,
        "-no_ticket",
        *args,
    ]
    with trio.move_on_after(20):
        proc = await trio.run_process(
            cmd, stdin=b"", capture_stdout=True, capture_stderr=True, check=False
        )
        out = proc.stdout.decode(errors="replace")
        m = re.search(r"Cipher is (\S+)", out)
        cipher = m.group(1) if m else ""
        return bool(cipher) and cipher != "(NONE)", cipher
    return False, ""


async def _openssl_ciphers(spec: str) -> list[str]:
    proc = await trio.run_process(["openssl", "ciphers", spec], capture_stdout=True, check=False)
    return [c for c in proc.stdout.decode().strip().split(":") if c]


# One TLS 1.2 suite of each class, for the quick check: AEAD with forward secrecy (must be
# accepted for RSA or ECDSA keys), and CBC, static RSA, 3DES, RC4, NULL, anonymous, export.
QUICK_TLS12 = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES256-SHA384",
    "AES128-GCM-SHA256",
    "AES256-SHA",
    "DHE-RSA-AES128-SHA",
    "DES-CBC3-SHA",
    "RC4-SHA",
    "NULL-SHA256",
    "ADH-AES128-GCM-SHA256",
    "EXP-RC4-MD5",
]


async def check_tls_policy(target: Target, *, quick: bool = False) -> list[TlsPolicy]:
    """``openssl s_client`` against every TLS port: each protocol version alone, then every
    TLS 1.2 cipher suite the local OpenSSL can offer (security level 0, so old suites are
    offered at all) one by one (``quick``: one of each class, :data:`QUICK_TLS12`), then
    each TLS 1.3 suite.  The policy holds when only TLS 1.2 and 1.3 are accepted, at least
    one suite of each, and every accepted suite is AEAD with forward secrecy."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is not installed (scripts/bootstrap --system installs it)")
    tls12 = QUICK_TLS12 if quick else await _openssl_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    tls13 = [
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
    ]
    out: list[TlsPolicy] = []
    for name in ("tls", "mqtt_tls"):
        if name not in target.ports:
            continue
        port = target.ports[name]
        sni = target.fqdn()
        versions: dict[str, bool] = {}
        for version, flag in _VERSION_FLAGS.items():
            versions[version], _ = await _s_client(
                port, sni, target.ca, flag, "-cipher", "ALL:@SECLEVEL=0"
            )
        accepted12: list[str] = []
        refused = 0
        for cipher in tls12:
            ok, _ = await _s_client(
                port, sni, target.ca, "-tls1_2", "-cipher", f"{cipher}:@SECLEVEL=0"
            )
            if ok:
                accepted12.append(cipher)
            else:
                refused += 1
        accepted13 = []
        for suite in tls13:
            ok, _ = await _s_client(port, sni, target.ca, "-tls1_3", "-ciphersuites", suite)
            if ok:
                accepted13.append(suite)
        problems = [f"{v} accepted" for v in ("SSLv3", "TLSv1", "TLSv1.1") if versions[v]]
        problems += [f"{v} refused" for v in ("TLSv1.2", "TLSv1.3") if not versions[v]]
        if not accepted12 or not accepted13:
            problems.append("no TLS 1.2 or no TLS 1.3 suite accepted")
        problems += [
            f"TLS 1.2 suite {c} is not AEAD with forward secrecy"
            for c in accepted12
            if not (any(a in c for a in _AEAD) and c.startswith(_FS))
        ]
        problems += [
            f"TLS 1.3 suite {s} is not AEAD" for s in accepted13 if not any(a in s for a in _AEAD)
        ]
        out.append(
            TlsPolicy(name, versions, accepted12, refused, accepted13, problems, not problems)
        )
    return out


class TestsslResult(msgspec.Struct, frozen=True):
    """testssl.sh on one port: its protocol and cipher findings, and those rated MEDIUM or
    worse (the policy holds when there are none)."""

    __test__ = False  # not a pytest class

    port: str
    offered: list[str]
    problems: list[str]
    ok: bool


async def run_testssl(target: Target, workdir: Any) -> list[TestsslResult]:
    """``testssl.sh`` (Debian's package) against every TLS port: protocols, standard cipher
    lists, forward secrecy and every cipher per protocol."""
    exe = shutil.which("testssl") or shutil.which("testssl.sh")
    if exe is None:
        raise RuntimeError("testssl.sh is not installed (scripts/probe installs it as root)")
    out: list[TestsslResult] = []
    for name in ("tls", "mqtt_tls"):
        if name not in target.ports:
            continue
        report = workdir / f"testssl-{name}.json"
        report.unlink(missing_ok=True)
        cmd = [
            exe,
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--ip",
            "127.0.0.1",
            "--jsonfile",
            str(report),
            "-p",
            "-s",
            "-f",
            "-E",
            f"{target.fqdn()}:{target.ports[name]}",
        ]
        await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
        findings = msgspec.json.decode(report.read_bytes()) if report.exists() else []
        offered = [
            f"{f['id']}: {f['finding']}"
            for f in findings
            if f.get("id", "").startswith(("SSLv", "TLS1")) and "offered" in f.get("finding", "")
        ]
        problems = [
            f"{f['id']} ({f['severity']}): {f['finding']}"
            for f in findings
            if f.get("severity") in ("MEDIUM", "HIGH", "CRITICAL")
        ]
        if not findings:
            problems.append("testssl.sh wrote no findings")
        out.append(TestsslResult(name, offered, problems, not problems))
    return out
