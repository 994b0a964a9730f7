"""Operator commands of the ``gateway`` CLI: they talk to a running gateway through the
management REST API (:mod:`gateway.cli.client`), never to the data directory's database.

Common options (on every command): ``--api URL`` (default http://127.0.0.1:9080, env
``GATEWAY_API``), ``--token T`` (env ``GATEWAY_TOKEN``) or ``--data DIR`` to read
``DIR/admin.token``, and ``--json`` for machine-readable output.  Human output is a plain
table.  API errors exit with status 1 and print ``error <code>: <message>`` on stderr.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
import msgspec

from gateway.cli.client import DEFAULT_API, ApiError, Client, read_token

__all__ = ["COMMANDS"]

F = TypeVar("F", bound=Callable[..., Any])


class Ctx(msgspec.Struct):
    api: str
    token: str | None
    json: bool

    def client(self) -> Client:
        return Client(self.api, self.token)


def _common(fn: F) -> F:
    """Add --api/--token/--data/--json and turn them into a ``ctx: Ctx`` argument."""

    @click.option(
        "--api",
        envvar="GATEWAY_API",
        default=DEFAULT_API,
        show_default=True,
        help="management API base URL",
    )
    @click.option("--token", envvar="GATEWAY_TOKEN", help="admin bearer token")
    @click.option(
        "--data",
        "data_dir",
        type=click.Path(file_okay=False),
        help="read the token from DIR/admin.token [./var]",
    )
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    @functools.wraps(fn)
    def wrapper(api: str, token: str | None, data_dir: str | None, as_json: bool, **kw: Any) -> Any:
        if token is None:
            path = Path(data_dir or "./var")
            if (path / "admin.token").exists():
                token = read_token(path)
            elif data_dir:
                raise click.UsageError(f"{path / 'admin.token'} does not exist")
        ctx = Ctx(api, token, as_json)
        try:
            return fn(ctx, **kw)
        except ApiError as exc:
            click.echo(f"error {exc.code}: {exc.message}", err=True)
            sys.exit(1)
        except httpx.HTTPError as exc:
            click.echo(f"error: cannot reach {api}: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, list) and v and isinstance(v[0], dict) and "name" in v[0]:
        return ",".join(f"{t['name']}:{t.get('value', '')}" for t in v)
    if isinstance(v, dict | list):
        return msgspec.json.encode(v).decode()
    return str(v)


def _out(ctx: Ctx, data: Any, columns: Sequence[str] | None = None) -> None:
    if ctx.json:
        click.echo(msgspec.json.encode(data).decode())
        return
    rows = data if isinstance(data, list) else [data]
    if not rows:
        click.echo("(none)")
        return
    if columns is None and isinstance(rows[0], dict):
        if not isinstance(data, list):  # one object: key/value lines
            width = max(len(k) for k in data)
            for k, v in data.items():
                click.echo(f"{k.ljust(width)}  {_cell(v)}")
            return
        columns = list(rows[0])
    cols = list(columns or [])
    table = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)))
    for t in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())


def _json_arg(text: str | None, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise click.BadParameter(f"{what} must be JSON: {exc}") from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"{what} must be a JSON object")
    return value


def _tags(values: Sequence[str]) -> list[dict[str, str]]:
    out = []
    for v in values:
        name, sep, value = v.partition(":")
        if not sep or not name:
            raise click.BadParameter(f"tag {v!r} must look like name:value")
        out.append({"name": name, "value": value})
    return out


# -- connectors -----------------------------------------------------------------------------

CONNECTOR_COLS = ("id", "name", "fqdn", "description")


@click.group()
def connector() -> None:
    """Connectors (tenants)."""


@connector.command("list")
@_common
def connector_list(ctx: Ctx) -> None:
    _out(ctx, ctx.client().connectors(), CONNECTOR_COLS)


@connector.command("create")
@click.argument("name")
@click.option("--id", "cid", help="connector id (4-32 lowercase letters/digits)")
@click.option("--description", default="")
@click.option("--settings", help="settings JSON (partial)")
@_common
def connector_create(
    ctx: Ctx, name: str, cid: str | None, description: str, settings: str | None
) -> None:
    body: dict[str, Any] = {"name": name, "description": description}
    if cid:
        body["id"] = cid
    if settings:
        body["settings"] = _json_arg(settings, "--settings")
    _out(ctx, ctx.client().create_connector(body), CONNECTOR_COLS)


@connector.command("show")
@click.argument("cid")
@_common
def connector_show(ctx: Ctx, cid: str) -> None:
    _out(ctx, ctx.client().connector(cid))


@connector.command("update")
@click.argument("cid")
@click.option("--name")
@click.option("--description")
@_common
def connector_update(ctx: Ctx, cid: str, name: str | None, description: str | None) -> None:
    body = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
    _out(ctx, ctx.client().update_connector(cid, body), CONNECTOR_COLS)


@connector.command("delete")
@click.argument("cid")
@_common
def connector_delete(ctx: Ctx, cid: str) -> None:
    ctx.client().delete_connector(cid)
    if not ctx.json:
        click.echo(f"deleted {cid}")


@connector.command("settings")
@click.argument("cid")
@click.option("--set", "patch", help="partial settings JSON to deep-merge")
@_common
def connector_settings(ctx: Ctx, cid: str, patch: str | None) -> None:
    c = ctx.client()
    result = c.settings(cid, _json_arg(patch, "--set") if patch else None)
    click.echo(msgspec.json.format(msgspec.json.encode(result)).decode())


# -- resources ------------------------------------------------------------------------------

RESOURCE_COLS = ("alias", "format", "settable", "sync", "unit", "allowed", "initial")


@click.group()
def resource() -> None:
    """Resource definitions of a connector."""


@resource.command("list")
@click.argument("cid")
@_common
def resource_list(ctx: Ctx, cid: str) -> None:
    _out(ctx, ctx.client().resources(cid), RESOURCE_COLS)


@resource.command("create")
@click.argument("cid")
@click.argument("alias")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["string", "number", "boolean"]),
    default="string",
    show_default=True,
)
@click.option("--settable", is_flag=True)
@click.option("--no-sync", is_flag=True, help="set values are not pushed/pending")
@click.option("--unit", default="")
@click.option("--initial")
@_common
def resource_create(
    ctx: Ctx,
    cid: str,
    alias: str,
    fmt: str,
    settable: bool,
    no_sync: bool,
    unit: str,
    initial: str | None,
) -> None:
    body = {
        "alias": alias,
        "format": fmt,
        "settable": settable,
        "sync": not no_sync,
        "unit": unit,
        "initial": initial,
    }
    _out(ctx, ctx.client().create_resource(cid, body), RESOURCE_COLS)


@resource.command("update")
@click.argument("cid")
@click.argument("alias")
@click.argument("changes")
@_common
def resource_update(ctx: Ctx, cid: str, alias: str, changes: str) -> None:
    """CHANGES is a JSON object of fields to change."""
    _out(
        ctx, ctx.client().update_resource(cid, alias, _json_arg(changes, "CHANGES")), RESOURCE_COLS
    )


@resource.command("delete")
@click.argument("cid")
@click.argument("alias")
@_common
def resource_delete(ctx: Ctx, cid: str, alias: str) -> None:
    ctx.client().delete_resource(cid, alias)


# -- devices --------------------------------------------------------------------------------

DEVICE_COLS = ("identity", "status", "locked", "online", "lastip", "tags")


@click.group()
def device() -> None:
    """Device identities."""


@device.command("list")
@click.argument("cid")
@click.option("--q", "prefix", help="identity prefix")
@click.option(
    "--status", type=click.Choice(["whitelisted", "provisioned", "locked", "online", "reprovision"])
)
@click.option("--tag", "tags", multiple=True, help="name:value (repeatable, all must match)")
@click.option("--sort", default="identity", show_default=True)
@click.option("--limit", type=int, default=100, show_default=True, help="page size")
@click.option("--all", "all_pages", is_flag=True, help="follow cursors to the end")
@click.option("--count", is_flag=True, help="print only the number of matches")
@_common
def device_list(
    ctx: Ctx,
    cid: str,
    prefix: str | None,
    status: str | None,
    tags: tuple[str, ...],
    sort: str,
    limit: int,
    all_pages: bool,
    count: bool,
) -> None:
    c = ctx.client()
    params = {"q": prefix, "status": status, "tag": list(tags), "sort": sort, "limit": limit}
    if all_pages or count:
        items = list(c.iter_devices(cid, **{**params, "limit": 1000 if count else limit}))
    else:
        items = c.devices(cid, **params)["items"]
    if count:
        click.echo(
            msgspec.json.encode({"count": len(items)}).decode() if ctx.json else str(len(items))
        )
        return
    _out(ctx, items, DEVICE_COLS)


@device.command("add")
@click.argument("cid")
@click.argument("identity")
@click.option("--tag", "tags", multiple=True, help="name:value")
@click.option("--locked", is_flag=True)
@click.option("--auth-type", type=click.Choice(["token", "password", "certificate"]))
@click.option("--key", help="pre-shared token/password, or @file.pem")
@_common
def device_add(
    ctx: Ctx,
    cid: str,
    identity: str,
    tags: tuple[str, ...],
    locked: bool,
    auth_type: str | None,
    key: str | None,
) -> None:
    body: dict[str, Any] = {"identity": identity, "tags": _tags(tags), "locked": locked}
    if auth_type or key:
        if key and key.startswith("@"):
            key = Path(key[1:]).read_text()
        body["auth"] = {"type": auth_type, "key": key}
    _out(ctx, ctx.client().add_device(cid, body), DEVICE_COLS)


@device.command("import")
@click.argument("cid")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="validate only")
@click.option("--partial", is_flag=True, help="write the good rows even if some fail")
@_common
def device_import(ctx: Ctx, cid: str, csv_file: str, dry_run: bool, partial: bool) -> None:
    """Bulk whitelist from CSV: header ID[,Certificate][,tag:<name>...]."""
    size = os.path.getsize(csv_file)
    with (
        open(csv_file, "rb") as fh,
        click.progressbar(length=size, label="uploading", file=sys.stderr) as bar,
    ):
        report = ctx.client().import_devices(
            cid, fh, size=size, dry_run=dry_run, all_or_nothing=not partial, progress=bar.update
        )
    if ctx.json:
        click.echo(msgspec.json.encode(report).decode())
    else:
        click.echo(
            f"{report['created']} created of {report['total']} rows"
            f"{' (dry run)' if report['dry_run'] else ''}; "
            f"{len(report['errors'])} errors"
        )
        for e in report["errors"][:50]:
            click.echo(f"  line {e['line']}: {e['identity']}: {e['error']}")
    if report["errors"] and not partial:
        sys.exit(1)


@device.command("show")
@click.argument("cid")
@click.argument("identity")
@_common
def device_show(ctx: Ctx, cid: str, identity: str) -> None:
    _out(ctx, ctx.client().device(cid, identity))


def _patch_device(ctx: Ctx, cid: str, identity: str, body: dict[str, Any]) -> None:
    _out(ctx, ctx.client().update_device(cid, identity, body), DEVICE_COLS)


@device.command("lock")
@click.argument("cid")
@click.argument("identity")
@_common
def device_lock(ctx: Ctx, cid: str, identity: str) -> None:
    _patch_device(ctx, cid, identity, {"locked": True})


@device.command("unlock")
@click.argument("cid")
@click.argument("identity")
@_common
def device_unlock(ctx: Ctx, cid: str, identity: str) -> None:
    _patch_device(ctx, cid, identity, {"locked": False})


@device.command("reset")
@click.argument("cid")
@click.argument("identity")
@_common
def device_reset(ctx: Ctx, cid: str, identity: str) -> None:
    """Revoke the credentials: the device must activate again."""
    _patch_device(ctx, cid, identity, {"reprovision": True})


@device.command("tag")
@click.argument("cid")
@click.argument("identity")
@click.argument("tags", nargs=-1, required=True)
@click.option("--replace", is_flag=True, help="drop other values of these names first")
@_common
def device_tag(ctx: Ctx, cid: str, identity: str, tags: tuple[str, ...], replace: bool) -> None:
    """Add TAGS (name:value ...)."""
    _patch_device(ctx, cid, identity, {"tags": {"add": _tags(tags), "replace": replace}})


@device.command("untag")
@click.argument("cid")
@click.argument("identity")
@click.argument("tags", nargs=-1, required=True)
@_common
def device_untag(ctx: Ctx, cid: str, identity: str, tags: tuple[str, ...]) -> None:
    """Remove TAGS: name:value removes one value, a bare name removes all its values."""
    refs = []
    for t in tags:
        name, sep, value = t.partition(":")
        refs.append({"name": name, "value": value if sep else None})
    _patch_device(ctx, cid, identity, {"tags": {"remove": refs}})


@device.command("delete")
@click.argument("cid")
@click.argument("identity")
@_common
def device_delete(ctx: Ctx, cid: str, identity: str) -> None:
    ctx.client().delete_device(cid, identity)


# -- state ------------------------------------------------------------------------------------


@click.group()
def state() -> None:
    """Reported and set values of a device."""


def _state_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"alias": a, **v} for a, v in data.items()]


STATE_COLS = ("alias", "reported", "set", "pending", "timestamp")


@state.command("get")
@click.argument("cid")
@click.argument("identity")
@_common
def state_get(ctx: Ctx, cid: str, identity: str) -> None:
    data = ctx.client().state(cid, identity)
    _out(ctx, data if ctx.json else _state_rows(data), STATE_COLS)


@state.command("set")
@click.argument("cid")
@click.argument("identity")
@click.argument("values", nargs=-1, required=True)
@_common
def state_set(ctx: Ctx, cid: str, identity: str, values: tuple[str, ...]) -> None:
    """Set VALUES (alias=value ...); values are sent as strings."""
    body = {}
    for v in values:
        alias, sep, value = v.partition("=")
        if not sep:
            raise click.BadParameter(f"{v!r} must look like alias=value")
        body[alias] = value
    data = ctx.client().state(cid, identity, body)
    _out(ctx, data if ctx.json else _state_rows(data), STATE_COLS)


# -- content ----------------------------------------------------------------------------------

CONTENT_COLS = ("id", "length", "type", "sha256", "description")


@click.group()
def content() -> None:
    """Content (firmware and files) for devices."""


@content.command("upload")
@click.argument("cid")
@click.argument("content_id")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--type", "ctype", default="application/octet-stream", show_default=True)
@click.option("--description", default="")
@_common
def content_upload(
    ctx: Ctx, cid: str, content_id: str, file: str, ctype: str, description: str
) -> None:
    size = os.path.getsize(file)
    with (
        open(file, "rb") as fh,
        click.progressbar(length=size, label="uploading", file=sys.stderr) as bar,
    ):
        info = ctx.client().upload(
            cid,
            content_id,
            fh,
            size=size,
            content_type=ctype,
            description=description,
            progress=bar.update,
        )
    _out(ctx, info, CONTENT_COLS)


@content.command("list")
@click.argument("cid")
@click.option("--prefix", default="")
@_common
def content_list(ctx: Ctx, cid: str, prefix: str) -> None:
    _out(ctx, ctx.client().content_list(cid, prefix), CONTENT_COLS)


@content.command("info")
@click.argument("cid")
@click.argument("content_id")
@_common
def content_info(ctx: Ctx, cid: str, content_id: str) -> None:
    _out(ctx, ctx.client().content_info(cid, content_id))


@content.command("download")
@click.argument("cid")
@click.argument("content_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
@_common
def content_download(ctx: Ctx, cid: str, content_id: str, output: str) -> None:
    with open(output, "wb") as fh:
        n = ctx.client().download(cid, content_id, fh)
    if not ctx.json:
        click.echo(f"{n} bytes -> {output}")


@content.command("delete")
@click.argument("cid")
@click.argument("content_id")
@_common
def content_delete(ctx: Ctx, cid: str, content_id: str) -> None:
    ctx.client().delete_content(cid, content_id)


# -- events and logs ---------------------------------------------------------------------------

EVENT_COLS = ("seq", "type", "identity", "ip", "protocol", "reason", "payload")


@click.command()
@click.argument("cid")
@click.option("--after", type=int, default=0, help="cursor (-1: from now)")
@click.option("--limit", type=int, default=100)
@click.option("--follow", "-f", is_flag=True, help="keep waiting for new events")
@_common
def events(ctx: Ctx, cid: str, after: int, limit: int, follow: bool) -> None:
    """The durable event log."""
    c = ctx.client()
    while True:
        page = c.events(cid, after=after, limit=limit, wait=25.0 if follow else 0.0)
        if page["items"]:
            _out(ctx, page["items"], EVENT_COLS)
        after = page["next"]
        if not follow:
            return


@click.command()
@click.argument("cid")
@click.option("--kind", type=click.Choice(["events", "debug"]))
@click.option("--identity")
@click.option("--ip")
@click.option("--follow", "-f", is_flag=True, help="(the default: logs are a live tail)")
@_common
def logs(
    ctx: Ctx, cid: str, kind: str | None, identity: str | None, ip: str | None, follow: bool
) -> None:
    """Tail the live log (Server-Sent Events) until interrupted."""
    try:
        for event, data in ctx.client().logs(cid, kind=kind, identity=identity, ip=ip):
            if ctx.json:
                click.echo(msgspec.json.encode({"event": event, **data}).decode())
            elif event == "dropped":
                click.echo(f"-- dropped by the server: {data.get('message')}", err=True)
            else:
                parts = [
                    str(data.get(k))
                    for k in ("kind", "event", "identity", "ip", "reason", "detail")
                    if data.get(k)
                ]
                click.echo(" ".join(parts), nl=True)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass


# -- tokens ------------------------------------------------------------------------------------


@click.group()
def token() -> None:
    """Extra admin tokens for the management API."""


@token.command("list")
@_common
def token_list(ctx: Ctx) -> None:
    _out(ctx, ctx.client().tokens(), ("id", "name", "created"))


@token.command("create")
@click.argument("name")
@_common
def token_create(ctx: Ctx, name: str) -> None:
    _out(ctx, ctx.client().create_token(name))


@token.command("revoke")
@click.argument("token_id")
@_common
def token_revoke(ctx: Ctx, token_id: str) -> None:
    ctx.client().revoke_token(token_id)


COMMANDS: tuple[click.Command, ...] = (
    connector,
    resource,
    device,
    state,
    content,
    events,
    logs,
    token,
)
