"""Development PKI creation, reuse and the certs CLI (gateway/tls/pki.py, gateway/cli/certs.py)."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.cli.certs import certs
from gateway.tls.pki import (
    create_ca,
    ensure_dev_pki,
    fingerprint,
    issue_server_cert,
    load_pem_chain,
)


def test_dev_pki_created_then_reused(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path / "tls", "example.org")
    for key in (pki.ca_key, pki.server_key):
        assert stat.S_IMODE(Path(key).stat().st_mode) == 0o600
    chain = load_pem_chain(Path(pki.server_cert).read_text())
    ca = load_pem_chain(Path(pki.ca_cert).read_text())[0]
    assert len(chain) == 2
    assert chain[1] == ca
    leaf = chain[0]
    leaf.verify_directly_issued_by(ca)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {
        "*.m2.example.org",
        "*.devmode-m2.example.org",
        "m2.example.org",
        "localhost",
    }
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650
    before = {p: Path(p).read_bytes() for p in (pki.ca_cert, pki.server_cert, pki.server_key)}
    again = ensure_dev_pki(tmp_path / "tls", "example.org")
    assert again == pki
    assert {p: Path(p).read_bytes() for p in before} == before
    # a new base domain reissues the server certificate but keeps the CA devices trust
    ensure_dev_pki(tmp_path / "tls", "other.net")
    assert Path(pki.ca_cert).read_bytes() == before[pki.ca_cert]
    assert Path(pki.server_cert).read_bytes() != before[pki.server_cert]


def test_an_operator_certificate_is_never_overwritten(tmp_path: Path) -> None:
    """docs/deployment.md "Certificates": replacing server.pem with a certificate from
    another CA (a public one) survives restarts, whatever its names or remaining days."""
    pki = ensure_dev_pki(tmp_path / "tls", "example.org")
    public_ca = create_ca("Some public CA", organization="Public Trust Inc.")
    chain, key = issue_server_cert(*public_ca, ["*.m2.example.org"], days=10)
    Path(pki.server_cert).write_text(chain)
    Path(pki.server_key).write_text(key)
    ensure_dev_pki(tmp_path / "tls", "other.net")
    assert Path(pki.server_cert).read_text() == chain
    assert Path(pki.server_key).read_text() == key


def test_fingerprint_accepts_pem_and_der(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path, "localhost")
    pem = Path(pki.ca_cert).read_text()
    cert = load_pem_chain(pem)[0]
    from cryptography.hazmat.primitives import serialization

    der = cert.public_bytes(serialization.Encoding.DER)
    assert fingerprint(pem) == fingerprint(pem.encode()) == fingerprint(der) == fingerprint(cert)
    assert len(fingerprint(der)) == 64


def test_cli_show_issue_bundle(tmp_path: Path) -> None:
    runner = CliRunner()
    data = str(tmp_path / "var")
    shown = runner.invoke(certs, ["--data", data, "show-ca"])
    assert shown.exit_code == 0, shown.output
    ca_path = Path(data) / "tls" / "ca.pem"
    assert shown.output.startswith(f"{ca_path}\n-----BEGIN CERTIFICATE-----")
    out = tmp_path / "out"
    issued = runner.invoke(
        certs,
        ["--data", data, "issue-device", "--connector", "c1", "--cn", "dev-1", "--out", str(out)],
    )
    assert issued.exit_code == 0, issued.output
    cert = load_pem_chain((out / "dev-1.pem").read_text())[0]
    cert.verify_directly_issued_by(load_pem_chain(ca_path.read_text())[0])
    assert stat.S_IMODE((out / "dev-1.key").stat().st_mode) == 0o600
    assert fingerprint(cert) in issued.output
    # explicit CA
    other = runner.invoke(
        certs,
        [
            "--data",
            data,
            "issue-device",
            "--connector",
            "c1",
            "--cn",
            "dev-2",
            "--out",
            str(out),
            "--ca-cert",
            str(out / "dev-1.pem"),
            "--ca-key",
            str(out / "dev-1.key"),
            "--days",
            "3",
        ],
    )
    assert other.exit_code == 0, other.output
    cert2 = load_pem_chain((out / "dev-2.pem").read_text())[0]
    assert cert2.issuer == cert.subject
    half = runner.invoke(
        certs,
        [
            "--data",
            data,
            "issue-device",
            "--connector",
            "c1",
            "--cn",
            "x",
            "--out",
            str(out),
            "--ca-cert",
            str(out / "dev-1.pem"),
        ],
    )
    assert half.exit_code != 0
    bundle = tmp_path / "bundle"
    made = runner.invoke(
        certs,
        ["--data", data, "bundle", "--connector", "c1", "--cn", "dev-3", "--out", str(bundle)],
    )
    assert made.exit_code == 0, made.output
    assert (bundle / "ca.pem").read_text() == ca_path.read_text()
    assert (bundle / "server_name").read_text() == "c1.m2.localhost\n"
    assert (
        load_pem_chain((bundle / "device.pem").read_text())[0].subject.rfc4514_string()
        == "CN=dev-3"
    )
