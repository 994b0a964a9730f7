"""``gateway integration …``: cloud-to-cloud integrations (a third-party REST API described
by an OpenAPI 2 document, one device per asset).

Same conventions as every other command (options anywhere, tables or ``--json``).  Values
given as text are converted by the contract, never guessed:

* ``--setting KEY=VALUE`` by the type of KEY in the gateway's ``IntegrationSettings`` schema
  (``/api/v1/openapi.json``), e.g. ``sync_interval_s=30``, ``tag_fields=site,model``;
* ``--set KEY=VALUE`` configuration values are sent as text; the gateway converts them by the
  types the document declares for its configuration parameters;
* ``call OP id=7`` by the type the document gives parameter ``id`` of operation OP (the
  integration's ``parameter_specs``): ``7`` stays text for a string parameter and becomes 7
  for an integer one; arrays are comma-separated or JSON; a body parameter is JSON; a file
  parameter is ``@path`` (or its text).

Secrets (``--secret KEY``) are prompted without echo, so they never land in shell history.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any

import click
import msgspec

from gateway.cli.client import seg
from gateway.cli.context import Failed, Run, command_options, group_options
from gateway.cli.output import Column
from gateway.cli.schema import BadValue, Contract, parse_pairs

__all__ = ["integration"]

LIST_COLS = (
    Column("name"),
    Column("title"),
    Column("base_url", "API"),
    Column("healthy", kind="bool"),
    Column("operations"),
    Column("missing_config", "MISSING CONFIG"),
)
OPERATION_COLS = (
    Column("operation_id", "OPERATION"),
    Column("method"),
    Column("path"),
    Column("params", "PARAMETERS"),
)
CONFIG_COLS = (
    Column("name"),
    Column("type"),
    Column("required", kind="bool"),
    Column("secret", kind="bool"),
    Column("value"),
)
RUN_COLS = (
    Column("id"),
    Column("trigger"),
    Column("started", kind="time"),
    Column("status"),
    Column("seen"),
    Column("created"),
    Column("updated"),
    Column("failed"),
    Column("vanished"),
    Column("error"),
)
HEALTH_COLS = (
    Column("timestamp", "TIME", kind="time"),
    Column("healthy", kind="bool"),
    Column("status_code", "STATUS"),
    Column("latency_ms", "LATENCY MS"),
    Column("detail"),
)
JOB_COLS = (
    Column("job"),
    Column("interval_s", "EVERY (S)"),
    Column("running", kind="bool"),
    Column("last_status", "LAST RUN"),
    Column("last_finished", "FINISHED", kind="time"),
)
CONFIG_VIEW = ("config", "config_parameters", "missing_config", "settings")


def _base(cid: str, name: str | None = None) -> str:
    path = f"/connectors/{seg(cid)}/integrations"
    return path if name is None else f"{path}/{seg(name)}"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise BadValue(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BadValue(f"{path} is not UTF-8 text") from None


def _settings(contract: Contract, items: tuple[str, ...]) -> dict[str, Any]:
    return {
        key: contract.convert(contract.field("IntegrationSettings", key), text, key)
        for key, text in parse_pairs(items, "--setting")
    }


def _config_rows(view: dict[str, Any]) -> list[dict[str, Any]]:
    values = view.get("config", {})
    return [
        {
            **p,
            "value": ("(set)" if p["set"] else None) if p["secret"] else values.get(p["name"]),
        }
        for p in view.get("config_parameters", [])
    ]


def _show(run: Run, view: dict[str, Any]) -> None:
    """An integration: summary, operations, configuration."""
    if run.json:
        run.out.emit_json(view)
        return
    health = view.get("health") or {}
    run.out.record(
        {
            "name": view["name"],
            "connector": view["connector_id"],
            "title": view["title"],
            "api": view["base_url"],
            "health": _health_text(health) if health else "not probed yet",
            "document version": view["doc_version"],
            "missing config": view["missing_config"],
            "updated": view["updated"],
        },
        {"updated": "time"},
    )
    run.out.write("\n")
    run.out.table(
        [
            {**op, "params": ", ".join(_param_text(p) for p in _specs(op))}
            for op in view["operations"]
        ],
        OPERATION_COLS,
    )
    if view["config_parameters"]:
        run.out.write("\n")
        run.out.table(_config_rows(view), CONFIG_COLS)


def _health_text(h: dict[str, Any]) -> str:
    state = "healthy" if h.get("healthy") else "unhealthy"
    return f"{state} ({h.get('detail') or h.get('status_code')})"


def _specs(op: dict[str, Any]) -> list[dict[str, Any]]:
    """The operation's parameter specs (or, from an older gateway, names typed as text)."""
    specs = op.get("parameter_specs")
    if specs:
        return list(specs)
    return [
        {"name": n, "location": "query", "type": "string", "items": None, "required": False}
        for n in op.get("parameters", [])
    ]


def _param_text(p: dict[str, Any]) -> str:
    kind = f"{p['type']}[{p['items']}]" if p.get("items") else p["type"]
    return f"{p['name']}{'' if p['required'] else '?'}:{kind}"


@click.group()
@group_options
def integration() -> None:
    """Cloud-to-cloud integrations: a third-party API (OpenAPI 2) kept as devices."""


@integration.command("list")
@click.argument("cid")
@command_options
def integration_list(run: Run, cid: str) -> None:
    """List connector CID's integrations."""
    page = run.client().get(_base(cid))
    if run.json:
        run.out.emit_json(page)
        return
    rows = [
        {
            **v,
            "healthy": (v.get("health") or {}).get("healthy"),
            "operations": len(v["operations"]),
        }
        for v in page["items"]
    ]
    run.out.table(rows, LIST_COLS)


@integration.command("show")
@click.argument("cid")
@click.argument("name")
@command_options
def integration_show(run: Run, cid: str, name: str) -> None:
    """Show integration NAME: its API, health, operations and configuration."""
    _show(run, run.client().get(_base(cid, name)))


@integration.command("document")
@click.argument("cid")
@click.argument("name")
@command_options
def integration_document(run: Run, cid: str, name: str) -> None:
    """Print the stored OpenAPI document of integration NAME."""
    text = run.client().get(_base(cid, name) + "/document")
    if run.json:
        run.out.emit_json({"document": text})
    else:
        run.out.write(text if text.endswith("\n") else text + "\n")


@integration.command("validate")
@click.argument("cid")
@click.argument("document", type=click.Path(exists=True, dir_okay=False))
@click.option("--allow-insecure-http", is_flag=True, help="development: accept http schemes")
@command_options
def integration_validate(run: Run, cid: str, document: str, allow_insecure_http: bool) -> None:
    """Check DOCUMENT (YAML or JSON) and list every violation; exit 1 if it is refused."""
    result = run.client().post(
        _base(cid) + "/validate",
        {"document": _read(document), "allow_insecure_http": allow_insecure_http},
    )
    if run.json:
        run.out.emit_json(result)
    elif result["valid"]:
        run.out.line("valid; operations: " + ", ".join(result["operations"]))
    if not result["valid"]:
        details = [f"{v['path']}: {v['message']}" for v in result["violations"]]
        n = len(details)
        raise Failed(f"{document} is refused ({n} problem{'' if n == 1 else 's'})", details=details)


def _config_values(
    values: tuple[str, ...], secrets: tuple[str, ...], unset: tuple[str, ...] = ()
) -> dict[str, Any]:
    config: dict[str, Any] = dict(parse_pairs(values, "--set"))
    config.update(dict.fromkeys(unset))
    for key in secrets:
        config[key] = click.prompt(key, hide_input=True)
    return config


_SET = click.option(
    "--set",
    "values",
    multiple=True,
    metavar="KEY=VALUE",
    help="configuration value the document declares (repeatable)",
)
_SECRET = click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="KEY",
    help="secret configuration value, asked for without echo (repeatable)",
)
_SETTING = click.option(
    "--setting",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="integration setting, e.g. sync_interval_s=30 (repeatable; README lists them)",
)


@integration.command("add")
@click.argument("cid")
@click.argument("name")
@click.argument("document", type=click.Path(exists=True, dir_okay=False))
@click.option("--allow-insecure-http", is_flag=True, help="development: accept http schemes")
@_SET
@_SECRET
@_SETTING
@click.option(
    "--settings-file",
    type=click.Path(exists=True, dir_okay=False),
    help="settings as one JSON object (--setting wins)",
)
@command_options
def integration_add(
    run: Run,
    cid: str,
    name: str,
    document: str,
    allow_insecure_http: bool,
    values: tuple[str, ...],
    secrets: tuple[str, ...],
    settings: tuple[str, ...],
    settings_file: str | None,
) -> None:
    """Register integration NAME on connector CID from DOCUMENT (OpenAPI 2, YAML or JSON)."""
    merged: dict[str, Any] = {}
    if settings_file:
        try:
            merged = msgspec.json.decode(_read(settings_file))
        except msgspec.DecodeError as exc:
            raise BadValue(f"{settings_file}: not JSON ({exc})") from None
        if not isinstance(merged, dict):
            raise BadValue(f"{settings_file} must hold a JSON object")
    if settings:
        merged.update(_settings(run.contract(), settings))
    body = {
        "name": name,
        "document": _read(document),
        "allow_insecure_http": allow_insecure_http,
        "config": _config_values(values, secrets),
        "settings": merged,
    }
    _show(run, run.client().post(_base(cid), body))


@integration.command("update")
@click.argument("cid")
@click.argument("name")
@click.argument("document", type=click.Path(exists=True, dir_okay=False))
@click.option("--allow-insecure-http", is_flag=True, help="development: accept http schemes")
@command_options
def integration_update(
    run: Run, cid: str, name: str, document: str, allow_insecure_http: bool
) -> None:
    """Replace integration NAME's document with a new version."""
    body = {"document": _read(document), "allow_insecure_http": allow_insecure_http}
    _show(run, run.client().put(_base(cid, name) + "/document", body))


@integration.command("config")
@click.argument("cid")
@click.argument("name")
@_SET
@click.option("--unset", multiple=True, metavar="KEY", help="remove a configuration value")
@_SECRET
@_SETTING
@command_options
def integration_config(
    run: Run,
    cid: str,
    name: str,
    values: tuple[str, ...],
    unset: tuple[str, ...],
    secrets: tuple[str, ...],
    settings: tuple[str, ...],
) -> None:
    """Show or change integration NAME's configuration values and settings."""
    c = run.client()
    if values or unset or secrets or settings:
        patch = {
            "values": _config_values(values, secrets, unset),
            "settings": _settings(run.contract(), settings) if settings else {},
        }
        view = c.patch(_base(cid, name) + "/config", patch)
    else:
        view = c.get(_base(cid, name))
    if run.json:
        run.out.emit_json({k: view[k] for k in CONFIG_VIEW})
        return
    if view["config_parameters"]:
        run.out.table(_config_rows(view), CONFIG_COLS)
        run.out.write("\n")
    run.out.record({"settings": view["settings"]})
    if view["missing_config"]:
        run.out.warn("missing configuration: " + ", ".join(view["missing_config"]))


def _file(name: str, text: str) -> Any:
    """A ``type: file`` parameter: ``@path`` sends that file (any bytes, base64 in the JSON
    body, named after it); other text is sent as the file's content."""
    if not text.startswith("@"):
        return text
    path = Path(text[1:])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadValue(f"{name}: cannot read {path}: {exc.strerror}") from None
    return {
        "filename": path.name,
        "content_type": mimetypes.guess_type(path.name)[0] or "application/octet-stream",
        "content_base64": base64.b64encode(data).decode(),
    }


def _convert(spec: dict[str, Any], text: str) -> Any:
    """Text from the command line as the value the document declares."""
    name, kind = spec["name"], spec["type"]
    if kind == "file":
        return _file(name, text)
    if spec["location"] == "body":
        if kind == "string":
            return text
        try:
            return msgspec.json.decode(text)
        except msgspec.DecodeError:
            raise BadValue(f"{name} is the request body ({kind}): give it as JSON") from None
    if kind == "array":
        if text.lstrip().startswith("["):
            try:
                return msgspec.json.decode(text)
            except msgspec.DecodeError as exc:
                raise BadValue(f"{name}: not a JSON array ({exc})") from None
        item = {"name": name, "location": "query", "type": spec.get("items") or "string"}
        return [_convert(item, part.strip()) for part in text.split(",") if part.strip()]
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        what = "an integer" if kind == "integer" else "a number"
        raise BadValue(f"{name} is {what} in the document, not {text!r}") from None
    if kind == "boolean":
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise BadValue(f"{name} is a boolean in the document: true or false, not {text!r}")
    return text


@integration.command("call")
@click.argument("cid")
@click.argument("name")
@click.argument("operation")
@click.argument("params", nargs=-1, metavar="[PARAM=VALUE]...")
@click.option("--body", help="every parameter as one JSON object (PARAM=VALUE pairs win)")
@command_options
def integration_call(
    run: Run,
    cid: str,
    name: str,
    operation: str,
    params: tuple[str, ...],
    body: str | None,
) -> None:
    """Call OPERATION (an operationId) of integration NAME; values are converted by the
    parameter types the document declares."""
    c = run.client()
    args: dict[str, Any] = {}
    if body:
        try:
            args = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise BadValue(f"--body is not JSON ({exc})") from None
        if not isinstance(args, dict):
            raise BadValue("--body must be a JSON object")
    if params:
        ops = {op["operation_id"]: op for op in c.get(_base(cid, name))["operations"]}
        if operation not in ops:
            raise Failed(
                f"{name} has no operation {operation!r} (operations: {', '.join(sorted(ops))})"
            )
        specs = {p["name"]: p for p in _specs(ops[operation])}
        for key, text in parse_pairs(params, "parameter"):
            spec = specs.get(key)
            args[key] = text if spec is None else _convert(spec, text)  # unknown: the gateway says
    result = c.post(_base(cid, name) + f"/operations/{seg(operation)}", args)
    if run.json:
        run.out.emit_json(result)
        return
    run.out.hint(f"HTTP {result['status']}")
    run.out.emit_json(result["body"])


def _job(job: str) -> click.Command:
    @click.command(job)
    @click.argument("cid")
    @click.argument("name")
    @click.option("--runs", "show_runs", is_flag=True, help="list recent runs instead")
    @command_options
    def run_job(run: Run, cid: str, name: str, show_runs: bool) -> None:
        c = run.client()
        if show_runs:
            page = c.get(_base(cid, name) + f"/jobs/{job}/runs")
            if run.json:
                run.out.emit_json(page)
            else:
                run.out.table(page["items"], RUN_COLS)
            return
        with run.out.working(f"running {job} of {name} (the gateway answers when it is done)"):
            report = c.post(_base(cid, name) + f"/jobs/{job}")
        if run.json:
            run.out.emit_json(report)
        else:
            run.out.record({k: v for k, v in report.items() if k != "errors"})
            if report.get("errors"):
                run.out.table(report["errors"], (Column("asset_id", "ASSET"), Column("error")))
        if report["status"] == "failed":
            raise Failed(f"{job} failed: {report.get('error') or 'see the report'}")

    run_job.help = f"Run the {job} now and print its report (--runs: recent reports).  " + (
        "sync lists the assets and keeps one device per asset."
        if job == "sync"
        else "fetch reads each asset's state into its device."
    )
    return run_job


integration.add_command(_job("sync"))
integration.add_command(_job("fetch"))


@integration.command("jobs")
@click.argument("cid")
@click.argument("name")
@command_options
def integration_jobs(run: Run, cid: str, name: str) -> None:
    """Show integration NAME's jobs: schedule, whether running, last run."""
    view = run.client().get(_base(cid, name) + "/jobs")
    if run.json:
        run.out.emit_json(view)
        return
    rows = [
        {
            **j,
            "last_status": (j.get("last") or {}).get("status"),
            "last_finished": (j.get("last") or {}).get("finished"),
        }
        for j in view["jobs"]
    ]
    run.out.table(rows, JOB_COLS)


@integration.command("health")
@click.argument("cid")
@click.argument("name")
@click.option("--check", is_flag=True, help="probe the API now")
@click.option("--changes", is_flag=True, help="only probes that changed the state")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@command_options
def integration_health(
    run: Run, cid: str, name: str, check: bool, changes: bool, limit: int
) -> None:
    """Integration NAME's API health and its history."""
    c = run.client()
    if check:
        probe = c.post(_base(cid, name) + "/health")
        if run.json:
            run.out.emit_json(probe)
        else:
            run.out.table([probe], HEALTH_COLS)
        return
    view = c.get(_base(cid, name) + "/health", limit=limit, changes="true" if changes else None)
    if run.json:
        run.out.emit_json(view)
    else:
        run.out.table(view["history"], HEALTH_COLS)


@integration.command("remove")
@click.argument("cid")
@click.argument("name")
@command_options
def integration_remove(run: Run, cid: str, name: str) -> None:
    """Remove integration NAME (the devices it created stay)."""
    run.client().delete(_base(cid, name))
    if run.json:
        run.out.emit_json({"removed": name})
    else:
        run.out.line(f"removed integration {name}")
