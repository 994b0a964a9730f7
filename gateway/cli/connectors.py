"""``gateway connector …`` and ``gateway resource …``: connectors (tenants), their settings
and resource definitions."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from gateway.cli.client import seg
from gateway.cli.context import Run, command_options, group_options
from gateway.cli.listing import print_page
from gateway.cli.output import Column
from gateway.cli.schema import BadValue, merge, parse_pairs

__all__ = ["connector", "resource"]

CONNECTOR_COLS = (
    Column("id"),
    Column("name"),
    Column("fqdn", "FQDN"),
    Column("created", kind="time"),
    Column("description"),
)
RESOURCE_COLS = (
    Column("alias"),
    Column("format"),
    Column("settable", kind="bool"),
    Column("sync", kind="bool"),
    Column("unit"),
    Column("allowed"),
    Column("initial"),
)
SUMMARY = ("id", "name", "description", "fqdn", "devmode_fqdn", "created", "resources")


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise BadValue(f"{what} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise BadValue(f"{what} must be a JSON object")
    return value


def settings_patch(run: Run, component: str, items: tuple[str, ...], what: str) -> dict[str, Any]:
    """``--set`` values as a nested patch: each is a JSON object, or ``a.b.c=value``
    converted by the type of ``a.b.c`` in the API's schema ``component``."""
    patch: dict[str, Any] = {}
    pairs = []
    for item in items:
        if item.lstrip().startswith("{"):
            patch.update(_json_object(item, what))
        else:
            pairs.append(item)
    if pairs:
        contract = run.contract()
        for key, text in parse_pairs(pairs, what):
            merge(patch, key, contract.convert(contract.field(component, key), text, key))
    return patch


@click.group()
@group_options
def connector() -> None:
    """Connectors (tenants): name, FQDN, settings."""


@connector.command("list")
@command_options
def connector_list(run: Run) -> None:
    """List the connectors."""
    print_page(run.out, run.client(), "/connectors", {}, CONNECTOR_COLS, noun="connectors")


def _show_connector(run: Run, data: dict[str, Any], *, full: bool) -> None:
    if run.json:
        run.out.emit_json(data)
    elif full:
        run.out.record(data)
    else:
        run.out.record({k: data[k] for k in SUMMARY if k in data})


@connector.command("create")
@click.argument("name")
@click.option("--id", "cid", help="connector id (4-32 lowercase letters/digits) [generated]")
@click.option("--description", default="")
@click.option(
    "--set",
    "items",
    multiple=True,
    metavar="KEY=VALUE",
    help="a setting, e.g. provisioning.presenter_identity=false, or a JSON object (repeatable)",
)
@click.option("--settings", "settings_json", help="settings as one JSON object (partial)")
@command_options
def connector_create(
    run: Run,
    name: str,
    cid: str | None,
    description: str,
    items: tuple[str, ...],
    settings_json: str | None,
) -> None:
    """Create connector NAME; devices reach it at <id>.m2.<base domain>."""
    body: dict[str, Any] = {"name": name, "description": description}
    if cid:
        body["id"] = cid
    patch = settings_patch(run, "ConnectorSettings", items, "--set")
    if settings_json:
        patch = {**_json_object(settings_json, "--settings"), **patch}
    if patch:
        body["settings"] = patch
    _show_connector(run, run.client().post("/connectors", body), full=False)


@connector.command("show")
@click.argument("cid")
@command_options
def connector_show(run: Run, cid: str) -> None:
    """Show connector CID with all its settings."""
    _show_connector(run, run.client().get(f"/connectors/{seg(cid)}"), full=True)


@connector.command("update")
@click.argument("cid")
@click.option("--name")
@click.option("--description")
@command_options
def connector_update(run: Run, cid: str, name: str | None, description: str | None) -> None:
    """Rename connector CID or change its description."""
    body = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
    if not body:
        raise BadValue("nothing to change: pass --name and/or --description")
    _show_connector(run, run.client().patch(f"/connectors/{seg(cid)}", body), full=False)


@connector.command("delete")
@click.argument("cid")
@command_options
def connector_delete(run: Run, cid: str) -> None:
    """Delete connector CID with its devices, state and content."""
    run.client().delete(f"/connectors/{seg(cid)}")
    if run.json:
        run.out.emit_json({"deleted": cid})
    else:
        run.out.line(f"deleted connector {cid}")


@connector.command("settings")
@click.argument("cid")
@click.option(
    "--set",
    "items",
    multiple=True,
    metavar="KEY=VALUE",
    help="change a setting, e.g. limits.max_payload=65536, or merge a JSON object (repeatable)",
)
@command_options
def connector_settings(run: Run, cid: str, items: tuple[str, ...]) -> None:
    """Show connector CID's settings, or change some with --set (deep-merged)."""
    path = f"/connectors/{seg(cid)}/settings"
    if items:
        result = run.client().patch(path, settings_patch(run, "ConnectorSettings", items, "--set"))
    else:
        result = run.client().get(path)
    if run.json:
        run.out.emit_json(result)
    else:
        run.out.record(result)


# -- resources ------------------------------------------------------------------------------


@click.group()
@group_options
def resource() -> None:
    """Resource definitions (aliases) shared by a connector's devices."""


@resource.command("list")
@click.argument("cid")
@command_options
def resource_list(run: Run, cid: str) -> None:
    """List connector CID's resources."""
    path = f"/connectors/{seg(cid)}/resources"
    print_page(run.out, run.client(), path, {}, RESOURCE_COLS, noun="resources")


def _show_resource(run: Run, data: dict[str, Any]) -> None:
    if run.json:
        run.out.emit_json(data)
    else:
        run.out.table([data], RESOURCE_COLS)


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
@click.option("--settable", is_flag=True, help="the cloud may set values (control)")
@click.option("--no-sync", is_flag=True, help="set values are not pushed or kept pending")
@click.option("--unit", default="")
@click.option("--allowed", help="the only values allowed, comma-separated")
@click.option("--initial", help="value before a device writes one")
@command_options
def resource_create(
    run: Run,
    cid: str,
    alias: str,
    fmt: str,
    settable: bool,
    no_sync: bool,
    unit: str,
    allowed: str | None,
    initial: str | None,
) -> None:
    """Define resource ALIAS on connector CID."""
    body: dict[str, Any] = {
        "alias": alias,
        "format": fmt,
        "settable": settable,
        "sync": not no_sync,
        "unit": unit,
        "initial": initial,
    }
    if allowed is not None:
        contract = run.contract()
        body["allowed"] = contract.convert(
            contract.field("Resource", "allowed"), allowed, "allowed"
        )
    _show_resource(run, run.client().post(f"/connectors/{seg(cid)}/resources", body))


@resource.command("update")
@click.argument("cid")
@click.argument("alias")
@click.argument("changes", nargs=-1, required=True, metavar="KEY=VALUE...")
@command_options
def resource_update(run: Run, cid: str, alias: str, changes: tuple[str, ...]) -> None:
    """Change fields of resource ALIAS: unit=°C settable=true allowed=on,off (or a JSON
    object)."""
    body = settings_patch(run, "ResourcePatch", changes, "change")
    path = f"/connectors/{seg(cid)}/resources/{seg(alias)}"
    _show_resource(run, run.client().patch(path, body))


@resource.command("delete")
@click.argument("cid")
@click.argument("alias")
@command_options
def resource_delete(run: Run, cid: str, alias: str) -> None:
    """Delete resource ALIAS from connector CID."""
    run.client().delete(f"/connectors/{seg(cid)}/resources/{seg(alias)}")
    if run.json:
        run.out.emit_json({"deleted": alias})
    else:
        run.out.line(f"deleted resource {alias}")
