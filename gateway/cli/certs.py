"""``gateway certs …``: the development CA and device certificates, offline.

Every command works on the data directory's development PKI (``DIR/tls``, created on first
use by :func:`gateway.tls.pki.ensure_dev_pki`, as ``gateway serve`` does) unless a CA is
given explicitly; no gateway needs to run.  The base domain (for the server certificate
created with a new PKI, and the ``server_name`` of a bundle) defaults to the data
directory's configuration (``DIR/gateway.toml``, ``GATEWAY_BASE_DOMAIN``), like ``serve``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from gateway.cli.context import Failed, Incomplete, Run, command_options, group_options
from gateway.tls.pki import ensure_dev_pki, fingerprint, issue_device_cert

__all__ = ["certs"]

F = TypeVar("F", bound=Callable[..., Any])
_BASE_DOMAIN = "gateway.cli.certs.base_domain"


def _remember_domain(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_root().meta[_BASE_DOMAIN] = value


def _base_domain_option(*, hidden: bool) -> Callable[[F], F]:
    return click.option(
        "--base-domain",
        expose_value=False,
        callback=_remember_domain,
        hidden=hidden,
        help="base domain of connector FQDNs (<id>.m2.<base>) [the data directory's]",
    )


def _base_domain(run: Run) -> str:
    given = click.get_current_context().find_root().meta.get(_BASE_DOMAIN)
    if given:
        return str(given)
    from gateway.config import load_config

    try:
        return load_config({"data": str(run.target.data)}).base_domain
    except ValueError as exc:
        raise Incomplete(str(exc)) from None


def _write(path: Path, text: str, *, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _dev_ca(run: Run) -> tuple[str, str, Path]:
    pki = ensure_dev_pki(run.target.data / "tls", _base_domain(run))
    return Path(pki.ca_cert).read_text(), Path(pki.ca_key).read_text(), Path(pki.ca_cert)


@click.group()
@group_options
@_base_domain_option(hidden=False)
def certs() -> None:
    """Development CA, device certificates and device bundles (offline)."""


@certs.command("show-ca")
@_base_domain_option(hidden=True)
@command_options
def show_ca(run: Run) -> None:
    """Print the development CA's path and PEM (what devices must trust)."""
    ca_pem, _, ca_path = _dev_ca(run)
    if run.json:
        run.out.emit_json({"ca": str(ca_path), "pem": ca_pem})
        return
    run.out.line(str(ca_path))
    run.out.write(ca_pem)


def _issue(
    run: Run, cn: str, ca_cert: str | None, ca_key: str | None, days: int
) -> tuple[str, str]:
    if (ca_cert is None) != (ca_key is None):
        raise Incomplete("--ca-cert and --ca-key go together")
    if ca_cert is not None and ca_key is not None:
        ca_pem, key_pem = Path(ca_cert).read_text(), Path(ca_key).read_text()
    else:
        ca_pem, key_pem, _ = _dev_ca(run)
    try:
        return issue_device_cert(ca_pem, key_pem, cn, days=days)
    except ValueError as exc:
        raise Failed(str(exc)) from exc


@certs.command("issue-device")
@click.option("--connector", "connector_id", required=True, help="connector id (for the hint)")
@click.option("--cn", required=True, help="device identity: the certificate's subject CN")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="output directory")
@click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--ca-key", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True)
@_base_domain_option(hidden=True)
@command_options
def issue_device(
    run: Run,
    connector_id: str,
    cn: str,
    out: str,
    ca_cert: str | None,
    ca_key: str | None,
    days: int,
) -> None:
    """Issue a client certificate for one device: OUT/<cn>.pem and OUT/<cn>.key (0600)."""
    cert_pem, key_pem = _issue(run, cn, ca_cert, ca_key, days)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / f"{cn}.pem", cert_pem, private=False)
    _write(out_dir / f"{cn}.key", key_pem, private=True)
    made = {
        "certificate": str(out_dir / f"{cn}.pem"),
        "key": str(out_dir / f"{cn}.key"),
        "sha256": fingerprint(cert_pem),
        "server_name": f"{connector_id}.m2.{_base_domain(run)}",
    }
    if run.json:
        run.out.emit_json(made)
    else:
        run.out.record(made)


@certs.command("bundle")
@click.option("--connector", "connector_id", required=True, help="connector id")
@click.option("--cn", required=True, help="device identity: the certificate's subject CN")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="output directory")
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True)
@_base_domain_option(hidden=True)
@command_options
def bundle(run: Run, connector_id: str, cn: str, out: str, days: int) -> None:
    """Everything a device needs: OUT/ca.pem (server trust), OUT/device.pem, OUT/device.key,
    OUT/server_name."""
    ca_pem, _, _ = _dev_ca(run)
    cert_pem, key_pem = _issue(run, cn, None, None, days)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    server_name = f"{connector_id}.m2.{_base_domain(run)}"
    _write(out_dir / "ca.pem", ca_pem, private=False)
    _write(out_dir / "device.pem", cert_pem, private=False)
    _write(out_dir / "device.key", key_pem, private=True)
    _write(out_dir / "server_name", server_name + "\n", private=False)
    if run.json:
        run.out.emit_json(
            {
                "directory": str(out_dir),
                "files": ["ca.pem", "device.pem", "device.key", "server_name"],
                "server_name": server_name,
                "sha256": fingerprint(cert_pem),
            }
        )
    else:
        run.out.line(str(out_dir))
