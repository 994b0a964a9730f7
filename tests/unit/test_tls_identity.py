"""Certificate → claim decisions (gateway/tls/identity.py), pure: no sockets, clock passed in."""

from __future__ import annotations

import datetime as _dt

import pytest
from cryptography import x509

from gateway.errors import Refused
from gateway.tls.identity import claim_certificate
from gateway.tls.pki import create_ca, fingerprint, issue_device_cert


def _now() -> _dt.datetime:
    """The clock at the moment of the check (the CA fixture is made when the first test runs,
    which can be minutes after import in a full run)."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0)


def load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


@pytest.fixture(scope="module")
def ca() -> tuple[str, str]:
    return create_ca("connector CA")


def test_ca_issued_certificate_is_verified(ca: tuple[str, str]) -> None:
    cert, _ = issue_device_cert(*ca, "dev-1")
    claim = claim_certificate(load(cert), [], client_ca_pem=ca[0], now=_now())
    assert (claim.cn, claim.verified) == ("dev-1", True)
    assert claim.fingerprint == fingerprint(cert)
    assert claim.pem == cert


def test_without_ca_claim_is_unverified(ca: tuple[str, str]) -> None:
    cert, _ = issue_device_cert(*ca, "dev-2")
    claim = claim_certificate(load(cert), [], client_ca_pem=None, now=_now())
    assert (claim.cn, claim.verified) == ("dev-2", False)


def test_other_ca_refused(ca: tuple[str, str]) -> None:
    cert, _ = issue_device_cert(*create_ca("stranger"), "dev-3")
    with pytest.raises(Refused) as info:
        claim_certificate(load(cert), [], client_ca_pem=ca[0], now=_now())
    assert info.value.reason == "untrusted_certificate"


def test_same_name_different_key_refused(ca: tuple[str, str]) -> None:
    """A forged CA with the same subject name: issuer names match, signature does not."""
    forged = create_ca("connector CA")
    cert, _ = issue_device_cert(*forged, "dev-4")
    with pytest.raises(Refused) as info:
        claim_certificate(load(cert), [], client_ca_pem=ca[0], now=_now())
    assert info.value.reason == "untrusted_certificate"


@pytest.mark.parametrize("with_ca", [True, False])
@pytest.mark.parametrize(
    ("start", "end", "ok"),
    [
        (-_dt.timedelta(days=2), -_dt.timedelta(seconds=1), False),  # expired
        (_dt.timedelta(seconds=1), _dt.timedelta(days=2), False),  # not yet valid
        (-_dt.timedelta(days=1), _dt.timedelta(0), True),  # boundary: still valid at not_after
    ],
)
def test_validity_window(
    ca: tuple[str, str], with_ca: bool, start: _dt.timedelta, end: _dt.timedelta, ok: bool
) -> None:
    now = _now()
    cert, _ = issue_device_cert(*ca, "dev-5", not_before=now + start, not_after=now + end)
    ca_pem = ca[0] if with_ca else None
    if ok:
        assert claim_certificate(load(cert), [], client_ca_pem=ca_pem, now=now).cn == "dev-5"
    else:
        with pytest.raises(Refused) as info:
            claim_certificate(load(cert), [], client_ca_pem=ca_pem, now=now)
        assert info.value.reason == "expired"


def test_one_intermediate_is_followed(ca: tuple[str, str]) -> None:
    # an intermediate CA certificate issued by the root (CA=true), then a leaf under it
    inter_cert, inter_key = create_ca("intermediate")
    inter = load(inter_cert)
    # re-issue the intermediate's certificate under the root, keeping its key
    from cryptography.hazmat.primitives import hashes, serialization

    root_key = serialization.load_pem_private_key(ca[1].encode(), None)
    inter_key_obj = serialization.load_pem_private_key(inter_key.encode(), None)
    signed = (
        x509.CertificateBuilder()
        .subject_name(inter.subject)
        .issuer_name(load(ca[0]).subject)
        .public_key(inter_key_obj.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - _dt.timedelta(days=1))
        .not_valid_after(_now() + _dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            inter.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value,
            critical=False,
        )
        .sign(root_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    signed_pem = signed.public_bytes(serialization.Encoding.PEM).decode()
    leaf, _ = issue_device_cert(signed_pem, inter_key, "dev-6")
    claim = claim_certificate(load(leaf), [load(leaf), signed], client_ca_pem=ca[0], now=_now())
    assert (claim.cn, claim.verified) == ("dev-6", True)
    with pytest.raises(Refused):  # without the intermediate the path is incomplete
        claim_certificate(load(leaf), [], client_ca_pem=ca[0], now=_now())


def test_missing_cn_refused(ca: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        issue_device_cert(*ca, "")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "no cn")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(_now() - _dt.timedelta(days=1))
        .not_valid_after(_now() + _dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    assert cert.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(Refused) as info:
        claim_certificate(cert, [], client_ca_pem=None, now=_now())
    assert info.value.reason == "bad_certificate"


def test_broken_ca_setting_refuses(ca: tuple[str, str]) -> None:
    cert, _ = issue_device_cert(*ca, "dev-7")
    with pytest.raises(Refused) as info:
        claim_certificate(load(cert), [], client_ca_pem="not a pem", now=_now())
    assert info.value.reason == "bad_certificate"


def test_identity_module_is_sans_io() -> None:
    import ast
    import inspect

    import gateway.tls.identity as module

    tree = ast.parse(inspect.getsource(module))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert not imported & {"trio", "time", "socket", "sqlite3", "OpenSSL", "ssl"}
