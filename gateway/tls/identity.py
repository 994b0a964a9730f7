"""Client certificate → identity claim.  Pure: no sockets, no clock, no trio.

The TLS layer asks every client for a certificate and accepts whatever arrives (the verify
callback returns True), because the stdlib and OpenSSL's own verification can only say
"chains to one of these CAs", while a connector may instead *pin* self-signed device
certificates (Murano's "without CA verification" mode, docs/protocol.md §5.3).  After the
handshake the front door calls :func:`claim_certificate` with the connector's CA (or none):

* with a CA: the leaf must be issued by it, directly or through one intermediate that the
  client presented and that the CA issued, and every certificate on that path must be inside
  its validity window at ``now`` → ``CertClaim(verified=True)``;
* without a CA: the certificate is taken at face value (validity is still enforced) →
  ``CertClaim(verified=False)``; the provisioning service compares the fingerprint with the
  one it stored (pinning).

Either way the subject CN is the device identity and must be present.  Failures raise
:class:`gateway.errors.Refused` with a debug-log reason: ``expired`` (outside the validity
window, either side), ``untrusted_certificate`` (not issued by the connector's CA) or
``bad_certificate`` (no CN, unparsable CA).  "No certificate although the connector wants
one" is not decided here: the claim is simply ``None`` and the auth layer decides.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from gateway.errors import Refused
from gateway.model import CertClaim

__all__ = [
    "REASON_BAD_CERTIFICATE",
    "REASON_EXPIRED",
    "REASON_UNTRUSTED",
    "claim_certificate",
    "parse_ca_bundle",
]

REASON_EXPIRED = "expired"
REASON_UNTRUSTED = "untrusted_certificate"
REASON_BAD_CERTIFICATE = "bad_certificate"


def parse_ca_bundle(ca_pem: str) -> list[x509.Certificate]:
    """The CA certificates of a connector's ``client_ca`` setting (one or more PEM blocks).

    Raises ``Refused(reason="bad_certificate")`` when the text holds no certificate: a broken
    CA setting must refuse clients, never silently admit them unverified.
    """
    try:
        return x509.load_pem_x509_certificates(ca_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise Refused(
            "connector client CA is not a PEM certificate", reason=REASON_BAD_CERTIFICATE
        ) from exc


def _common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    cn = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if not cn:
        raise Refused("client certificate has no subject CN", reason=REASON_BAD_CERTIFICATE)
    return cn


def _check_validity(cert: x509.Certificate, now: _dt.datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise Refused(
            f"{what} is outside its validity window "
            f"({cert.not_valid_before_utc.isoformat()} .. {cert.not_valid_after_utc.isoformat()})",
            reason=REASON_EXPIRED,
        )


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Issuer name matches and the signature verifies with the parent's key."""
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _trust_path(
    leaf: x509.Certificate,
    presented: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
) -> list[x509.Certificate] | None:
    """The path ``[leaf, (intermediate,) anchor]`` or None.  One intermediate at most."""
    for anchor in anchors:
        if _issued_by(leaf, anchor):
            return [leaf, anchor]
    for intermediate in presented:
        if intermediate == leaf or not _is_ca(intermediate) or not _issued_by(leaf, intermediate):
            continue
        for anchor in anchors:
            if _issued_by(intermediate, anchor):
                return [leaf, intermediate, anchor]
    return None


def claim_certificate(
    leaf: x509.Certificate,
    presented: Sequence[x509.Certificate],
    *,
    client_ca_pem: str | None,
    now: _dt.datetime,
) -> CertClaim:
    """Decide what ``leaf`` (with the extra certificates the client sent) proves.

    ``now`` must be timezone-aware (UTC).  Returns a verified claim when ``client_ca_pem`` is
    set and the path checks out, an unverified (to-be-pinned) claim when it is None.  Raises
    ``Refused`` with the reasons listed in the module docstring; never returns a claim for a
    certificate that failed a check.
    """
    cn = _common_name(leaf)
    der = leaf.public_bytes(serialization.Encoding.DER)
    pem = leaf.public_bytes(serialization.Encoding.PEM).decode("ascii")
    digest = hashlib.sha256(der).hexdigest()
    if client_ca_pem is None:
        _check_validity(leaf, now, "client certificate")
        return CertClaim(cn=cn, fingerprint=digest, verified=False, pem=pem)
    anchors = parse_ca_bundle(client_ca_pem)
    path = _trust_path(leaf, presented, anchors)
    if path is None:
        raise Refused(
            f"client certificate CN={cn!r} was not issued by the connector's CA",
            reason=REASON_UNTRUSTED,
        )
    for position, cert in enumerate(path):
        _check_validity(cert, now, "client certificate" if position == 0 else "issuing CA")
    return CertClaim(cn=cn, fingerprint=digest, verified=True, pem=pem)
