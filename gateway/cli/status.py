"""``gateway status``: which gateway the CLI reaches, and whether its token is accepted.

The first command to run when something does not answer: it shows where the address and
the token came from (``--api``, ``GATEWAY_API``, ``DIR/run.json``...) and fails with the same
one-line advice as every other command.
"""

from __future__ import annotations

import click

from gateway.cli.context import Run, command_options, shown

__all__ = ["status"]


@click.command()
@command_options
def status(run: Run) -> None:
    """Check the connection: address, version, data directory, admin token."""
    t = run.target
    client = run.client(token=False)
    health = client.get("/health")
    run.client()  # no token: fails here with what to pass
    connectors = client.get("/connectors")["items"]
    info = {
        "api": t.api,
        "api_from": t.api_from,
        "data": str(t.data),
        "token_from": t.token_from,
        "version": health["version"],
        "implementation": health["implementation"],
        "connectors": [c["id"] for c in connectors],
    }
    if run.json:
        run.out.emit_json(info)
        return
    run.out.record(
        {
            "gateway": f"{t.api} (from {t.api_from})",
            "version": f"{health['version']}, {health['implementation']} hot path",
            "data": shown(t.data),
            "admin token": f"{t.token_from} (accepted)",
            "connectors": info["connectors"],
        }
    )
