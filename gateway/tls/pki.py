"""Development PKI: the CA and wildcard server certificate a fresh gateway serves with.

A gateway started on an empty data directory must speak TLS at once, so the first start
creates ``DIR/tls/ca.pem`` (the development CA that devices trust) and a server certificate
for every connector FQDN under the base domain.  Nothing here is secret-grade operations
tooling; production deployments replace ``server.pem``/``server.key`` with a publicly
trusted wildcard certificate and send the gateway SIGHUP (or ``POST /api/v1/tls/reload``),
which makes new handshakes use it (``ServerContexts.reload_server_cert``).

Keys are ECDSA P-256: the smallest, fastest handshake signature every TLS 1.2 device stack
supports (mbedTLS, wolfSSL, BearSSL, OpenSSL).  Private keys are written mode 0600 through a
temporary file and an atomic rename, so a crash never leaves a half-written key behind.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import ipaddress
import os
from pathlib import Path

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.datadir import write_file_atomic

__all__ = [
    "CA_VALIDITY_DAYS",
    "SERVER_VALIDITY_DAYS",
    "CertificateInfo",
    "DevPKI",
    "certificate_info",
    "create_ca",
    "ensure_dev_pki",
    "fingerprint",
    "issue_device_cert",
    "issue_server_cert",
    "load_pem_chain",
    "server_names",
]

_DEV_ORGANIZATION = "IoT Gateway development PKI"  # O= of every development CA we create
CA_VALIDITY_DAYS = 3650  # the development CA lives ten years: devices pin it in firmware
SERVER_VALIDITY_DAYS = 825  # the longest leaf validity clients (Apple, Chrome) still accept
_BACKDATE = _dt.timedelta(minutes=5)  # tolerate device clocks slightly behind ours


class DevPKI(msgspec.Struct, frozen=True):
    """Paths of the development PKI files inside the data directory's ``tls/`` folder.

    ``server_cert`` holds the leaf followed by the CA (the chain a server must send).
    """

    tls_dir: str
    ca_cert: str
    ca_key: str
    server_cert: str
    server_key: str


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode("ascii") if isinstance(data, str) else data


def load_pem_chain(pem: str | bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in file order (leaf first by convention).

    Raises ``ValueError`` when the text holds no certificate.
    """
    return x509.load_pem_x509_certificates(_as_bytes(pem))


def fingerprint(cert_pem_or_der: str | bytes | x509.Certificate) -> str:
    """Hex SHA-256 of the DER encoding of the (first) certificate: the pinning key.

    Accepts PEM text, PEM bytes, DER bytes or a parsed certificate.
    """
    if isinstance(cert_pem_or_der, x509.Certificate):
        der = cert_pem_or_der.public_bytes(serialization.Encoding.DER)
    else:
        raw = _as_bytes(cert_pem_or_der)
        if raw.lstrip().startswith(b"-----BEGIN"):
            der = load_pem_chain(raw)[0].public_bytes(serialization.Encoding.DER)
        else:
            der = raw
    return hashlib.sha256(der).hexdigest()


class CertificateInfo(msgspec.Struct, frozen=True):
    """What an operator (and ``/metrics``) needs to know about a served certificate chain."""

    subject: str  # the leaf's subject, RFC 4514 text
    dns_names: list[str]  # the leaf's DNS subjectAltNames
    fingerprint: str  # hex SHA-256 of the leaf's DER (:func:`fingerprint`)
    not_before: int  # Unix seconds, the leaf's notBefore
    not_after: int  # Unix seconds: the earliest notAfter in the chain, when it stops working


@functools.lru_cache(maxsize=256)
def certificate_info(chain_pem: str) -> CertificateInfo:
    """Describe a PEM chain (leaf first).  Cached by text: ``/metrics`` asks at every scrape
    for certificates that change rarely.  Raises ``ValueError`` when it holds no
    certificate."""
    chain = load_pem_chain(chain_pem)
    leaf = chain[0]
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = list(sans.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = []
    return CertificateInfo(
        subject=leaf.subject.rfc4514_string(),
        dns_names=names,
        fingerprint=fingerprint(leaf),
        not_before=int(leaf.not_valid_before_utc.timestamp()),
        not_after=int(min(c.not_valid_after_utc for c in chain).timestamp()),
    )


def create_ca(
    name: str, *, days: int = CA_VALIDITY_DAYS, organization: str = _DEV_ORGANIZATION
) -> tuple[str, str]:
    """A self-signed ECDSA P-256 CA: ``(cert_pem, key_pem)``.

    Path length 1 so that a connector CA may delegate to one intermediate.  Certificates of
    the ``organization`` of the development PKI (the default) are the gateway's to replace
    (:func:`ensure_dev_pki`); tests pass another to stand in for a public CA.
    """
    key = _new_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)


def _load_ca(
    ca_cert_pem: str | bytes, ca_key_pem: str | bytes
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert = load_pem_chain(ca_cert_pem)[0]
    ca_key = serialization.load_pem_private_key(_as_bytes(ca_key_pem), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an ECDSA key")
    return ca_cert, ca_key


def _leaf_builder(
    ca_cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    cn: str,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
    usage: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )


def issue_device_cert(
    ca_cert_pem: str | bytes,
    ca_key_pem: str | bytes,
    cn: str,
    *,
    days: int = 365,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
) -> tuple[str, str]:
    """A TLS client certificate for one device, subject ``CN=<cn>``: ``(cert_pem, key_pem)``.

    ``not_before``/``not_after`` override the validity window (tests issue expired and
    not-yet-valid certificates with them); otherwise it runs ``days`` from now.
    """
    if not cn:
        raise ValueError("a device certificate needs a CN (the device identity)")
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    key = _new_key()
    start = not_before if not_before is not None else _now() - _BACKDATE
    end = not_after if not_after is not None else start + _dt.timedelta(days=days)
    builder = _leaf_builder(ca_cert, key, cn, start, end, ExtendedKeyUsageOID.CLIENT_AUTH)
    cert = builder.sign(ca_key, hashes.SHA256())
    return _cert_pem(cert), _key_pem(key)


def server_names(base_domain: str) -> list[str]:
    """The DNS names the gateway's wildcard certificate covers (connectors are tenants:
    docs/architecture.md principle 4)."""
    return [f"*.m2.{base_domain}", f"*.devmode-m2.{base_domain}", f"m2.{base_domain}", "localhost"]


def issue_server_cert(
    ca_cert_pem: str | bytes,
    ca_key_pem: str | bytes,
    dns_names: list[str],
    *,
    ip_addresses: tuple[str, ...] = ("127.0.0.1",),
    days: int = SERVER_VALIDITY_DAYS,
) -> tuple[str, str]:
    """A server certificate ``(chain_pem, key_pem)``; the chain is leaf + CA certificate."""
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    key = _new_key()
    start = _now() - _BACKDATE
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    builder = _leaf_builder(
        ca_cert,
        key,
        dns_names[0],
        start,
        start + _dt.timedelta(days=days),
        ExtendedKeyUsageOID.SERVER_AUTH,
    ).add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return _cert_pem(cert) + _cert_pem(ca_cert), _key_pem(key)


def _write(path: Path, text: str, *, private: bool) -> None:
    """Whole or not at all; private files are created 0600 before any byte lands in them.
    A full disk raises ``OSError`` (``ENOSPC``) and leaves no temporary file."""
    write_file_atomic(path, text.encode("ascii"), mode=0o600 if private else 0o644)


def _operator_certificate(leaf: x509.Certificate) -> bool:
    """Whether ``leaf`` was put there by an operator (issued by anything but a development
    CA of ours): then it is theirs to renew, and never overwritten."""
    return not any(
        attr.value == _DEV_ORGANIZATION
        for attr in leaf.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    )


def _server_cert_usable(pki: DevPKI, base_domain: str, ca_pem: str) -> bool:
    """Reuse the server certificate while it is valid, names this base domain and was
    signed by the current CA; anything else (a changed ``--base-domain``, a new CA) reissues.
    A certificate an operator installed (:func:`_operator_certificate`) is always kept."""
    if not (os.path.exists(pki.server_cert) and os.path.exists(pki.server_key)):
        return False
    try:
        chain = load_pem_chain(Path(pki.server_cert).read_text())
        ca = load_pem_chain(ca_pem)[0]
        leaf = chain[0]
        if _operator_certificate(leaf):
            return True
        leaf.verify_directly_issued_by(ca)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    wanted = set(server_names(base_domain))
    now = _now()
    return wanted <= set(names.get_values_for_type(x509.DNSName)) and (
        leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc - _dt.timedelta(days=30)
    )


def ensure_dev_pki(tls_dir: Path, base_domain: str) -> DevPKI:
    """Create (first call) or reuse the development CA and wildcard server certificate.

    Files: ``ca.pem``, ``ca.key``, ``server.pem`` (leaf + CA), ``server.key``; keys 0600.
    The CA is never replaced once it exists (devices trust it); the server certificate is
    reissued when it no longer fits (see :func:`_server_cert_usable`), unless an operator
    replaced it with one from another CA: that one is theirs and stays.
    """
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # holds the private keys
    pki = DevPKI(
        tls_dir=str(tls_dir),
        ca_cert=str(tls_dir / "ca.pem"),
        ca_key=str(tls_dir / "ca.key"),
        server_cert=str(tls_dir / "server.pem"),
        server_key=str(tls_dir / "server.key"),
    )
    if not (os.path.exists(pki.ca_cert) and os.path.exists(pki.ca_key)):
        ca_pem, ca_key = create_ca(f"IoT Gateway development CA ({base_domain})")
        _write(Path(pki.ca_key), ca_key, private=True)
        _write(Path(pki.ca_cert), ca_pem, private=False)
    ca_pem = Path(pki.ca_cert).read_text()
    if not _server_cert_usable(pki, base_domain, ca_pem):
        chain, key = issue_server_cert(
            ca_pem, Path(pki.ca_key).read_text(), server_names(base_domain)
        )
        _write(Path(pki.server_key), key, private=True)
        _write(Path(pki.server_cert), chain, private=False)
    return pki
