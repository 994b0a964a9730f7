"""``gateway certs ...``: the development CA and device certificates from the command line.

The lead mounts :data:`certs` under the main CLI.  Every command works on the data
directory's development PKI (``DIR/tls``, created on first use by
:func:`gateway.tls.pki.ensure_dev_pki`) unless a CA is given explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from gateway.tls.pki import ensure_dev_pki, fingerprint, issue_device_cert

__all__ = ["certs"]


def _tls_dir(data: str) -> Path:
    return Path(data) / "tls"


def _write(path: Path, text: str, *, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _dev_ca(data: str, base_domain: str) -> tuple[str, str, Path]:
    pki = ensure_dev_pki(_tls_dir(data), base_domain)
    return Path(pki.ca_cert).read_text(), Path(pki.ca_key).read_text(), Path(pki.ca_cert)


@click.group()
@click.option("--data", default="./var", show_default=True, help="Gateway data directory.")
@click.option(
    "--base-domain",
    default="localhost",
    show_default=True,
    help="Base domain of connector FQDNs (<id>.m2.<base>), used when the PKI is first created.",
)
@click.pass_context
def certs(ctx: click.Context, data: str, base_domain: str) -> None:
    """Development CA, device certificates and device bundles."""
    ctx.obj = {"data": data, "base_domain": base_domain}


@certs.command("show-ca")
@click.pass_obj
def show_ca(obj: dict[str, str]) -> None:
    """Print the development CA's path and PEM (what devices must trust)."""
    ca_pem, _, ca_path = _dev_ca(obj["data"], obj["base_domain"])
    click.echo(str(ca_path))
    click.echo(ca_pem, nl=False)


def _issue(
    obj: dict[str, str], cn: str, ca_cert: str | None, ca_key: str | None, days: int
) -> tuple[str, str]:
    if (ca_cert is None) != (ca_key is None):
        raise click.UsageError("--ca-cert and --ca-key go together")
    if ca_cert is not None and ca_key is not None:
        ca_pem, key_pem = Path(ca_cert).read_text(), Path(ca_key).read_text()
    else:
        ca_pem, key_pem, _ = _dev_ca(obj["data"], obj["base_domain"])
    try:
        return issue_device_cert(ca_pem, key_pem, cn, days=days)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@certs.command("issue-device")
@click.option("--connector", "connector_id", required=True, help="Connector id (for the hint).")
@click.option("--cn", required=True, help="Device identity: the certificate's subject CN.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory.")
@click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--ca-key", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True)
@click.pass_obj
def issue_device(
    obj: dict[str, str],
    connector_id: str,
    cn: str,
    out: str,
    ca_cert: str | None,
    ca_key: str | None,
    days: int,
) -> None:
    """Issue a client certificate for one device: OUT/<cn>.pem and OUT/<cn>.key (0600)."""
    cert_pem, key_pem = _issue(obj, cn, ca_cert, ca_key, days)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / f"{cn}.pem", cert_pem, private=False)
    _write(out_dir / f"{cn}.key", key_pem, private=True)
    click.echo(f"certificate: {out_dir / f'{cn}.pem'}")
    click.echo(f"key:         {out_dir / f'{cn}.key'}")
    click.echo(f"sha256:      {fingerprint(cert_pem)}")
    click.echo(f"connect to:  {connector_id}.m2.{obj['base_domain']}")


@certs.command("bundle")
@click.option("--connector", "connector_id", required=True, help="Connector id.")
@click.option("--cn", required=True, help="Device identity: the certificate's subject CN.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory.")
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True)
@click.pass_obj
def bundle(obj: dict[str, str], connector_id: str, cn: str, out: str, days: int) -> None:
    """Everything a device needs: OUT/ca.pem (server trust), OUT/device.pem, OUT/device.key."""
    ca_pem, _, _ = _dev_ca(obj["data"], obj["base_domain"])
    cert_pem, key_pem = _issue(obj, cn, None, None, days)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / "ca.pem", ca_pem, private=False)
    _write(out_dir / "device.pem", cert_pem, private=False)
    _write(out_dir / "device.key", key_pem, private=True)
    _write(out_dir / "server_name", f"{connector_id}.m2.{obj['base_domain']}\n", private=False)
    click.echo(str(out_dir))
