"""``gateway device …`` and ``gateway state …``: device identities and their values.

Bulk work shows progress: ``device import`` streams the CSV with a bar, then a spinner while
the gateway checks and writes the rows (it answers once, when the import is committed);
``lock``, ``unlock``, ``reset``, ``tag``, ``untag`` and ``delete`` take several identities, or
``-`` to read them from stdin (``gateway device list demo --tag site:north --ids | gateway
device lock demo -``), and apply them a few at a time with a bar.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import click

from gateway.cli.client import ApiError, Client, seg
from gateway.cli.context import Failed, Run, command_options, group_options
from gateway.cli.listing import print_all, print_page
from gateway.cli.output import Column
from gateway.cli.schema import BadValue

__all__ = ["device", "state"]

DEVICE_COLS = (
    Column("identity"),
    Column("status"),
    Column("locked", kind="bool"),
    Column("online", kind="bool"),
    Column("lastseen", "LAST SEEN", kind="time"),
    Column("lastip", "LAST IP"),
    Column("tags", kind="tags"),
)
STATE_COLS = (
    Column("alias"),
    Column("reported", kind="clip"),
    Column("set", kind="clip"),
    Column("pending", kind="bool"),
    Column("timestamp", "UPDATED", kind="time"),
)
IMPORT_ERROR_COLS = (Column("line"), Column("identity"), Column("error"))
STATUSES = ("whitelisted", "provisioned", "locked", "online", "reprovision")
WORKERS = 8  # bulk edits in flight: enough to fill the gateway's group commits
SHOWN_ERRORS = 20  # row or device errors printed before "N more"


def _devices(cid: str, identity: str = "") -> str:
    base = f"/connectors/{seg(cid)}/devices"
    return f"{base}/{seg(identity)}" if identity else base


def _tags(values: Sequence[str]) -> list[dict[str, str]]:
    out = []
    for v in values:
        name, sep, value = v.partition(":")
        if not sep or not name:
            raise BadValue(f"tag {v!r} must look like name:value")
        out.append({"name": name, "value": value})
    return out


@click.group()
@group_options
def device() -> None:
    """Device identities: whitelist, import, list, lock, tag, reset, delete."""


@device.command("list")
@click.argument("cid")
@click.option("--prefix", "--q", "prefix", help="identities starting with this")
@click.option("--status", type=click.Choice(STATUSES))
@click.option(
    "--tag", "tags", multiple=True, metavar="NAME:VALUE", help="repeatable; all must match"
)
@click.option("--sort", default="identity", show_default=True, help="key, '-' for descending")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="page size"
)
@click.option("--cursor", help="start at this page (the 'next' of the previous one)")
@click.option("--all", "all_pages", is_flag=True, help="every matching device, page after page")
@click.option("--count", is_flag=True, help="print only how many match")
@click.option("--ids", is_flag=True, help="print only identities, one per line, every page")
@command_options
def device_list(
    run: Run,
    cid: str,
    prefix: str | None,
    status: str | None,
    tags: tuple[str, ...],
    sort: str,
    limit: int,
    cursor: str | None,
    all_pages: bool,
    count: bool,
    ids: bool,
) -> None:
    """List connector CID's devices, 100 at a time (--all for every one)."""
    c = run.client()
    _tags(tags)  # refuse a malformed filter before asking
    params: dict[str, Any] = {
        "q": prefix,
        "status": status,
        "tag": list(tags),
        "sort": sort,
        "limit": limit,
        "cursor": cursor,
    }
    path = _devices(cid)
    if count or ids:
        n = 0
        with run.out.progress("counting devices" if count else "listing devices", None) as step:
            for page in c.pages(path, **{**params, "limit": 1000}):
                n += len(page["items"])
                step(len(page["items"]))
                if ids:
                    run.out.write("".join(d["identity"] + "\n" for d in page["items"]))
        if count:
            if run.json:
                run.out.emit_json({"count": n})
            else:
                run.out.line(str(n))
        return
    if all_pages:
        print_all(run.out, c, path, params, DEVICE_COLS, noun="devices")
    else:
        print_page(run.out, c, path, params, DEVICE_COLS, noun="devices")


def _show_device(run: Run, data: dict[str, Any]) -> None:
    if run.json:
        run.out.emit_json(data)
    else:
        run.out.record(data)


@device.command("add")
@click.argument("cid")
@click.argument("identity")
@click.option("--tag", "tags", multiple=True, metavar="NAME:VALUE", help="repeatable")
@click.option("--locked", is_flag=True, help="whitelisted but refused until unlocked")
@click.option("--auth-type", type=click.Choice(["token", "password", "certificate"]))
@click.option("--key", help="pre-shared token or password (20+ characters), or @cert.pem")
@command_options
def device_add(
    run: Run,
    cid: str,
    identity: str,
    tags: tuple[str, ...],
    locked: bool,
    auth_type: str | None,
    key: str | None,
) -> None:
    """Whitelist IDENTITY (with --auth-type/--key: provisioned, no activation needed)."""
    body: dict[str, Any] = {"identity": identity, "tags": _tags(tags), "locked": locked}
    if auth_type or key:
        if not (auth_type and key):
            raise BadValue("--auth-type and --key go together")
        if key.startswith("@"):
            try:
                key = Path(key[1:]).read_text()
            except OSError as exc:
                raise BadValue(f"--key {key}: {exc.strerror}") from None
        body["auth"] = {"type": auth_type, "key": key}
    _show_device(run, run.client().post(_devices(cid), body))


@device.command("import")
@click.argument("cid")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="check every row, write nothing")
@click.option("--partial", is_flag=True, help="write the good rows even if some are refused")
@click.option(
    "--import-id",
    metavar="ID",
    help="name this import so that running the same command again (after a lost answer or "
    "a crash) creates each device exactly once and shows the first run's report",
)
@command_options
def device_import(
    run: Run, cid: str, csv_file: str, dry_run: bool, partial: bool, import_id: str | None
) -> None:
    """Whitelist many devices from a CSV file: header ID[,Certificate][,tag:<name>...].

    By default one bad row refuses the whole file (nothing is written); the answer lists
    every bad row by line.  With --import-id the command can be re-run safely: the gateway
    records the import with its devices in one transaction and answers a repeat with the
    recorded report.
    """
    size = os.path.getsize(csv_file)
    rows = _data_rows(csv_file)
    c = run.client()
    # The gateway reads the whole body before it starts, then answers once, when the import
    # is committed: the bar covers the upload, a spinner the import.
    with (
        open(csv_file, "rb") as fh,
        run.out.progress(
            f"uploading {Path(csv_file).name}",
            size,
            unit="bytes",
            then=f"importing {rows:,} {'row' if rows == 1 else 'rows'} "
            "(the gateway answers when all are written)",
        ) as step,
    ):
        report = c.upload(
            "POST",
            f"{_devices(cid)}/import",
            fh,
            size=size,
            content_type="text/csv",
            params={
                "dry_run": str(dry_run).lower(),
                "all_or_nothing": str(not partial).lower(),
                **({"import_id": import_id} if import_id else {}),
            },
            progress=step,
        )
    total, created, errors = report["total"], report["created"], report["errors"]
    if run.json:
        run.out.emit_json(report)
    else:
        if report["dry_run"]:
            run.out.line(
                f"checked {total:,} rows: {total - len(errors):,} fine, {len(errors):,} refused "
                "(dry run: nothing written)"
            )
        elif report.get("replayed"):
            run.out.line(
                f"import {import_id} was already done: it created {created:,} of {total:,} "
                "devices (nothing written now)"
            )
        elif created or not errors:
            run.out.line(f"created {created:,} of {total:,} devices")
        if errors:
            run.out.table(errors[:SHOWN_ERRORS], IMPORT_ERROR_COLS)
            if len(errors) > SHOWN_ERRORS:
                run.out.hint(f"{len(errors) - SHOWN_ERRORS:,} more refused rows: --json lists all")
    if errors and not partial:
        what = "would refuse the file" if report["dry_run"] else "nothing was written"
        raise Failed(
            f"{len(errors):,} of {total:,} rows are refused, {what}; fix them, or pass "
            "--partial to write the good rows anyway"
        )


def _data_rows(path: str) -> int:
    """Lines after the header (what the progress line announces; the gateway counts)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return max(0, lines + (last != b"\n") - 1)


@device.command("show")
@click.argument("cid")
@click.argument("identity")
@command_options
def device_show(run: Run, cid: str, identity: str) -> None:
    """Show one device."""
    _show_device(run, run.client().get(_devices(cid, identity)))


def _identities(given: Sequence[str]) -> tuple[list[str], bool]:
    """The identities named, or read from stdin for ``-``; and whether this is bulk."""
    if list(given) == ["-"]:
        ids = [line.strip() for line in sys.stdin if line.strip()]
        return ids, True
    if "-" in given:
        raise BadValue("'-' (read identities from stdin) must be the only identity")
    return list(given), len(given) > 1


def _bulk(
    run: Run,
    identities: Sequence[str],
    *,
    doing: str,
    verb: str,
    apply: Callable[[Client, str], Any],
) -> None:
    """Apply ``apply`` to every identity, a few at a time, with a progress bar; then say
    how many worked and which failed (exit 1 if any did).  A lost gateway stops it all."""
    c = run.client()
    failures: list[dict[str, str]] = []
    done = 0
    with (
        run.out.progress(f"{doing} {len(identities):,} devices", len(identities)) as step,
        ThreadPoolExecutor(WORKERS) as pool,
    ):
        futures: dict[Future[Any], str] = {pool.submit(apply, c, i): i for i in identities}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for f in finished:
                exc = f.exception()
                if isinstance(exc, ApiError):
                    failures.append(
                        {"identity": futures[f], "error": exc.code, "message": exc.message}
                    )
                elif exc is not None:
                    for p in pending:
                        p.cancel()
                    raise exc
                else:
                    done += 1
                step(1)
    if run.json:
        run.out.emit_json({"done": done, "failed": failures})
    else:
        run.out.line(f"{verb} {done:,} of {len(identities):,} devices")
        if failures:
            rows = failures[:SHOWN_ERRORS]
            run.out.table(rows, (Column("identity"), Column("message", "ERROR")))
            if len(failures) > SHOWN_ERRORS:
                run.out.hint(f"{len(failures) - SHOWN_ERRORS:,} more failed: --json lists them all")
    if failures:
        raise Failed(f"{len(failures):,} of {len(identities):,} devices failed")


def _edit(
    run: Run, cid: str, given: Sequence[str], verbs: tuple[str, str], body: dict[str, Any]
) -> None:
    identities, bulk = _identities(given)
    if not bulk:
        if not identities:
            raise BadValue("no identities on stdin")
        _show_device(run, run.client().patch(_devices(cid, identities[0]), body))
        return
    doing, verb = verbs

    def apply(c: Client, identity: str) -> Any:
        return c.patch(_devices(cid, identity), body)

    _bulk(run, identities, doing=doing, verb=verb, apply=apply)


_IDS = click.argument("identities", nargs=-1, required=True, metavar="IDENTITY...|-")


@device.command("lock")
@click.argument("cid")
@_IDS
@command_options
def device_lock(run: Run, cid: str, identities: tuple[str, ...]) -> None:
    """Refuse the devices' connections and activations until unlocked."""
    _edit(run, cid, identities, ("locking", "locked"), {"locked": True})


@device.command("unlock")
@click.argument("cid")
@_IDS
@command_options
def device_unlock(run: Run, cid: str, identities: tuple[str, ...]) -> None:
    """Let locked devices connect again."""
    _edit(run, cid, identities, ("unlocking", "unlocked"), {"locked": False})


@device.command("reset")
@click.argument("cid")
@_IDS
@command_options
def device_reset(run: Run, cid: str, identities: tuple[str, ...]) -> None:
    """Revoke the devices' credentials: each must activate again."""
    _edit(run, cid, identities, ("resetting", "reset"), {"reprovision": True})


@device.command("tag")
@click.argument("cid")
@click.argument("identity", metavar="IDENTITY|-")
@click.argument("tags", nargs=-1, required=True, metavar="NAME:VALUE...")
@click.option("--replace", is_flag=True, help="drop the other values of these names first")
@command_options
def device_tag(run: Run, cid: str, identity: str, tags: tuple[str, ...], replace: bool) -> None:
    """Add tags to IDENTITY (or to every identity on stdin, with -)."""
    body = {"tags": {"add": _tags(tags), "replace": replace}}
    _edit(run, cid, [identity], ("tagging", "tagged"), body)


@device.command("untag")
@click.argument("cid")
@click.argument("identity", metavar="IDENTITY|-")
@click.argument("tags", nargs=-1, required=True, metavar="NAME[:VALUE]...")
@command_options
def device_untag(run: Run, cid: str, identity: str, tags: tuple[str, ...]) -> None:
    """Remove tags: NAME:VALUE removes one value, a bare NAME every value of it."""
    refs = []
    for t in tags:
        name, sep, value = t.partition(":")
        refs.append({"name": name, "value": value if sep else None})
    _edit(run, cid, [identity], ("untagging", "untagged"), {"tags": {"remove": refs}})


@device.command("delete")
@click.argument("cid")
@_IDS
@click.option("--yes", is_flag=True, help="confirm deleting more than one device")
@command_options
def device_delete(run: Run, cid: str, identities: tuple[str, ...], yes: bool) -> None:
    """Delete devices with their state (they must be whitelisted again to come back)."""
    ids, bulk = _identities(identities)
    if not bulk:
        if not ids:
            raise BadValue("no identities on stdin")
        run.client().delete(_devices(cid, ids[0]))
        if run.json:
            run.out.emit_json({"deleted": ids[0]})
        else:
            run.out.line(f"deleted device {ids[0]}")
        return
    if not yes:
        raise BadValue(f"deleting {len(ids):,} devices needs --yes")
    _bulk(run, ids, doing="deleting", verb="deleted", apply=lambda c, i: c.delete(_devices(cid, i)))


# -- state ------------------------------------------------------------------------------------


@click.group()
@group_options
def state() -> None:
    """Reported and set values of a device."""


def _show_state(run: Run, data: dict[str, Any]) -> None:
    if run.json:
        run.out.emit_json(data)
    else:
        run.out.table([{"alias": a, **v} for a, v in data.items()], STATE_COLS)


@state.command("get")
@click.argument("cid")
@click.argument("identity")
@command_options
def state_get(run: Run, cid: str, identity: str) -> None:
    """Show IDENTITY's values: what it reported, what was set, what is pending."""
    _show_state(run, run.client().get(f"{_devices(cid, identity)}/state"))


@state.command("set")
@click.argument("cid")
@click.argument("identity")
@click.argument("values", nargs=-1, required=True, metavar="ALIAS=VALUE...")
@command_options
def state_set(run: Run, cid: str, identity: str, values: tuple[str, ...]) -> None:
    """Set values; a connected device gets them at once, others when they next ask."""
    body = {}
    for v in values:
        alias, sep, value = v.partition("=")
        if not sep or not alias:
            raise BadValue(f"{v!r} must look like ALIAS=VALUE")
        body[alias] = value
    _show_state(run, run.client().patch(f"{_devices(cid, identity)}/state", body))
