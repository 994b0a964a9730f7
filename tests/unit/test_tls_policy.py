"""TLS policies per connector (gateway/tls/policy.py, gateway/tls/contexts.py): versions,
cipher lists and server order, checked by handshakes in memory against the stdlib ``ssl``
client (OpenSSL 3.0 with Debian's configuration: an independent TLS stack from the
server's pyOpenSSL build), so every expectation is what a real client negotiates."""

from __future__ import annotations

import contextlib
import datetime as _dt
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from OpenSSL import SSL

from gateway.model import Transport
from gateway.testing.certs import MemoryDirectory, TestPKI
from gateway.tls.contexts import (
    REASON_TLS_VERSION,
    ConnectorTLS,
    HandshakeState,
    ServerContexts,
    check_server_credentials,
)
from gateway.tls.pki import fingerprint, issue_server_cert, server_names
from gateway.tls.policy import (
    CIPHERS_DEFAULT,
    CIPHERS_LEGACY,
    CustomPolicy,
    DefaultPolicy,
    LegacyPolicy,
    TlsPolicy,
)

V = ssl.TLSVersion


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def directory() -> MemoryDirectory:
    d = MemoryDirectory()
    d.put(ConnectorTLS("dflt", None, None, None, False))
    d.put(ConnectorTLS("lgcy", None, None, None, False, LegacyPolicy()))
    custom = CustomPolicy("1.1", ["ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA"])
    d.put(ConnectorTLS("cstm", None, None, None, False, custom))
    return d


@pytest.fixture
def contexts(pki: TestPKI, directory: MemoryDirectory) -> ServerContexts:
    return ServerContexts(
        directory, server_cert_path=pki.dev.server_cert, server_key_path=pki.dev.server_key
    )


@pytest.fixture(autouse=True)
def _old_versions_allowed() -> Iterator[None]:
    # The stdlib marks TLS 1.0/1.1 deprecated; talking them is the point of these tests.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


class Outcome:
    def __init__(self, client: ssl.SSLObject, state: HandshakeState, error: str | None) -> None:
        self.client = client
        self.state = state
        self.error = error

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def version(self) -> str | None:
        return self.client.version()

    @property
    def cipher(self) -> str:
        cipher = self.client.cipher()
        assert cipher is not None
        return cipher[0]


def client(
    pki: TestPKI,
    *,
    low: ssl.TLSVersion | None = None,
    high: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.dev.ca_cert)
    if low is not None:
        ctx.minimum_version = low
    if high is not None:
        ctx.maximum_version = high
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


def handshake(contexts: ServerContexts, cid: str, ctx: ssl.SSLContext) -> Outcome:
    """Pump one handshake between memory BIOs; the client's error text if it fails."""
    server = contexts.new_connection(Transport.TLS)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    cl = ctx.wrap_bio(incoming, outgoing, server_hostname=f"{cid}.m2.localhost")
    for _ in range(8):
        try:
            cl.do_handshake()
            return Outcome(cl, server.get_app_data(), None)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            return Outcome(cl, server.get_app_data(), str(exc))
        server.bio_write(outgoing.read())
        # WantReadError: needs the next flight; Error: the alert is in the BIO, and the
        # client reports it
        with contextlib.suppress(SSL.Error):
            server.do_handshake()
        with contextlib.suppress(SSL.WantReadError):
            incoming.write(server.bio_read(65536))
    raise AssertionError("handshake did not finish")


# -- default ---------------------------------------------------------------------------------


def test_default_speaks_tls13_and_12_in_server_order(
    pki: TestPKI, contexts: ServerContexts
) -> None:
    assert handshake(contexts, "dflt", client(pki)).version == "TLSv1.3"
    # the client prefers AES-256; the server's order puts AES-128 first and wins
    prefers_256 = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"
    got = handshake(contexts, "dflt", client(pki, high=V.TLSv1_2, ciphers=prefers_256))
    assert (got.version, got.cipher) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")


def test_a_client_that_prefers_chacha_gets_it(pki: TestPKI, contexts: ServerContexts) -> None:
    chacha_first = "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"
    got = handshake(contexts, "dflt", client(pki, high=V.TLSv1_2, ciphers=chacha_first))
    assert got.cipher == "ECDHE-ECDSA-CHACHA20-POLY1305"


def test_default_refuses_cbc_and_old_versions(pki: TestPKI, contexts: ServerContexts) -> None:
    cbc = handshake(contexts, "dflt", client(pki, high=V.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-SHA"))
    assert not cbc.ok
    assert "HANDSHAKE_FAILURE" in (cbc.error or "")
    old = client(pki, low=V.TLSv1, high=V.TLSv1_1, ciphers="DEFAULT:@SECLEVEL=0")
    refused = handshake(contexts, "dflt", old)
    assert not refused.ok
    assert refused.state.reason == REASON_TLS_VERSION
    assert refused.state.connector is not None  # the refusal lands in that connector's log
    assert refused.state.connector.connector_id == "dflt"


# -- legacy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "name"), [(V.TLSv1, "TLSv1"), (V.TLSv1_1, "TLSv1.1")])
def test_legacy_serves_tls10_and_11_with_cbc(
    pki: TestPKI, contexts: ServerContexts, version: ssl.TLSVersion, name: str
) -> None:
    ctx = client(pki, low=version, high=version, ciphers="DEFAULT:@SECLEVEL=0")
    got = handshake(contexts, "lgcy", ctx)
    assert got.error is None
    assert (got.version, got.cipher) == (name, "ECDHE-ECDSA-AES128-SHA")


def test_legacy_still_gives_modern_clients_the_default(
    pki: TestPKI, contexts: ServerContexts
) -> None:
    assert handshake(contexts, "lgcy", client(pki)).version == "TLSv1.3"
    got = handshake(contexts, "lgcy", client(pki, high=V.TLSv1_2))
    assert got.cipher == "ECDHE-ECDSA-AES128-GCM-SHA256"


# -- custom ----------------------------------------------------------------------------------


def test_custom_minimum_and_cipher_list(pki: TestPKI, contexts: ServerContexts) -> None:
    tls11 = client(pki, low=V.TLSv1_1, high=V.TLSv1_1, ciphers="DEFAULT:@SECLEVEL=0")
    got = handshake(contexts, "cstm", tls11)
    assert (got.version, got.cipher) == ("TLSv1.1", "ECDHE-ECDSA-AES256-SHA")
    tls10 = client(pki, low=V.TLSv1, high=V.TLSv1, ciphers="DEFAULT:@SECLEVEL=0")
    assert handshake(contexts, "cstm", tls10).state.reason == REASON_TLS_VERSION
    gcm_only = client(pki, high=V.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    assert not handshake(contexts, "cstm", gcm_only).ok  # not in the custom list
    assert handshake(contexts, "cstm", client(pki)).version == "TLSv1.3"


def test_a_policy_change_applies_to_the_next_handshake(
    pki: TestPKI, contexts: ServerContexts, directory: MemoryDirectory
) -> None:
    tls10 = client(pki, low=V.TLSv1, high=V.TLSv1, ciphers="DEFAULT:@SECLEVEL=0")
    assert not handshake(contexts, "dflt", tls10).ok
    directory.put(ConnectorTLS("dflt", None, None, None, False, LegacyPolicy()))
    assert handshake(contexts, "dflt", tls10).version == "TLSv1"
    directory.put(ConnectorTLS("dflt", None, None, None, False))
    assert not handshake(contexts, "dflt", tls10).ok


# -- policy values ---------------------------------------------------------------------------


def test_builtin_lists_are_known_to_openssl() -> None:
    assert DefaultPolicy().cipher_names() == CIPHERS_DEFAULT.split(":")
    assert LegacyPolicy().cipher_names() == CIPHERS_LEGACY.split(":")  # every custom name too
    for name in DefaultPolicy().cipher_names():
        assert name.startswith("ECDHE-")
        assert "GCM" in name or "POLY1305" in name


def test_custom_policy_values() -> None:
    custom = CustomPolicy("1.0", ["AES128-SHA", "ECDHE-RSA-AES128-SHA", "AES128-SHA"])
    assert custom.cipher_names() == ["AES128-SHA", "ECDHE-RSA-AES128-SHA"]  # order kept
    assert custom.cipher_string().endswith(":@SECLEVEL=0")  # TLS 1.0 signs with SHA-1
    assert CustomPolicy().cipher_names() == CIPHERS_DEFAULT.split(":")
    assert CustomPolicy().min_version_number == DefaultPolicy().min_version_number
    assert [p.name for p in (DefaultPolicy(), LegacyPolicy(), custom)] == [
        "default",
        "legacy",
        "custom",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"policy": "custom", "ciphers": ["RC4-SHA"]}, "Invalid enum value 'RC4-SHA'"),
        ({"policy": "custom", "ciphers": ["ADH-AES128-SHA"]}, "Invalid enum value"),
        ({"policy": "custom", "ciphers": []}, "length >= 1"),
        ({"policy": "custom", "min_version": "1.4"}, "Invalid enum value '1.4'"),
        ({"policy": "default", "min_version": "1.0"}, "unknown field `min_version`"),
        ({"policy": "legacy", "ciphers": ["AES128-SHA"]}, "unknown field `ciphers`"),
        ({"policy": "modern"}, "Invalid value 'modern'"),
    ],
)
def test_a_policy_the_schema_refuses(value: dict[str, object], message: str) -> None:
    """The schema says it all (the OpenAPI document enumerates the names): whatever it
    admits is a usable policy, nothing is refused later."""
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(value, TlsPolicy)  # type: ignore[arg-type]
    assert msgspec.convert({"policy": "legacy"}, TlsPolicy) == LegacyPolicy()  # type: ignore[arg-type]


# -- server certificates ---------------------------------------------------------------------


def test_server_credentials_are_checked_before_use(pki: TestPKI, tmp_path: Path) -> None:
    chain, key = issue_server_cert(pki.ca_pem, pki.ca_key_pem, ["acme.example"])
    info = check_server_credentials(chain, key)
    assert info.dns_names == ["acme.example"]
    assert info.fingerprint == fingerprint(chain)
    _, other_key = issue_server_cert(pki.ca_pem, pki.ca_key_pem, ["acme.example"])
    with pytest.raises(ValueError, match="does not belong"):
        check_server_credentials(chain, other_key)
    with pytest.raises(ValueError, match="not a PEM certificate"):
        check_server_credentials("hello", key)
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        check_server_credentials(chain, "hello")
    # PEM is ASCII: other characters are no PEM, said in the same words (not a codec error)
    with pytest.raises(
        ValueError, match=r"^the server certificate is not a PEM certificate chain$"
    ):
        check_server_credentials("ïÀãéÞ·", key)
    with pytest.raises(ValueError, match=r"^the server key is not an unencrypted PEM private key$"):
        check_server_credentials(chain, key.replace("-----END", "é-----END"))
    expired, expired_key = issue_server_cert(pki.ca_pem, pki.ca_key_pem, ["x.example"], days=0)
    with pytest.raises(ValueError, match="expired on"):
        check_server_credentials(expired, expired_key)
    future = _dt.datetime.now(_dt.UTC) - _dt.timedelta(days=1)
    with pytest.raises(ValueError, match="not valid before"):
        check_server_credentials(chain, key, now=future)


def test_node_certificate_reload_and_expiry(pki: TestPKI, tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    chain, key = issue_server_cert(pki.ca_pem, pki.ca_key_pem, server_names("localhost"))
    cert_path.write_text(chain)
    key_path.write_text(key)
    contexts = ServerContexts(
        MemoryDirectory(), server_cert_path=cert_path, server_key_path=key_path
    )
    first = contexts.node_certificate()
    assert first.fingerprint == fingerprint(chain)
    # the chain ends with the CA (ten years); the leaf expires first and is what counts
    assert first.not_after - first.not_before == pytest.approx(825 * 86400, abs=3600)
    new_chain, new_key = issue_server_cert(pki.ca_pem, pki.ca_key_pem, ["*.m2.localhost"])
    key_path.write_text(new_key)  # half-replaced: the old certificate with a new key
    with pytest.raises(ValueError):
        contexts.reload_server_cert()
    assert contexts.node_certificate() == first
    cert_path.write_text(new_chain)
    assert contexts.reload_server_cert().fingerprint == fingerprint(new_chain)
    assert contexts.node_certificate().fingerprint == fingerprint(new_chain)
