"""Private by default, on a data directory written by release 0.1.0
(tests/data/upgrade/README.md): the gateway makes the directory 0700 and its secrets 0600,
seals a connector server key stored in clear, keeps decrypting the integration secrets
sealed under the old key file name, and still serves that connector's certificate."""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
from pathlib import Path

import httpx

from gateway.services.secretbox import KEY_FILE, LEGACY_KEY_FILE
from gateway.testing.server import open_test_gateway
from gateway.testing.tlsclient import client_context, open_tls_client
from gateway.tls.pki import fingerprint, issue_server_cert

V010 = Path(__file__).resolve().parents[2] / "data" / "upgrade" / "v0.1.0"
PUMP_PASSWORD = "s3cret-Pump-Passw0rd-7f1c"  # tests/data/upgrade/README.md


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_body(key_pem: str) -> bytes:
    return "".join(key_pem.strip().splitlines()[1:-1]).encode()[:40]


def database_bytes(data: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data.glob("gateway.db*")))


def store_key_in_clear(data: Path) -> tuple[str, str]:
    """Give connector ``fleet`` its own server certificate the way 0.1.0 stored it: the
    settings JSON with the private key in clear."""
    ca_pem = (data / "tls" / "ca.pem").read_text()
    ca_key = (data / "tls" / "ca.key").read_text()
    chain, key = issue_server_cert(ca_pem, ca_key, ["fleet.m2.localhost"])
    conn = sqlite3.connect(data / "gateway.db")
    (raw,) = conn.execute("SELECT settings FROM connectors WHERE id = 'fleet'").fetchone()
    settings = json.loads(raw)
    settings["pki"].update(server_cert=chain, server_key=key)
    blob = json.dumps(settings).encode()  # a BLOB, as 0.1.0 wrote it
    conn.execute("UPDATE connectors SET settings = ? WHERE id = 'fleet'", (blob,))
    conn.commit()
    conn.close()
    return chain, key


async def test_a_v010_data_directory_becomes_private_and_sealed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(V010, data)
    for path in [data, *data.rglob("*")]:  # as a careless copy leaves it
        path.chmod(0o755 if path.is_dir() else 0o644)
    chain, key = store_key_in_clear(data)
    assert key_body(key) in database_bytes(data)
    legacy_key = (data / LEGACY_KEY_FILE).read_bytes()

    async with open_test_gateway(data) as gw:
        # private: directories 0700, secrets 0600 (database files included)
        assert mode(data) == 0o700
        assert mode(data / "tls") == 0o700
        assert mode(data / "content") == 0o700
        for name in ["gateway.db", "gateway.db-wal", "gateway.db-shm", "admin.token", KEY_FILE]:
            assert mode(data / name) == 0o600, name
        for name in [
            "tls/ca.key",
            "tls/server.key",
            *(f"content/{b.name}" for b in (data / "content").iterdir()),
        ]:
            assert mode(data / name) == 0o600, name
        # the old key file is the node key now: the integration secret still decrypts
        assert not (data / LEGACY_KEY_FILE).exists()
        assert (data / KEY_FILE).read_bytes() == legacy_key
        assert PUMP_PASSWORD in (await gw.services.integrations.bind("demo", "pumps")).secrets()
        # the connector's key was sealed at start (the WAL holds only the sealed row; the
        # old page stays in gateway.db until the next checkpoint) and still serves
        assert key_body(key) not in (data / "gateway.db-wal").read_bytes()
        stream = await open_tls_client(
            gw.ports["tls"], "fleet.m2.localhost", client_context(gw.ca, alpn=["mqtt"])
        )
        der = stream.getpeercert(binary_form=True)
        assert der is not None
        assert fingerprint(der) == fingerprint(chain)
        await stream.aclose()
        async with httpx.AsyncClient(base_url=gw.api, headers=gw.admin_headers) as api:
            shown = (await api.get("/connectors/fleet/settings")).json()
        assert shown["pki"]["server_key"] == "<redacted>"
        assert shown["tls"] == {"policy": "default"}

    # after a clean stop (checkpoint) nothing on disk has the key in clear, not even the
    # free space of the page the old row was in (secure_delete)
    assert key_body(key) not in database_bytes(data)
    assert key_body(key) not in b"".join(
        p.read_bytes() for p in data.rglob("*") if p.is_file() and p.parent != data / "tls"
    )
