"""Activation, authentication and connector routing (docs/protocol.md §1, §2.1, §2.2, §5,
§12 items 10-12, 22, 24; §13 items 1, 16)."""

from __future__ import annotations

import base64
import re

import msgspec
import trio

from gateway.model import LogRecord
from gateway.services.connectors import ProvisioningSettings
from gateway.services.logs import LogFilter
from gateway.testing.server import TestGateway

from .conftest import FORM, Client, activate, cik

ALIAS = "/onep:v1/stack/alias"
ACTIVATE = "/provision/activate"


async def _activate(c: Client, body: bytes) -> tuple[int, str, dict[str, str]]:
    r = await c.request("POST", ACTIVATE, headers=[FORM], body=body)
    return r.status, r.text, r.headers


async def test_activation_bodies_and_token_shape(gw: TestGateway) -> None:
    """All three body forms; 200, text/plain, exactly 40 lowercase hex, no newline."""
    c = await Client.dev(gw)
    for i, body in enumerate([b"id=a-1", b"sn=a-2", b"vendor=demo&model=demo&sn=a-3"]):
        status, text, headers = await _activate(c, body)
        assert status == 200, text
        assert re.fullmatch(r"[0-9a-f]{40}", text)
        assert headers["content-length"] == "40"
        assert headers["content-type"] == "text/plain; charset=utf-8"
        dev = await gw.services.devices.get("demo", f"a-{i + 1}")
        assert dev.status == "provisioned"
    events = [e.type for e in await gw.services.events.read("demo")]
    assert events.count("provisioned") == 3


async def test_activation_refusals(gw: TestGateway) -> None:
    """409 already provisioned, 400 without id, 404 not whitelisted (presenter identity
    off), 403 locked; 200 again after revocation (§12 item 11)."""
    c = await Client.dev(gw)
    await activate(c, "b-1")
    assert (await _activate(c, b"id=b-1"))[0] == 409
    assert (await _activate(c, b"foo=bar"))[0] == 400
    await gw.services.devices.update("demo", "b-1", reprovision=True)
    assert (await _activate(c, b"id=b-1"))[0] == 200
    settings = gw.services.registry.require("demo").settings
    await gw.services.connectors.update(
        "demo",
        settings=msgspec.structs.replace(
            settings, provisioning=ProvisioningSettings(presenter_identity=False)
        ),
    )
    assert (await _activate(c, b"id=unknown"))[0] == 404
    await gw.services.devices.add("demo", "b-2", locked=True)
    assert (await _activate(c, b"id=b-2"))[0] == 403
    assert (await gw.services.devices.get("demo", "b-2")).status == "whitelisted"


async def test_identity_format_violation_is_400(gw: TestGateway) -> None:
    settings = gw.services.registry.require("demo").settings
    fmt = msgspec.convert(
        {"type": "base16", "options": {"length": 8}}, type(settings.identity_format)
    )
    await gw.services.connectors.update(
        "demo", settings=msgspec.structs.replace(settings, identity_format=fmt)
    )
    c = await Client.dev(gw)
    assert (await _activate(c, b"id=not-hex!"))[0] == 400
    assert (await _activate(c, b"id=00AB01FF"))[0] == 200


async def test_every_token_header_form(gw: TestGateway) -> None:
    """§2.1: X-Exosite-CIK, Authorization: token, Basic with an empty user."""
    c = await Client.dev(gw)
    token = await activate(c, "t-1")
    basic = base64.b64encode(f":{token}".encode()).decode()
    for headers in (
        cik(token),
        [("Authorization", f"token {token}")],
        [("Authorization", f"Basic {basic}")],
    ):
        r = await c.request("POST", ALIAS, headers=[*headers, FORM], body=b"data_in=1")
        assert r.status == 204, (headers, r)
    for headers in (
        [],
        cik("0" * 40),
        [("Authorization", "token nope")],
        [("Authorization", "Basic !!notbase64")],
        [("Authorization", "Bearer x")],
    ):
        r = await c.request("POST", ALIAS, headers=[*headers, FORM], body=b"data_in=2")
        assert r.status == 401, (headers, r)
    assert (await gw.services.state.get("demo", "t-1"))["data_in"].reported == "1"


async def test_locked_device_gets_403_and_nothing_changes(gw: TestGateway) -> None:
    c = await Client.dev(gw)
    token = await activate(c, "l-1")
    await gw.services.devices.update("demo", "l-1", locked=True)
    r = await c.request("POST", ALIAS, headers=[*cik(token), FORM], body=b"data_in=x")
    assert r.status == 403
    assert await gw.services.state.get("demo", "l-1") == {}


async def test_password_provisioning_and_basic_auth(gw: TestGateway) -> None:
    """§12 item 10: ``id=&password=`` → 204; Basic identity:password authenticates (TLS
    only: dev mode accepts tokens only); short passwords are 400."""
    settings = gw.services.registry.require("demo").settings
    await gw.services.connectors.update(
        "demo",
        settings=msgspec.structs.replace(
            settings, provisioning=ProvisioningSettings(auth_type="password")
        ),
    )
    dev = await Client.dev(gw)
    assert (await _activate(dev, b"id=pw-1&password=short"))[0] == 400
    password = "correct-horse-battery-staple"
    assert (await _activate(dev, f"id=pw-1&password={password}".encode()))[0] == 204
    basic = base64.b64encode(f"pw-1:{password}".encode()).decode()
    tls = await Client.tls(gw)
    r = await tls.request(
        "POST", ALIAS, headers=[("Authorization", f"Basic {basic}"), FORM], body=b"data_in=pw"
    )
    assert r.status == 204
    wrong = base64.b64encode(b"pw-1:wrong-password-wrong-password").decode()
    r = await tls.request(
        "POST", ALIAS, headers=[("Authorization", f"Basic {wrong}"), FORM], body=b"data_in=no"
    )
    assert r.status == 401
    r = await dev.request(
        "POST", ALIAS, headers=[("Authorization", f"Basic {basic}"), FORM], body=b"data_in=no"
    )
    assert r.status == 401
    assert (await gw.services.state.get("demo", "pw-1"))["data_in"].reported == "pw"


async def test_routing_by_host(gw: TestGateway) -> None:
    """Dev port: Host must be a devmode connector host (port ignored); TLS: Host must match
    the SNI connector (port ignored, §13 item 16), else 421; refusals are debug-logged."""
    async with gw.services.logs.subscribe(LogFilter("demo", kinds=["debug"])) as sub:
        ok = await Client.dev(gw, host=f"{gw.devmode_fqdn()}:8080")
        assert (await ok.request("GET", "/timestamp")).status == 200
        for host in (gw.fqdn(), "other.devmode-m2.localhost", "example.com"):
            bad = await Client.dev(gw, host=host)
            assert (await bad.request("GET", "/timestamp")).status == 404, host
        tls = await Client.tls(gw, host=f"{gw.fqdn()}:8443")
        assert (await tls.request("GET", "/timestamp")).status == 200
        await gw.services.connectors.create(name="Other", connector_id="other")
        for host in ("other.m2.localhost", gw.devmode_fqdn()):
            mismatch = await Client.tls(gw, host=host)
            assert (await mismatch.request("GET", "/timestamp")).status == 421, host
        records: list[LogRecord] = []
        while True:
            try:
                records.append(sub.receive.receive_nowait())
            except trio.WouldBlock:
                break
    reasons = [r.reason for r in records]
    assert "host_mismatch" in reasons
    assert all(r.ip == "127.0.0.1" and r.protocol == "onep:v1/http" for r in records)


async def test_refused_request_is_debug_logged_with_identity(gw: TestGateway) -> None:
    c = await Client.dev(gw)
    await activate(c, "d-1")
    async with gw.services.logs.subscribe(LogFilter("demo", kinds=["debug"])) as sub:
        assert (await _activate(c, b"id=d-1"))[0] == 409
        rec = sub.receive.receive_nowait()
    assert rec.identity == "d-1"
    assert rec.reason == "already_provisioned"
    assert rec.ip == "127.0.0.1"
    assert "409" in (rec.detail or "")


async def test_certificate_first_request_provisions(gw: TestGateway, tmp_path: object) -> None:
    """§2.2 certificate mode: no activate; the first authenticated request with a client
    certificate provisions the identity in its CN, then writes."""
    import datetime as dt
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    settings = gw.services.registry.require("demo").settings
    await gw.services.connectors.update(
        "demo",
        settings=msgspec.structs.replace(
            settings, provisioning=ProvisioningSettings(auth_type="certificate")
        ),
    )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cert-dev-1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    d = Path(str(tmp_path))
    (d / "dev.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "dev.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    c = await Client.tls(gw, cert=(str(d / "dev.pem"), str(d / "dev.key")))
    r = await c.request("POST", ALIAS, headers=[FORM], body=b"data_in=from-cert")
    assert r.status == 204, r
    dev = await gw.services.devices.get("demo", "cert-dev-1")
    assert dev.status == "provisioned"
    assert dev.auth.type == "certificate"
    assert (await gw.services.state.get("demo", "cert-dev-1"))["data_in"].reported == "from-cert"
    r = await c.request("GET", f"{ALIAS}?data_in")
    assert r.status == 200
    assert r.body == b"data_in=from-cert"
