"""Certificate factory and an in-memory connector directory, for tests and benchmarks.

Everything is issued by :mod:`gateway.tls.pki` (the code devices and operators use too), and
written to files because ``openssl s_client`` and the stdlib ``ssl`` module want paths.
:class:`MemoryDirectory` is a real :class:`~gateway.tls.contexts.ConnectorDirectory` over a
dict (the gateway's own is the same idea over the store), parsing ``<cid>.m2.<base>``.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import msgspec

from gateway.tls.contexts import ConnectorTLS
from gateway.tls.pki import DevPKI, create_ca, ensure_dev_pki, issue_device_cert

__all__ = ["DeviceCert", "MemoryDirectory", "TestPKI"]


class DeviceCert(msgspec.Struct, frozen=True):
    """A device certificate on disk: PEM texts and the paths of the same bytes."""

    cn: str
    cert_pem: str
    key_pem: str
    cert_path: str
    key_path: str


class MemoryDirectory:
    """Connectors by id; server names ``<cid>.m2.<base>`` and ``<cid>.devmode-m2.<base>``.

    Tests mutate it at runtime (``put``/``remove``) to exercise certificate replacement.
    """

    def __init__(self, base_domain: str = "localhost") -> None:
        self.base_domain = base_domain
        self.connectors: dict[str, ConnectorTLS] = {}
        self.lookups = 0

    def put(self, tls: ConnectorTLS) -> None:
        self.connectors[tls.connector_id] = tls

    def remove(self, connector_id: str) -> None:
        self.connectors.pop(connector_id, None)

    def tls_for_server_name(self, server_name: str) -> ConnectorTLS | None:
        self.lookups += 1
        for zone in (f".m2.{self.base_domain}", f".devmode-m2.{self.base_domain}"):
            if server_name.endswith(zone):
                cid = server_name[: -len(zone)]
                if cid and "." not in cid:
                    return self.connectors.get(cid)
        return None

    def tls_for_connector(self, connector_id: str) -> ConnectorTLS | None:
        return self.connectors.get(connector_id)


class TestPKI:
    """A development PKI in ``root`` plus helpers to mint connector CAs and device certs."""

    __test__ = False  # not a pytest class

    def __init__(self, root: Path, base_domain: str = "localhost") -> None:
        self.root = root
        self.base_domain = base_domain
        self.dev: DevPKI = ensure_dev_pki(root / "tls", base_domain)
        self.ca_pem = Path(self.dev.ca_cert).read_text()
        self.ca_key_pem = Path(self.dev.ca_key).read_text()
        self._serial = 0

    def server_name(self, connector_id: str) -> str:
        return f"{connector_id}.m2.{self.base_domain}"

    def new_ca(self, name: str) -> tuple[str, str]:
        """A fresh connector CA ``(cert_pem, key_pem)``, also written to ``root/<name>.pem``."""
        cert, key = create_ca(name)
        (self.root / f"{name}.pem").write_text(cert)
        return cert, key

    def device(
        self,
        cn: str,
        *,
        ca: tuple[str, str] | None = None,
        expired: bool = False,
        not_before: _dt.datetime | None = None,
        not_after: _dt.datetime | None = None,
    ) -> DeviceCert:
        """A device certificate issued by ``ca`` (default: the development CA).

        ``expired=True`` issues one whose window ended a day ago.
        """
        ca_cert, ca_key = ca if ca is not None else (self.ca_pem, self.ca_key_pem)
        if expired:
            now = _dt.datetime.now(_dt.UTC)
            not_before, not_after = now - _dt.timedelta(days=30), now - _dt.timedelta(days=1)
        cert, key = issue_device_cert(
            ca_cert, ca_key, cn, not_before=not_before, not_after=not_after
        )
        self._serial += 1
        stem = self.root / f"device-{self._serial}-{cn}"
        cert_path, key_path = Path(f"{stem}.pem"), Path(f"{stem}.key")
        cert_path.write_text(cert)
        key_path.write_text(key)
        key_path.chmod(0o600)
        return DeviceCert(
            cn=cn, cert_pem=cert, key_pem=key, cert_path=str(cert_path), key_path=str(key_path)
        )
