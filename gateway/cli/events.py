"""``gateway events``, ``gateway logs`` and ``gateway token …``.

``events`` reads the durable event log, the forensic timeline (docs/protocol.md §6.5, §6.6):
newest first by default, one page with the "N more" hint, ``--all`` for every page,
``--oldest-first`` to read forwards, ``--follow`` to keep long-polling for new events.  The
filters (``--identity``, ``--type`` repeatable, ``--ip``, ``--since``/``--until`` in the forms
of :mod:`gateway.cli.when`) go to the gateway as query parameters, so every mode, ``--follow``
included, sees only what matches.  ``--json`` prints the API's page with its ``next`` cursor
(pass it back as ``--before``, or ``--after`` when reading forwards); following prints JSON
Lines.

``logs`` tails the live log (Server-Sent Events through httpx-sse) until interrupted; if the
gateway drops the stream (the client was too slow) or the connection is lost, it says so on
stderr and reconnects — records in between are not replayed, the durable ``events`` are.
"""

from __future__ import annotations

import time
from typing import Any

import click
import msgspec

from gateway.cli.client import Client, Unreachable, seg
from gateway.cli.context import Incomplete, Run, command_options, group_options
from gateway.cli.listing import LOOKAHEAD
from gateway.cli.output import Column, TableWriter, local_time
from gateway.cli.when import when_option

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
LONG_POLL_S = 25.0  # seconds the gateway holds a --follow request open (its maximum is 300)
RECONNECT_S = 1.0  # pause before reconnecting a lost live log
PAGE = 100  # events on one page
ALL_PAGE = 1000  # events per request with --all (the API's largest page)
NEWEST = -1  # the API's "before" meaning "from the newest event"
REFUSALS = "connection_refused, activation_refused, write_refused, request_refused"


def _events(n: int) -> str:
    return f"{n:,} event" if n == 1 else f"{n:,} events"


class _Events:
    """One connector's event log through the API, with the filters fixed."""

    def __init__(self, client: Client, cid: str, filters: dict[str, Any]) -> None:
        self.client = client
        self.path = f"/connectors/{seg(cid)}/events"
        self.filters = filters

    def back(self, before: int, limit: int) -> dict[str, Any]:
        """Matching events older than ``before``, newest first; ``next`` is null at the
        oldest."""
        page: dict[str, Any] = self.client.get(
            self.path, before=before, limit=limit, **self.filters
        )
        return page

    def forward(self, after: int, limit: int, wait: float | None = None) -> dict[str, Any]:
        """Matching events newer than ``after``, oldest first (waiting up to ``wait`` s when
        there are none); ``next`` is the cursor to continue from."""
        page: dict[str, Any] = self.client.get(
            self.path, after=after, limit=limit, wait=wait, **self.filters
        )
        return page

    def end(self) -> int:
        """The seq of the newest event of the log, matching or not (0: none yet): where
        following starts so that nothing committed later is missed."""
        newest = self.client.get(self.path, before=NEWEST, limit=1)["items"]
        return int(newest[0]["seq"]) if newest else 0


@click.command()
@click.argument("cid")
@click.option("--identity", help="only this device's events")
@click.option(
    "--type",
    "types",
    multiple=True,
    metavar="TYPE",
    help=f"only events of this type; repeat for several (the refusals: {REFUSALS})",
)
@click.option("--ip", help="only events from this peer address (refused attempts too)")
@click.option("--since", metavar="WHEN", callback=when_option, help="only events at or after WHEN")
@click.option("--until", metavar="WHEN", callback=when_option, help="only events at or before WHEN")
@click.option("--oldest-first", is_flag=True, help="read forwards, oldest first")
@click.option("--before", type=int, help="cursor: events older than this seq (newest first)")
@click.option(
    "--after", type=int, help="cursor: events newer than this seq, oldest first (-1: from now)"
)
@click.option(
    "--limit", type=click.IntRange(1, 1000), help=f"events per page [{PAGE}; --all: {ALL_PAGE}]"
)
@click.option("--all", "all_pages", is_flag=True, help="every matching event, page after page")
@click.option("--follow", "-f", is_flag=True, help="then keep waiting for new events (Ctrl-C)")
@command_options
def events(
    run: Run,
    cid: str,
    identity: str | None,
    types: tuple[str, ...],
    ip: str | None,
    since: int | None,
    until: int | None,
    oldest_first: bool,
    before: int | None,
    after: int | None,
    limit: int | None,
    all_pages: bool,
    follow: bool,
) -> None:
    """The durable event log of connector CID: connects, writes, sets, and every refused
    connection, activation and write with its reason code.

    Newest first, one page, and how many more there are; --all for every page,
    --oldest-first to read forwards, --follow to keep waiting for new events (it starts
    with the newest page, or at --after).  The filters combine, and --follow keeps them.

    \b
    WHEN (--since, --until) is
      a time ago       -1h, 30m, 2d, 1h30m (both signs mean ago)
      a named day      now, today, yesterday (local midnight)
      a time of day    14:03, 14:03:22 (today, local time)
      ISO 8601         2025-05-01, 2025-05-01 14:03 (local), 2025-05-01T12:03:22Z
      a number         µs since the epoch, as --json prints it

    \b
    Examples:
      gateway events demo --type write_refused --since -1h
      gateway events demo --identity 00AB01FF --type connection_refused \\
          --type activation_refused --since yesterday --until 09:00
      gateway events demo --ip 203.0.113.7 --all --json > attempts.json
      gateway events demo --type data_in --follow
    """
    forwards = oldest_first or after is not None
    if before is not None and forwards:
        raise Incomplete("--before pages backwards: it goes without --after and --oldest-first")
    if follow and (all_pages or before is not None):
        raise Incomplete("--follow goes without --all and --before")
    filters = {"identity": identity, "type": list(types), "ip": ip, "since": since, "until": until}
    log = _Events(run.client(), cid, filters)
    if follow:
        _follow(
            run,
            log,
            after=after if after is not None else (0 if oldest_first else None),
            limit=limit or PAGE,
        )
    elif all_pages:
        _all(
            run,
            log,
            forwards=forwards,
            start=after if forwards else before,
            limit=limit or ALL_PAGE,
        )
    elif forwards:
        _page_forward(run, log, after=after or 0, limit=limit or PAGE)
    else:
        _page_back(run, log, before=NEWEST if before is None else before, limit=limit or PAGE)


def _page_back(run: Run, log: _Events, *, before: int, limit: int) -> None:
    page = log.back(before, limit)
    if run.json:
        run.out.emit_json(page)
        return
    run.out.table(page["items"], EVENT_COLS)
    nxt = page["next"]
    if nxt is None:
        return
    ahead = log.back(nxt, LOOKAHEAD)
    more = f"{len(ahead['items']):,}" + ("+" if ahead["next"] is not None else "")
    run.out.hint(
        f"{_events(len(page['items']))} shown, {more} older: --all lists every one, "
        f"--before {nxt} shows the next page"
    )


def _page_forward(run: Run, log: _Events, *, after: int, limit: int) -> None:
    page = log.forward(after, limit)
    if run.json:
        run.out.emit_json(page)
        return
    run.out.table(page["items"], EVENT_COLS)
    nxt = page["next"]
    if len(page["items"]) < limit:
        return
    ahead = log.forward(nxt, LOOKAHEAD)["items"]
    if ahead:
        more = f"{len(ahead):,}" + ("+" if len(ahead) == LOOKAHEAD else "")
        run.out.hint(
            f"{_events(len(page['items']))} shown, {more} newer: --all lists every one, "
            f"--after {nxt} shows the next page, --follow waits for new ones"
        )


def _all(run: Run, log: _Events, *, forwards: bool, start: int | None, limit: int) -> None:
    """Every matching page, printed as it arrives.  Newest first the walk ends at the
    oldest event (``next`` null); forwards it ends at the newest one when it started, and
    ``next`` in the JSON document is where ``--after`` continues."""
    table = TableWriter(run.out, EVENT_COLS)
    n = 0
    cursor = start if start is not None else (0 if forwards else NEWEST)
    if run.json:
        run.out.write('{"items":[')
    while True:
        page = log.forward(cursor, limit) if forwards else log.back(cursor, limit)
        items = page["items"]
        if run.json:
            for item in items:
                run.out.write(("," if n else "") + msgspec.json.encode(item).decode())
                n += 1
        else:
            table.rows(items)
            n += len(items)
        cursor = page["next"]
        if cursor is None or (forwards and len(items) < limit):
            break
    if run.json:
        run.out.write(f'],"next":{msgspec.json.encode(cursor).decode()}}}\n')
    else:
        run.out.hint(_events(n) if n else "(none)")


def _follow(run: Run, log: _Events, *, after: int | None, limit: int) -> None:
    """Print matching events as they commit, until Ctrl-C.  Without a cursor it starts like
    ``tail -f``: the newest page (oldest of it first), then what comes after the log's end
    as it was before that page was read, so an event committed in between is printed once,
    not lost."""
    table = TableWriter(run.out, EVENT_COLS)

    def show(items: list[dict[str, Any]]) -> None:
        if run.json:
            for item in items:
                run.out.emit_json_line(item)
        else:
            table.rows(items)

    try:
        if after is None:
            after = log.end()
            show(list(reversed(log.back(after + 1, limit)["items"])))
        while True:
            page = log.forward(after, limit, wait=LONG_POLL_S)
            show(page["items"])
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
