"""The ``gateway`` command: ``serve`` plus the operator commands.

``serve`` runs the gateway in this process; ``certs`` works on the data directory's
development PKI; every other command talks to a running gateway through the management REST
API (:mod:`gateway.cli.client`, the same contract as the web console and scripts), never to
its database.  The options every command shares are described in :mod:`gateway.cli.context`.
"""

from __future__ import annotations

import sys

import click

from gateway import __version__
from gateway._impl import implementation
from gateway.cli.certs import certs
from gateway.cli.connectors import connector, resource
from gateway.cli.content import content
from gateway.cli.context import root_options
from gateway.cli.devices import device, state
from gateway.cli.events import events, logs, token
from gateway.cli.integration import integration
from gateway.cli.serve import serve
from gateway.cli.status import status

__all__ = ["cli", "main"]


def _version_message() -> str:
    return f"gateway {__version__} ({implementation()} hot path, Python {sys.version.split()[0]})"


@click.group(
    "gateway", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, message=_version_message())
@root_options
def cli() -> None:
    """Self-hosted IoT device gateway (Murano IoT Connector compatible).

    `gateway serve` runs it; the other commands operate a running gateway through its
    management API.  They find it through the data directory (--data DIR, default ./var:
    its admin.token and run.json), or --api URL and --token.  Tables by default, --json for
    scripts; options may come before or after any subcommand.
    """


for _command in (
    serve,
    status,
    connector,
    resource,
    device,
    state,
    content,
    events,
    logs,
    token,
    integration,
    certs,
):
    cli.add_command(_command)


def main() -> None:
    cli()
