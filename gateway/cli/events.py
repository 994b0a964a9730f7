"""``gateway events``, ``gateway logs`` and ``gateway token …``.

``events`` reads the durable event log by cursor (``seq``): one page, or ``--follow`` to keep
long-polling for new ones.  ``logs`` tails the live log (Server-Sent Events through
httpx-sse) until interrupted; if the gateway drops the stream (the client was too slow) or
the connection is lost, it says so on stderr and reconnects — records in between are not
replayed, the durable ``events`` are.  Both print one line per record in table form and
JSON Lines with ``--json`` when following.
"""

from __future__ import annotations

import time
from typing import Any

import click

from gateway.cli.client import Unreachable, seg
from gateway.cli.context import Run, command_options, group_options
from gateway.cli.output import Column, TableWriter, local_time

__all__ = ["events", "logs", "token"]

EVENT_COLS = (
    Column("seq"),
    Column("timestamp", "TIME", kind="time"),
    Column("type"),
    Column("identity"),
    Column("ip", "IP"),
    Column("protocol"),
    Column("reason"),
    Column("payload", kind="payload"),
)
LOG_FIELDS = ("kind", "event", "identity", "ip", "protocol", "reason", "detail")
LONG_POLL_S = 25.0  # seconds the gateway holds a --follow request open (its maximum is 30)
RECONNECT_S = 1.0  # pause before reconnecting a lost live log


@click.command()
@click.argument("cid")
@click.option("--after", type=int, default=0, help="cursor: events after this seq (-1: from now)")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="keep waiting for new events")
@command_options
def events(run: Run, cid: str, after: int, limit: int, follow: bool) -> None:
    """The durable event log of connector CID (connects, writes, sets, refusals)."""
    c = run.client()
    path = f"/connectors/{seg(cid)}/events"
    if not follow:
        page = c.get(path, after=after, limit=limit)
        if run.json:
            run.out.emit_json(page)
            return
        run.out.table(page["items"], EVENT_COLS)
        if len(page["items"]) == limit:
            ahead = c.get(path, after=page["next"], limit=1000)
            more = f"{len(ahead['items']):,}" + ("+" if len(ahead["items"]) == 1000 else "")
            if ahead["items"]:
                run.out.hint(
                    f"{more} more: --after {page['next']} starts there, --follow waits for new ones"
                )
        return
    table = TableWriter(run.out, EVENT_COLS)
    try:
        while True:
            page = c.get(path, after=after, limit=limit, wait=LONG_POLL_S)
            for item in page["items"]:
                if run.json:
                    run.out.emit_json_line(item)
            if not run.json:
                table.rows(page["items"])
            after = page["next"]
    except KeyboardInterrupt:
        pass


def _log_line(rec: dict[str, Any]) -> str:
    ts = rec.get("timestamp")
    when = local_time(ts, ms=True) if isinstance(ts, int) else "-"
    return "  ".join([when, *(str(rec[k]) for k in LOG_FIELDS if rec.get(k))])


@click.command()
@click.argument("cid")
@click.option("--kind", type=click.Choice(["events", "debug"]), help="only this kind [both]")
@click.option("--identity", help="only this device")
@click.option("--ip", help="only this peer address (also its refused attempts)")
@click.option("--follow", "-f", is_flag=True, help="(the default: the live log is a tail)")
@command_options
def logs(
    run: Run, cid: str, kind: str | None, identity: str | None, ip: str | None, follow: bool
) -> None:
    """Tail connector CID's live log until interrupted (Ctrl-C)."""
    c = run.client()
    opened = False
    try:
        while True:
            try:
                for msg in c.live_log(cid, kind=kind, identity=identity, ip=ip):
                    if msg.event == "open":
                        run.out.hint(
                            f"{'following' if not opened else 'following again'} the live log "
                            f"of {cid} (Ctrl-C to stop)"
                        )
                        opened = True
                    elif msg.event == "dropped":
                        run.out.warn(
                            f"the gateway dropped this tail ({msg.data.get('message')}); "
                            "reconnecting, records in between are lost"
                        )
                        break
                    elif run.json:
                        run.out.emit_json_line(msg.data)
                    else:
                        run.out.line(_log_line(msg.data))
                else:
                    run.out.warn("the gateway ended the live log; reconnecting")
            except Unreachable as exc:
                if not opened:
                    raise
                run.out.warn(f"lost the live log ({exc.reason}); reconnecting")
                time.sleep(RECONNECT_S)
    except KeyboardInterrupt:
        pass


# -- tokens ------------------------------------------------------------------------------------


@click.group()
@group_options
def token() -> None:
    """Extra admin tokens for the management API (for scripts and colleagues)."""


TOKEN_COLS = (Column("id"), Column("name"), Column("created", kind="time"))


@token.command("list")
@command_options
def token_list(run: Run) -> None:
    """List the extra admin tokens (never the tokens themselves)."""
    items = run.client().get("/tokens")
    if run.json:
        run.out.emit_json(items)
    else:
        run.out.table(items, TOKEN_COLS)


@token.command("create")
@click.argument("name")
@command_options
def token_create(run: Run, name: str) -> None:
    """Create a token named NAME; it is shown once, keep it."""
    made = run.client().post("/tokens", {"name": name})
    if run.json:
        run.out.emit_json(made)
        return
    run.out.record(made)
    run.out.hint("the token is shown only now; use it with --token or GATEWAY_TOKEN")


@token.command("revoke")
@click.argument("token_id")
@command_options
def token_revoke(run: Run, token_id: str) -> None:
    """Revoke token TOKEN_ID (see `token list`)."""
    run.client().delete(f"/tokens/{seg(token_id)}")
    if run.json:
        run.out.emit_json({"revoked": token_id})
    else:
        run.out.line(f"revoked token {token_id}")
