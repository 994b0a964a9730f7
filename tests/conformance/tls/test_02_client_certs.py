"""Client certificates: requested on every handshake, judged after it (docs/protocol.md §5.2, §5.3:
identity = subject CN; with a connector CA the chain must verify, without one the
certificate is pinned by fingerprint).  Driven by ``openssl s_client`` and stdlib ssl."""

from __future__ import annotations

import shutil

import pytest
import trio

from gateway.testing.tlsclient import (
    CONNACK_ACCEPTED,
    Gateway,
    client_context,
    mqtt_connect_bytes,
    open_tls_client,
)
from gateway.tls.contexts import ConnectorTLS
from gateway.tls.pki import fingerprint

from .test_01_sni_alpn import s_client, wait_routes

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")


async def wait_debug(gw: Gateway) -> list[str | None]:
    await gw.wait_until(lambda: bool(gw.debug))
    return gw.reasons()


@needs_openssl
async def test_self_signed_certificate_without_ca_is_pinned(gateway: Gateway) -> None:
    """``openssl req -x509`` self-signed device cert, as in Murano's tutorial."""
    key, cert = gateway.pki.root / "self.key", gateway.pki.root / "self.pem"
    await trio.run_process(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=dev-42",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_stdout=True,
        capture_stderr=True,
    )
    out = await s_client(
        gateway,
        gateway.ports["tls"],
        "-servername",
        "open.m2.localhost",
        "-alpn",
        "mqtt",
        "-cert",
        str(cert),
        "-key",
        str(key),
        stdin=mqtt_connect_bytes(),
    )
    assert "ALPN protocol: mqtt" in out
    assert await wait_routes(gateway, 1) == ["mqtt"]
    claim = gateway.recorder.seen[0][1].cert
    assert claim is not None
    assert (claim.cn, claim.verified) == ("dev-42", False)
    assert claim.fingerprint == fingerprint(cert.read_text())
    assert claim.pem.strip() == cert.read_text().strip()
    assert gateway.debug == []


@needs_openssl
async def test_ca_verified_certificate(gateway: Gateway) -> None:
    device = gateway.pki.device("dev-7", ca=gateway.connector_ca)
    out = await s_client(
        gateway,
        gateway.ports["mqtt_tls"],
        "-servername",
        "strict.m2.localhost",
        "-cert",
        device.cert_path,
        "-key",
        device.key_path,
        stdin=mqtt_connect_bytes(),
    )
    assert "Verify return code: 0 (ok)" in out
    assert await wait_routes(gateway, 1) == ["mqtt"]
    claim = gateway.recorder.seen[0][1].cert
    assert claim is not None
    assert (claim.cn, claim.verified) == ("dev-7", True)
    assert claim.fingerprint == fingerprint(device.cert_pem)


@needs_openssl
async def test_other_ca_certificate_refused(gateway: Gateway) -> None:
    device = gateway.pki.device("dev-8")  # issued by the dev CA, not the connector's
    await s_client(
        gateway,
        gateway.ports["tls"],
        "-servername",
        "strict.m2.localhost",
        "-alpn",
        "mqtt",
        "-cert",
        device.cert_path,
        "-key",
        device.key_path,
        stdin=mqtt_connect_bytes(),
    )
    assert await wait_debug(gateway) == ["untrusted_certificate"]
    assert gateway.debug[0].connector_id == "strict"
    assert gateway.debug[0].ip == "127.0.0.1"
    assert gateway.recorder.seen == []


@needs_openssl
@pytest.mark.parametrize("connector", ["strict", "open"])
async def test_expired_certificate_refused(gateway: Gateway, connector: str) -> None:
    device = gateway.pki.device("dev-9", ca=gateway.connector_ca, expired=True)
    await s_client(
        gateway,
        gateway.ports["tls"],
        "-servername",
        f"{connector}.m2.localhost",
        "-alpn",
        "mqtt",
        "-cert",
        device.cert_path,
        "-key",
        device.key_path,
        stdin=mqtt_connect_bytes(),
    )
    assert await wait_debug(gateway) == ["expired"]
    assert gateway.recorder.seen == []


async def test_refused_client_sees_connection_end_and_no_handler(gateway: Gateway) -> None:
    device = gateway.pki.device("dev-10", ca=gateway.pki.new_ca("stranger"))
    ctx = client_context(
        gateway.ca_path, alpn=["mqtt"], cert_path=device.cert_path, key_path=device.key_path
    )
    stream = await open_tls_client(gateway.ports["tls"], "strict.m2.localhost", ctx)
    with trio.fail_after(5):
        try:
            await stream.send_all(mqtt_connect_bytes())
            assert await stream.receive_some() == b""
        except trio.BrokenResourceError:
            pass  # TLS 1.3: the refusal can arrive as a reset instead of an EOF
    await stream.aclose()
    assert gateway.reasons() == ["untrusted_certificate"]


async def test_no_certificate_is_not_the_front_doors_decision(gateway: Gateway) -> None:
    ctx = client_context(gateway.ca_path, alpn=["mqtt"])
    stream = await open_tls_client(gateway.ports["tls"], "strict.m2.localhost", ctx)
    await stream.send_all(mqtt_connect_bytes())
    assert await stream.receive_some(4) == CONNACK_ACCEPTED
    await stream.aclose()
    assert gateway.recorder.seen[0][1].cert is None
    assert gateway.debug == []


async def test_connector_ca_replaced_at_runtime(gateway: Gateway) -> None:
    old = gateway.pki.device("dev-11", ca=gateway.connector_ca)
    new_ca = gateway.pki.new_ca("replacement-ca")
    new = gateway.pki.device("dev-11", ca=new_ca)

    async def connect(device_cert: str, device_key: str) -> bool:
        ctx = client_context(
            gateway.ca_path, alpn=["mqtt"], cert_path=device_cert, key_path=device_key
        )
        stream = await open_tls_client(gateway.ports["tls"], "strict.m2.localhost", ctx)
        try:
            await stream.send_all(mqtt_connect_bytes())
            return await stream.receive_some(4) == CONNACK_ACCEPTED
        except trio.BrokenResourceError:
            return False
        finally:
            await stream.aclose()

    live_ctx = client_context(
        gateway.ca_path, alpn=["mqtt"], cert_path=old.cert_path, key_path=old.key_path
    )
    live = await open_tls_client(gateway.ports["tls"], "strict.m2.localhost", live_ctx)
    await live.send_all(mqtt_connect_bytes())
    assert await live.receive_some(4) == CONNACK_ACCEPTED
    gateway.directory.put(ConnectorTLS("strict", new_ca[0], None, None, False))
    assert await connect(new.cert_path, new.key_path)
    assert not await connect(old.cert_path, old.key_path)
    await live.send_all(b"\xc0\x00")  # the connection made under the old CA stays up
    assert await live.receive_some(2) == b"\xc0\x00"
    await live.aclose()
    assert gateway.reasons() == ["untrusted_certificate"]
