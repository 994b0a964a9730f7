"""``gateway serve``: run the gateway, as one process (``--workers 1``) or as a node of
processes (``gateway/node/supervisor.py``).

Every flag maps one-to-one onto a field of :class:`gateway.config.GatewayConfig` (flags given
override ``GATEWAY_<FIELD>`` and ``DIR/gateway.toml``, docs in README "Configuration").  To add
one, add a field there and one ``click.option`` here whose parameter name is the field's name;
nothing else changes.
"""

from __future__ import annotations

import logging
import os
import re
from functools import partial
from typing import TYPE_CHECKING, Any

import click
import trio

from gateway import __version__
from gateway.cli.context import settings

if TYPE_CHECKING:
    from gateway.app import RunInfo
    from gateway.config import GatewayConfig

__all__ = ["serve"]


def _workers(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    if value == "auto":
        return 0
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise click.BadParameter("auto or a number of processes (1 or more)")
    return n


@click.command()
@click.option("--data", type=click.Path(file_okay=False), help="data directory [./var]")
@click.option(
    "--dev",
    is_flag=True,
    default=None,
    help="turn on plain HTTP (8080) and MQTT (1883) for the demo connector",
)
@click.option("--base-domain", help="connector FQDNs are <id>.m2.<base-domain> [localhost]")
@click.option(
    "--host",
    help="addresses of the device listeners, comma-separated; :: for IPv6 and IPv4 [0.0.0.0]",
)
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
    "--store",
    metavar="URL",
    help="postgresql://user@host/db for the PostgreSQL store (several nodes may share it) "
    "[SQLite in the data directory]",
)
@click.option(
    "--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)
)
@click.option(
    "--workers",
    callback=_workers,
    help="device-serving processes: auto (one per CPU, and enough for --max-connections), "
    "or N; 1 runs everything in one process [auto]",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    help="device connections the node is sized for [40000]",
)
@click.option(
    "--bus",
    help="nats://HOST:PORT: run as a node of a cluster, telling the other nodes over NATS "
    "JetStream (docs/scale.md) [the node's own]",
)
@click.option("--node-name", help="this node's name in a cluster [host name and data dir]")
@click.option(
    "--proxy-protocol",
    metavar="LISTENERS",
    help="listeners that read a PROXY protocol v1/v2 header first: tls, mqtt_tls, dev_http, "
    "dev_mqtt (comma-separated) or all [none]",
)
@click.option(
    "--proxy-trusted",
    metavar="CIDRS",
    help="addresses or networks of the proxies allowed to send a PROXY header, comma-separated",
)
@click.option(
    "--proxy-required/--proxy-optional",
    default=None,
    help="a connection from a trusted proxy without a PROXY header is refused [required]",
)
@click.pass_context
def serve(ctx: click.Context, /, **flags: Any) -> None:
    """Run the gateway on its embedded defaults (SQLite, development CA, demo connector)."""
    from gateway.config import load_config, resolve_workers

    if flags.get("data") is None:
        flags["data"] = settings(ctx).data  # `gateway --data DIR serve`
    try:
        config = load_config(flags)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if config.bus and not config.bus.startswith(("nats://", "tls://")):
        raise click.UsageError(f"--bus {config.bus}: expected nats://HOST:PORT")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", config.node):
        raise click.UsageError("--node-name: 1 to 64 letters, digits, '-' or '_'")
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from gateway.app import cannot_start
    from gateway.frontdoor.bind import BindError
    from gateway.node.lock import DataDirLocked
    from gateway.node.supervisor import StartFailed

    workers = resolve_workers(config)
    try:
        if workers == 1:
            _serve_one(config)
            code = 0
        else:
            from gateway.node.supervisor import run_node

            code = run_node(config, workers, _announce)
    except (DataDirLocked, BindError) as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(1)
    except StartFailed as exc:  # the store owner's one line (a full disk)
        click.echo(str(exc), err=True)
        ctx.exit(1)
    except BaseException as exc:  # re-raised unless a full disk cut the start short
        line = cannot_start(exc, config.data_dir)
        if line is None:
            raise
        click.echo(line, err=True)  # docs/decisions.md "Disk full"
        ctx.exit(1)
    ctx.exit(code)


def _serve_one(config: GatewayConfig) -> None:
    """Everything in this process (``--workers 1``): the lock and the sockets first, so
    their errors are one line, then the Trio gateway (``gateway/app.py``)."""
    from gateway.app import serve as run
    from gateway.frontdoor.bind import bind_sockets
    from gateway.node.lock import lock_data_dir
    from gateway.node.supervisor import raise_fd_limit

    lock_fd = lock_data_dir(config.data_dir)
    raise_fd_limit()
    sockets = bind_sockets(config)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(partial(run, sockets=sockets), config)
            _announce(info)

    try:
        trio.run(main)
    finally:
        sockets.close()
        os.close(lock_fd)


def _announce(info: RunInfo) -> None:
    """The lines ``gateway serve`` prints once it serves."""
    from gateway.addresses import format_hostport

    p = info.ports
    api = f"http://{format_hostport(info.api_host, p['api'])}"
    out = [
        f"gateway {__version__} ({info.implementation}) ready; data in {info.data}",
        f"  management API   {api}/api/v1/health",
        f"  web console      {api}/",
        f"  admin token      {info.admin_token_file}",
        f"  development CA   {info.ca}",
    ]
    if info.demo_connector:
        fqdn = f"{info.demo_connector}.m2.{info.base_domain}"
        out.append(f"  demo connector   {info.demo_connector} ({fqdn})")
        if "tls" in p:
            out.append(f"  device HTTPS     https://{fqdn}:{p['tls']}/  (also MQTT by ALPN)")
        if "mqtt_tls" in p:
            out.append(f"  device MQTT/TLS  mqtts://{fqdn}:{p['mqtt_tls']}")
        if "dev_http" in p:
            dev = f"{info.demo_connector}.devmode-m2.{info.base_domain}"
            out.append(f"  dev HTTP         http://{dev}:{p['dev_http']}/")
        if "dev_mqtt" in p:
            out.append(f"  dev MQTT         mqtt://127.0.0.1:{p['dev_mqtt']}")
    if info.processes:
        workers = [c.pid for c in info.processes if c.role == "worker"]
        owner = next(c.pid for c in info.processes if c.role == "store")
        out.append(
            f"  processes        supervisor {info.pid}, store owner {owner}, "
            f"{len(workers)} workers ({', '.join(map(str, workers))})"
        )
    out.append(f"  operator CLI     gateway status --data {info.data}")
    click.echo("\n".join(out))
