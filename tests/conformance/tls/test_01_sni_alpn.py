"""SNI selects the connector, ALPN (or the first byte) selects the protocol.

Driven by the real ``openssl s_client`` (docs/protocol.md §1: SNI required; docs/architecture.md
"Default ports": ALPN ``mqtt`` → MQTT, ``h2``/``http/1.1`` → HTTP; no ALPN → first byte).
"""

from __future__ import annotations

import shutil
import ssl

import pytest
import trio

from gateway.model import Transport
from gateway.testing.tlsclient import (
    CONNACK_ACCEPTED,
    Gateway,
    client_context,
    mqtt_connect_bytes,
    open_tls_client,
)
from gateway.tls.contexts import ConnectorTLS
from gateway.tls.policy import LegacyPolicy

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")


async def s_client(gw: Gateway, port: int, *args: str, stdin: bytes = b"") -> str:
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", gw.ca_path]
    result = await trio.run_process(
        [*cmd, *args], stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
    )
    return result.stdout.decode("latin-1") + result.stderr.decode("latin-1")


async def wait_routes(gw: Gateway, count: int) -> list[str]:
    await gw.wait_until(lambda: len(gw.recorder.seen) >= count)
    return gw.recorder.routes()


@needs_openssl
async def test_alpn_mqtt_goes_to_mqtt(gateway: Gateway) -> None:
    out = await s_client(
        gateway,
        gateway.ports["tls"],
        "-servername",
        "open.m2.localhost",
        "-alpn",
        "mqtt",
        "-verify_return_error",
        stdin=mqtt_connect_bytes(),
    )
    assert "ALPN protocol: mqtt" in out
    assert "Verify return code: 0 (ok)" in out
    assert await wait_routes(gateway, 1) == ["mqtt"]
    info = gateway.recorder.seen[0][1]
    assert (info.connector_id, info.alpn, info.server_name) == ("open", "mqtt", "open.m2.localhost")
    assert info.transport is Transport.TLS
    assert info.cert is None
    assert info.peer_ip == "127.0.0.1"


@needs_openssl
@pytest.mark.parametrize("alpn", ["http/1.1", "h2"])
async def test_alpn_http_goes_to_http(gateway: Gateway, alpn: str) -> None:
    request = b"GET / HTTP/1.1\r\nHost: open.m2.localhost\r\n\r\n"
    out = await s_client(
        gateway,
        gateway.ports["tls"],
        "-servername",
        "open.m2.localhost",
        "-alpn",
        alpn,
        "-ign_eof",
        stdin=request,
    )
    assert f"ALPN protocol: {alpn}" in out
    assert f"http open {alpn}" in out  # the HTTP handler answered
    assert await wait_routes(gateway, 1) == ["http"]


@needs_openssl
async def test_alpn_preference_and_mqtt_only_port(gateway: Gateway) -> None:
    out = await s_client(
        gateway,
        gateway.ports["mqtt_tls"],
        "-servername",
        "open.m2.localhost",
        "-alpn",
        "http/1.1,mqtt",
        stdin=mqtt_connect_bytes(),
    )
    assert "ALPN protocol: mqtt" in out
    out = await s_client(
        gateway,
        gateway.ports["mqtt_tls"],
        "-servername",
        "open.m2.localhost",
        "-alpn",
        "http/1.1",
        stdin=mqtt_connect_bytes(),
    )
    assert "No ALPN negotiated" in out  # MQTT-only port: no overlap, still served as MQTT
    routes = await wait_routes(gateway, 2)
    assert routes == ["mqtt", "mqtt"]
    assert {info.transport for _, info in gateway.recorder.seen} == {Transport.MQTT_TLS}


@needs_openssl
@pytest.mark.parametrize(
    ("server_name", "reason"),
    [
        ("nobody.m2.localhost", "unknown_connector"),
        ("example.com", "unknown_connector"),
        (None, "no_sni"),
    ],
)
async def test_unknown_or_missing_sni_refused(
    gateway: Gateway, server_name: str | None, reason: str
) -> None:
    args = ["-servername", server_name] if server_name else ["-noservername"]
    out = await s_client(gateway, gateway.ports["tls"], *args, "-alpn", "mqtt")
    assert "handshake failure" in out
    assert "ALPN protocol" not in out
    await gateway.wait_until(lambda: bool(gateway.debug))
    (record,) = gateway.debug
    assert (record.kind, record.reason, record.ip) == ("debug", reason, "127.0.0.1")
    assert gateway.recorder.seen == []


@needs_openssl
async def test_version_below_the_policy_refused_into_the_connectors_log(
    gateway: Gateway,
) -> None:
    """docs/protocol.md §1 "TLS": a TLS 1.1 client of a default-policy connector fails the
    handshake like an unknown name, and the record names the connector and why."""
    out = await s_client(
        gateway,
        gateway.ports["tls"],
        "-servername",
        "open.m2.localhost",
        "-tls1_1",
        "-cipher",
        "DEFAULT:@SECLEVEL=0",
    )
    assert "alert" in out
    assert "New, (NONE), Cipher is (NONE)" in out
    await gateway.wait_until(lambda: bool(gateway.debug))
    (record,) = gateway.debug
    assert (record.reason, record.connector_id) == ("tls_version", "open")
    assert gateway.recorder.seen == []
    # the same client once the connector is on the legacy policy: served
    gateway.directory.put(ConnectorTLS("open", None, None, None, False, LegacyPolicy()))
    out = await s_client(
        gateway,
        gateway.ports["tls"],
        "-servername",
        "open.m2.localhost",
        "-tls1_1",
        "-cipher",
        "DEFAULT:@SECLEVEL=0",
        stdin=mqtt_connect_bytes(),
    )
    assert "Protocol  : TLSv1.1" in out
    assert await wait_routes(gateway, 1) == ["mqtt"]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_no_alpn_first_byte_sniffing(gateway: Gateway, version: ssl.TLSVersion) -> None:
    ctx = client_context(gateway.ca_path, max_version=version)
    mqtt = await open_tls_client(gateway.ports["tls"], "open.m2.localhost", ctx)
    assert mqtt.version() == version.name.replace("v1_", "v1.")
    await mqtt.send_all(mqtt_connect_bytes())
    assert await mqtt.receive_some(4) == CONNACK_ACCEPTED
    await mqtt.send_all(b"\xc0\x00")  # PINGREQ echoed by the stand-in
    assert await mqtt.receive_some(2) == b"\xc0\x00"
    await mqtt.aclose()
    http = await open_tls_client(gateway.ports["tls"], "open.m2.localhost", ctx)
    await http.send_all(b"GET / HTTP/1.1\r\nHost: open.m2.localhost\r\n\r\n")
    response = b""
    while chunk := await http.receive_some():
        response += chunk
    await http.aclose()
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert response.endswith(b"http open None\n")
    assert gateway.recorder.routes() == ["mqtt", "http"]


async def test_garbage_first_byte_refused(gateway: Gateway) -> None:
    ctx = client_context(gateway.ca_path)
    stream = await open_tls_client(gateway.ports["tls"], "open.m2.localhost", ctx)
    await stream.send_all(b"\x00\x01\x02")
    with trio.fail_after(5):
        assert await stream.receive_some() == b""
    await stream.aclose()
    assert gateway.reasons() == ["bad_protocol"]
    assert gateway.recorder.seen == []


async def test_connector_own_certificate_and_runtime_replacement(gateway: Gateway) -> None:
    """A connector may bring its own server certificate; replacing it takes effect on the
    next handshake while the established connection keeps working."""
    from gateway.tls.pki import fingerprint, issue_server_cert

    own_ca = gateway.pki.new_ca("own-server-ca")
    chain1, key1 = issue_server_cert(*own_ca, ["own.m2.localhost"])
    gateway.directory.put(ConnectorTLS("own", None, chain1, key1, False))
    ctx = client_context(str(gateway.pki.root / "own-server-ca.pem"), alpn=["mqtt"])
    first = await open_tls_client(gateway.ports["tls"], "own.m2.localhost", ctx)
    der1 = first.getpeercert(binary_form=True)
    assert der1 is not None
    assert fingerprint(der1) == fingerprint(chain1)
    chain2, key2 = issue_server_cert(*own_ca, ["own.m2.localhost"])
    gateway.directory.put(ConnectorTLS("own", None, chain2, key2, False))
    second = await open_tls_client(gateway.ports["tls"], "own.m2.localhost", ctx)
    der2 = second.getpeercert(binary_form=True)
    assert der2 is not None
    assert fingerprint(der2) == fingerprint(chain2)
    for stream in (first, second):  # both alive
        await stream.send_all(mqtt_connect_bytes())
        assert await stream.receive_some(4) == CONNACK_ACCEPTED
        await stream.aclose()
    # the gateway's dev CA does not vouch for the connector's own certificate
    with pytest.raises(trio.BrokenResourceError):
        await open_tls_client(
            gateway.ports["tls"], "own.m2.localhost", client_context(gateway.ca_path)
        )
