"""``gateway integration …``: cloud-to-cloud integrations from the command line.

Talks to a running gateway's management REST API with httpx (the same contract as the
console).  The API address comes from ``--api`` / ``GATEWAY_API`` (default
``http://127.0.0.1:9080/api/v1``) and the bearer token from ``--token`` / ``GATEWAY_TOKEN``
or ``DIR/admin.token`` (``--data``, default ``./var``).  Output is JSON; errors print the
API's message (and every violation of a refused document) and exit 1.  Secret values given
with ``--secret`` are prompted without echo so they never land in shell history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import httpx

__all__ = ["integration"]

DEFAULT_API = "http://127.0.0.1:9080/api/v1"
TIMEOUT_S = 120.0  # a job run (sync/fetch of a large fleet) answers when it is done


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        try:
            with httpx.Client(timeout=TIMEOUT_S, trust_env=False) as client:
                resp = client.request(
                    method,
                    self.base + path,
                    headers=self.headers,
                    json=body,
                    params={k: v for k, v in params.items() if v is not None},
                )
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach the gateway at {self.base}: {exc}") from None
        if resp.status_code >= 400:
            try:
                err = resp.json()
            except ValueError:
                raise click.ClickException(f"HTTP {resp.status_code}: {resp.text[:500]}") from None
            lines = [f"{err.get('error', 'error')}: {err.get('message', '')}"]
            lines += [f"  {v['path']}: {v['message']}" for v in err.get("violations", [])]
            raise click.ClickException("\n".join(lines))
        if resp.status_code == 204 or not resp.content:
            return None
        if "json" not in resp.headers.get("content-type", ""):
            return resp.text
        return resp.json()


def _out(value: Any) -> None:
    if isinstance(value, str):
        click.echo(value, nl=not value.endswith("\n"))
    elif value is not None:
        click.echo(json.dumps(value, indent=2, sort_keys=True))


def _pairs(items: tuple[str, ...], what: str) -> dict[str, Any]:
    """``k=v`` pairs; a value that parses as JSON is taken as JSON (numbers, lists...)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint=what)
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _api(ctx: click.Context) -> Api:
    api = ctx.obj
    assert isinstance(api, Api)
    return api


def _base(cid: str, name: str | None = None) -> str:
    path = f"/connectors/{cid}/integrations"
    return path if name is None else f"{path}/{name}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--api",
    envvar="GATEWAY_API",
    default=DEFAULT_API,
    show_default=True,
    help="management API base URL",
)
@click.option("--token", envvar="GATEWAY_TOKEN", help="admin bearer token [DIR/admin.token]")
@click.option(
    "--data",
    type=click.Path(file_okay=False),
    default="./var",
    show_default=True,
    help="data directory holding admin.token",
)
@click.pass_context
def integration(ctx: click.Context, api: str, token: str | None, data: str) -> None:
    """Cloud-to-cloud integrations (third-party APIs described by OpenAPI 2)."""
    if token is None:
        path = Path(data) / "admin.token"
        try:
            token = path.read_text().strip()
        except OSError:
            raise click.UsageError(f"no --token and no readable {path}") from None
    ctx.obj = Api(api, token)


@integration.command()
@click.argument("cid")
@click.argument("document", type=click.File("r"))
@click.option("--allow-insecure-http", is_flag=True, help="development: accept http schemes")
@click.pass_context
def validate(ctx: click.Context, cid: str, document: Any, allow_insecure_http: bool) -> None:
    """Check DOCUMENT (YAML/JSON) and list every violation; exit 1 if it is refused."""
    result = _api(ctx).request(
        "POST",
        _base(cid) + "/validate",
        {"document": document.read(), "allow_insecure_http": allow_insecure_http},
    )
    if result["valid"]:
        click.echo("valid; operations: " + ", ".join(result["operations"]))
        return
    lines = [f"  {v['path']}: {v['message']}" for v in result["violations"]]
    raise click.ClickException("document refused:\n" + "\n".join(lines))


@integration.command()
@click.argument("cid")
@click.argument("name")
@click.argument("document", type=click.File("r"))
@click.option("--allow-insecure-http", is_flag=True, help="development: accept http schemes")
@click.option(
    "--set", "values", multiple=True, metavar="KEY=VALUE", help="configuration value (repeatable)"
)
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="KEY",
    help="secret configuration value, prompted without echo (repeatable)",
)
@click.option(
    "--setting",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="integration setting, JSON values allowed (repeatable)",
)
@click.option("--settings-file", type=click.File("r"), help="settings as a JSON object")
@click.pass_context
def add(
    ctx: click.Context,
    cid: str,
    name: str,
    document: Any,
    allow_insecure_http: bool,
    values: tuple[str, ...],
    secrets: tuple[str, ...],
    settings: tuple[str, ...],
    settings_file: Any,
) -> None:
    """Register integration NAME on connector CID from DOCUMENT."""
    config = {
        k: str(v) if not isinstance(v, str) else v for k, v in _pairs(values, "--set").items()
    }
    for key in secrets:
        config[key] = click.prompt(f"{key}", hide_input=True)
    merged = json.load(settings_file) if settings_file else {}
    merged.update(_pairs(settings, "--setting"))
    _out(
        _api(ctx).request(
            "POST",
            _base(cid),
            {
                "name": name,
                "document": document.read(),
                "allow_insecure_http": allow_insecure_http,
                "config": config,
                "settings": merged,
            },
        )
    )


@integration.command()
@click.argument("cid")
@click.argument("name", required=False)
@click.option("--document", "show_document", is_flag=True, help="print the stored document")
@click.pass_context
def show(ctx: click.Context, cid: str, name: str | None, show_document: bool) -> None:
    """Show integration NAME (or list the connector's integrations)."""
    if name is None:
        _out(_api(ctx).request("GET", _base(cid)))
    elif show_document:
        _out(_api(ctx).request("GET", _base(cid, name) + "/document"))
    else:
        _out(_api(ctx).request("GET", _base(cid, name)))


@integration.command()
@click.argument("cid")
@click.argument("name")
@click.option(
    "--set", "values", multiple=True, metavar="KEY=VALUE", help="configuration value (repeatable)"
)
@click.option("--unset", "unset", multiple=True, metavar="KEY", help="remove a value")
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="KEY",
    help="secret configuration value, prompted without echo (repeatable)",
)
@click.option(
    "--setting",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="integration setting, JSON values allowed (repeatable)",
)
@click.pass_context
def config(
    ctx: click.Context,
    cid: str,
    name: str,
    values: tuple[str, ...],
    unset: tuple[str, ...],
    secrets: tuple[str, ...],
    settings: tuple[str, ...],
) -> None:
    """Change configuration values and settings (with no option: show them)."""
    api = _api(ctx)
    if not (values or unset or secrets or settings):
        view = api.request("GET", _base(cid, name))
        _out({k: view[k] for k in ("config", "config_parameters", "missing_config", "settings")})
        return
    patch: dict[str, Any] = {
        k: str(v) if not isinstance(v, str) else v for k, v in _pairs(values, "--set").items()
    }
    patch.update(dict.fromkeys(unset))
    for key in secrets:
        patch[key] = click.prompt(f"{key}", hide_input=True)
    view = api.request(
        "PATCH",
        _base(cid, name) + "/config",
        {"values": patch, "settings": _pairs(settings, "--setting")},
    )
    _out({k: view[k] for k in ("config", "missing_config", "settings")})


@integration.command()
@click.argument("cid")
@click.argument("name")
@click.argument("operation")
@click.argument("params", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--json", "body", help="parameters as one JSON object")
@click.pass_context
def call(
    ctx: click.Context,
    cid: str,
    name: str,
    operation: str,
    params: tuple[str, ...],
    body: str | None,
) -> None:
    """Call OPERATION (an operationId) with parameters."""
    args: dict[str, Any] = json.loads(body) if body else {}
    args.update(_pairs(params, "PARAMS"))
    _out(_api(ctx).request("POST", _base(cid, name) + f"/operations/{operation}", args))


def _job(job: str) -> click.Command:
    @click.command(
        name=job, help=f"Run the asset {job} now and print its report (--runs: recent reports)."
    )
    @click.argument("cid")
    @click.argument("name")
    @click.option("--runs", "show_runs", is_flag=True, help="list recent reports instead")
    @click.pass_context
    def run(ctx: click.Context, cid: str, name: str, show_runs: bool) -> None:
        api = _api(ctx)
        if show_runs:
            _out(api.request("GET", _base(cid, name) + f"/jobs/{job}/runs"))
            return
        report = api.request("POST", _base(cid, name) + f"/jobs/{job}")
        _out(report)
        if report["status"] == "failed":
            ctx.exit(1)

    return run


integration.add_command(_job("sync"))
integration.add_command(_job("fetch"))


@integration.command()
@click.argument("cid")
@click.argument("name")
@click.option("--check", is_flag=True, help="probe now instead of showing the last result")
@click.option("--changes", is_flag=True, help="history of state changes only")
@click.option("--limit", type=int, default=20, show_default=True)
@click.pass_context
def health(ctx: click.Context, cid: str, name: str, check: bool, changes: bool, limit: int) -> None:
    """Health of the integration's API and its history."""
    api = _api(ctx)
    if check:
        _out(api.request("POST", _base(cid, name) + "/health"))
    else:
        _out(
            api.request(
                "GET",
                _base(cid, name) + "/health",
                limit=limit,
                changes="true" if changes else None,
            )
        )


@integration.command()
@click.argument("cid")
@click.argument("name")
@click.pass_context
def remove(ctx: click.Context, cid: str, name: str) -> None:
    """Remove integration NAME (the devices it created stay)."""
    _api(ctx).request("DELETE", _base(cid, name))
    click.echo(f"removed {name}")
