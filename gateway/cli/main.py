"""The ``gateway`` command: ``serve`` plus the operator commands.

Operator commands talk to a running gateway through the management REST API (the same
contract the console and scripts use); ``serve`` and ``certs`` work on the data directory.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
import trio

from gateway import __version__
from gateway._impl import implementation

__all__ = ["main"]


def _version_message() -> str:
    return f"gateway {__version__} ({implementation()} hot path, Python {sys.version.split()[0]})"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, message=_version_message())
def cli() -> None:
    """Self-hosted IoT device gateway (Murano IoT Connector compatible)."""


@cli.command()
@click.option("--data", type=click.Path(file_okay=False), help="data directory [./var]")
@click.option(
    "--dev",
    is_flag=True,
    default=None,
    help="turn on plain HTTP (8080) and MQTT (1883) for the demo connector",
)
@click.option("--base-domain", help="connector FQDNs are <id>.m2.<base-domain> [localhost]")
@click.option("--host", help="address of the device listeners [0.0.0.0]")
@click.option("--tls-port", type=int, help="multi-protocol TLS port [8443]; -1 off, 0 any")
@click.option("--mqtt-tls-port", type=int, help="MQTT-only TLS port [8883]")
@click.option("--dev-http-port", type=int, help="dev mode plain HTTP port [8080]")
@click.option("--dev-mqtt-port", type=int, help="dev mode plain MQTT port [1883]")
@click.option("--api-host", help="management API address [127.0.0.1]")
@click.option("--api-port", type=int, help="management API port [9080]")
@click.option(
    "--synchronous",
    type=click.Choice(["FULL", "NORMAL"], case_sensitive=False),
    help="SQLite durability: FULL (power-loss safe, default) or NORMAL",
)
@click.option(
    "--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)
)
def serve(**flags: Any) -> None:
    """Run the gateway on its embedded defaults (SQLite, development CA, demo connector)."""
    from gateway.app import serve as run
    from gateway.config import load_config

    try:
        config = load_config(flags)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(run, config)
            p = info.ports
            out = [
                f"gateway {__version__} ({info.implementation}) ready; data in {info.data}",
                f"  management API   http://{config.api_host}:{p['api']}/api/v1/health",
                f"  admin token      {info.admin_token_file}",
                f"  development CA   {info.ca}",
            ]
            if info.demo_connector:
                fqdn = f"{info.demo_connector}.m2.{info.base_domain}"
                out.append(f"  demo connector   {info.demo_connector} ({fqdn})")
                if "tls" in p:
                    out.append(
                        f"  device HTTPS     https://{fqdn}:{p['tls']}/  (also MQTT by ALPN)"
                    )
                if "mqtt_tls" in p:
                    out.append(f"  device MQTT/TLS  mqtts://{fqdn}:{p['mqtt_tls']}")
                if "dev_http" in p:
                    dev = f"{info.demo_connector}.devmode-m2.{info.base_domain}"
                    out.append(f"  dev HTTP         http://{dev}:{p['dev_http']}/")
                if "dev_mqtt" in p:
                    out.append(f"  dev MQTT         mqtt://127.0.0.1:{p['dev_mqtt']}")
            click.echo("\n".join(out))

    trio.run(main)


def _mount_optional() -> None:
    """Attach the command groups that live beside their features."""
    from gateway.cli.certs import certs
    from gateway.cli.integration import integration
    from gateway.cli.ops import COMMANDS

    for command in (*COMMANDS, certs, integration):
        cli.add_command(command)


def main() -> None:
    _mount_optional()
    cli()
