"""``gateway serve``: run the gateway in this process.

Every flag maps one-to-one onto a field of :class:`gateway.config.GatewayConfig` (flags given
override ``GATEWAY_<FIELD>`` and ``DIR/gateway.toml``, docs in README "Configuration").  To add
one, add a field there and one ``click.option`` here whose parameter name is the field's name;
nothing else changes.
"""

from __future__ import annotations

import logging
from typing import Any

import click
import trio

from gateway import __version__
from gateway.cli.context import settings

__all__ = ["serve"]


@click.command()
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
@click.pass_context
def serve(ctx: click.Context, /, **flags: Any) -> None:
    """Run the gateway on its embedded defaults (SQLite, development CA, demo connector)."""
    from gateway.app import serve as run
    from gateway.config import load_config

    if flags.get("data") is None:
        flags["data"] = settings(ctx).data  # `gateway --data DIR serve`
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
                f"  web console      http://{config.api_host}:{p['api']}/",
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
            out.append(f"  operator CLI     gateway status --data {info.data}")
            click.echo("\n".join(out))

    trio.run(main)
