"""A connector's TLS server key is sealed before it reaches the store
(gateway/services/connectors.py, gateway/services/secretbox.py): the database and its WAL
never hold it in clear, the registry does (handshakes need it), and a bad pair is refused
before anything is stored."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import pytest

from gateway.app import open_services
from gateway.clock import now_us
from gateway.config import GatewayConfig
from gateway.errors import BadRequest
from gateway.services.bundle import Services
from gateway.services.connectors import ConnectorService, ConnectorSettings, PkiSettings, Registry
from gateway.services.secretbox import KEY_FILE, LEGACY_KEY_FILE, SecretBox
from gateway.store.api import UpdateConnector
from gateway.testing.certs import TestPKI
from gateway.tls.pki import issue_server_cert
from gateway.tls.policy import CustomPolicy


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(tmp_path_factory.mktemp("pki"))


def key_body(key_pem: str) -> bytes:
    """The base64 lines of a PEM key: what a leak in the database would contain."""
    return "".join(key_pem.strip().splitlines()[1:-1]).encode()[:40]


def database_bytes(data: Path, store: str = "") -> bytes:
    """What the database holds: SQLite's files (and WAL), or PostgreSQL's stored connector
    settings (the only place a connector's key could be)."""
    if store:
        import psycopg

        with psycopg.connect(store) as pg:
            return b"".join(bytes(r[0]) for r in pg.execute("SELECT settings FROM connectors"))
    return b"".join(p.read_bytes() for p in sorted(data.glob("gateway.db*")))


def with_pki(cert: str, key: str) -> ConnectorSettings:
    return ConnectorSettings(pki=PkiSettings(server_cert=cert, server_key=key))


async def test_server_keys_are_sealed_in_the_database(
    services: Services, pki: TestPKI, tmp_path: Path
) -> None:
    chain, key = issue_server_cert(pki.ca_pem, pki.ca_key_pem, ["acme.m2.localhost"])
    await services.connectors.create(name="a", connector_id="acme", settings=with_pki(chain, key))
    assert services.registry.require("acme").settings.pki.server_key == key
    raw = database_bytes(tmp_path, services.config.store)
    assert key_body(key) not in raw
    assert key_body(chain) in raw  # the certificate is public and stays readable
    # a new certificate and key through update: sealed again, with a fresh nonce
    chain2, key2 = issue_server_cert(pki.ca_pem, pki.ca_key_pem, ["acme.m2.localhost"])
    await services.connectors.update("acme", settings=with_pki(chain2, key2))
    assert key_body(key2) not in database_bytes(tmp_path, services.config.store)
    # another service over the same store and key file opens it
    again = ConnectorService(
        services.store, Registry("localhost"), box=SecretBox.from_data_dir(tmp_path)
    )
    await again.load()
    assert again.registry.require("acme").settings.pki.server_key == key2
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600


async def test_a_key_that_does_not_decrypt_stays_sealed(
    services: Services, pki: TestPKI, caplog: pytest.LogCaptureFixture
) -> None:
    chain, key = issue_server_cert(pki.ca_pem, pki.ca_key_pem, ["acme.m2.localhost"])
    await services.connectors.create(name="a", connector_id="acme", settings=with_pki(chain, key))
    stranger = ConnectorService(services.store, Registry("localhost"), box=SecretBox(b"k" * 32))
    with caplog.at_level(logging.ERROR):
        await stranger.load()
    stored = stranger.registry.require("acme").settings.pki.server_key
    assert stored is not None
    assert SecretBox.is_sealed(stored)  # not served in clear, not replaced by another key
    assert "does not decrypt" in caplog.text
    # an unrelated edit keeps the sealed value as it is (no double sealing)
    current = stranger.registry.require("acme").settings
    limits = msgspec.structs.replace(current.limits, max_payload=4096)
    await stranger.update("acme", settings=msgspec.structs.replace(current, limits=limits))
    await services.connectors.load()
    assert services.registry.require("acme").settings.pki.server_key == key


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("other_key", "does not belong"),
        ("expired", "expired on"),
        ("garbage", "not a PEM certificate"),
    ],
)
async def test_a_bad_certificate_pair_is_refused_and_nothing_changes(
    services: Services, pki: TestPKI, which: str, message: str
) -> None:
    chain, key = issue_server_cert(pki.ca_pem, pki.ca_key_pem, ["acme.m2.localhost"])
    await services.connectors.create(name="a", connector_id="acme", settings=with_pki(chain, key))
    if which == "other_key":
        bad = with_pki(chain, issue_server_cert(pki.ca_pem, pki.ca_key_pem, ["x"])[1])
    elif which == "expired":
        bad = with_pki(*issue_server_cert(pki.ca_pem, pki.ca_key_pem, ["x"], days=0))
    else:
        bad = with_pki("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", key)
    with pytest.raises(BadRequest, match=message):
        await services.connectors.update("acme", settings=bad)
    with pytest.raises(BadRequest, match=message):
        await services.connectors.create(name="b", connector_id="acme2", settings=bad)
    assert services.registry.require("acme").settings.pki.server_cert == chain
    assert services.registry.get("acme2") is None


async def test_an_expired_certificate_does_not_block_other_edits(
    services: Services, pki: TestPKI, tmp_path: Path
) -> None:
    """Expiry is checked when the pair changes, not on every later edit: a connector whose
    certificate expired in place (here: stored in clear by an older release, which checked
    nothing) can still be renamed, and the rename seals its key."""
    chain, key = issue_server_cert(pki.ca_pem, pki.ca_key_pem, ["acme.m2.localhost"], days=0)
    await services.connectors.create(name="a", connector_id="acme")
    stored = msgspec.json.encode(with_pki(chain, key))  # in clear, unchecked
    await services.store.write([UpdateConnector("acme", "a", "", stored, now_us())])
    await services.connectors.load()
    assert key_body(key) in database_bytes(tmp_path, services.config.store)
    await services.connectors.update("acme", name="renamed")
    assert services.registry.require("acme").name == "renamed"
    assert services.registry.require("acme").settings.pki.server_key == key
    assert await services.connectors.seal_stored_keys() == []  # the rename sealed it
    await services.connectors.load()
    assert services.registry.require("acme").settings.pki.server_key == key


async def test_tls_policy_is_stored_and_served(services: Services) -> None:
    custom = CustomPolicy("1.1", ["ECDHE-ECDSA-AES128-SHA"])
    await services.connectors.create(
        name="a", connector_id="acme", settings=ConnectorSettings(tls=custom)
    )
    await services.connectors.load()
    assert services.registry.require("acme").settings.tls == custom
    tls = services.directory.tls_for_server_name("acme.m2.localhost")
    assert tls is not None
    assert tls.policy == custom


async def test_the_legacy_key_file_becomes_the_node_key(tmp_path: Path) -> None:
    old = SecretBox.from_data_dir(tmp_path)
    sealed = old.encrypt("s3cret", context="demo/pumps/password")
    (tmp_path / KEY_FILE).rename(tmp_path / LEGACY_KEY_FILE)  # a 0.1.0 data directory
    async with open_services(GatewayConfig(data=str(tmp_path), synchronous="NORMAL")) as svc:
        assert svc.connectors.box.decrypt(sealed, context="demo/pumps/password") == "s3cret"
    assert not (tmp_path / LEGACY_KEY_FILE).exists()
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
