"""Where the CLI finds its gateway, and the options every command accepts.

Every command, and every group above it, accepts the common options (so they may come
before or after any subcommand: ``gateway --data /srv/gw device list demo`` and ``gateway
device list demo --data /srv/gw`` mean the same; a later one wins):

``--data DIR``
    the gateway's data directory (default ``GATEWAY_DATA``, else ``./var``): its
    ``admin.token`` is the bearer token and its ``run.json`` says where the running gateway's
    management API listens.
``--api URL``
    the management API's address, ``http://host:port`` (default ``GATEWAY_API``, else
    ``DIR/run.json``, else ``DIR/gateway.toml`` / ``GATEWAY_API_HOST`` / ``GATEWAY_API_PORT``,
    else ``http://127.0.0.1:9080``).  One meaning everywhere; a trailing ``/api/v1`` is
    accepted and dropped.
``--token T``
    an admin token (default ``GATEWAY_TOKEN``, else ``DIR/admin.token``).
``--json``
    machine-readable output.

Nothing is resolved until a command needs it, so ``--help`` works without a token, a data
directory or a running gateway.  Each resolved value remembers where it came from, so that
an error can say what to change ("no ./var/admin.token; pass --data DIR").
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import click
import msgspec

from gateway.cli.client import ApiError, Client, Unreachable
from gateway.cli.output import Output
from gateway.cli.schema import BadValue, Contract

__all__ = [
    "Failed",
    "Incomplete",
    "NoAnswer",
    "Run",
    "Settings",
    "Target",
    "command_options",
    "group_options",
    "resolve",
    "root_options",
    "settings",
    "shown",
]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DATA = "./var"
DEFAULT_API = "http://127.0.0.1:9080"


class Settings:
    """The common options as given, at whatever level of the command line."""

    __slots__ = ("api", "data", "json", "token")

    def __init__(self) -> None:
        self.api: str | None = None
        self.token: str | None = None
        self.data: str | None = None
        self.json = False


class Target(msgspec.Struct, frozen=True):
    """The gateway a command talks to, and where each fact came from."""

    data: Path
    api: str
    api_from: str  # "--api", "GATEWAY_API", "<DIR>/run.json", "<DIR>/gateway.toml", "default"
    token: str | None
    token_from: str  # "--token", "GATEWAY_TOKEN", "<DIR>/admin.token", or what was missing
    pid: int | None  # of the gateway that wrote run.json


def settings(ctx: click.Context) -> Settings:
    """The one :class:`Settings` of this command line (on the root context)."""
    return ctx.find_root().ensure_object(Settings)


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is None or value is False:
        return
    setattr(settings(ctx), str(param.name), value)


def _common_options(*, hidden: bool) -> list[Callable[[F], F]]:
    def opt(*decls: str, **kw: Any) -> Callable[[F], F]:
        return click.option(*decls, expose_value=False, callback=_remember, hidden=hidden, **kw)

    return [
        opt(
            "--data",
            "data",
            type=click.Path(file_okay=False),
            help="the gateway's data directory (admin.token, run.json) [GATEWAY_DATA or ./var]",
        ),
        opt(
            "--api",
            "api",
            metavar="URL",
            help="management API address, http://host:port [GATEWAY_API, else DIR/run.json]",
        ),
        opt("--token", "token", help="admin token [GATEWAY_TOKEN, else DIR/admin.token]"),
        opt("--json", "json", is_flag=True, default=None, help="print JSON for scripts"),
    ]


def group_options(fn: F) -> F:
    """The common options on a group (accepted, kept out of its help to keep it short)."""
    for decorate in reversed(_common_options(hidden=True)):
        fn = decorate(fn)
    return fn


def root_options(fn: F) -> F:
    """The common options on the ``gateway`` group itself, listed in its help."""
    for decorate in reversed(_common_options(hidden=False)):
        fn = decorate(fn)
    return fn


def command_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The common options on a command, which receives a :class:`Run` as ``run``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        run = Run(settings(click.get_current_context()))
        try:
            return fn(run, *args, **kw)
        except (ApiError, Unreachable, NoToken) as exc:
            raise failure(exc, run.target) from None
        except BadValue as exc:
            raise Incomplete(str(exc)) from None

    out: Callable[..., Any] = wrapper
    for decorate in reversed(_common_options(hidden=False)):
        out = decorate(out)
    return out


def normalize_api(url: str) -> str:
    """``host:port`` → ``http://host:port``; no trailing ``/`` or ``/api/v1``."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    if url.endswith("/api/v1"):
        url = url[: -len("/api/v1")]
    return url


def _connect_host(host: str) -> str:
    """A listening address as a host to connect to: any-address binds mean loopback."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    return f"[{ip}]" if ip.version == 6 else str(ip)


def _from_config(data: Path, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The address a gateway with this data directory's configuration listens on."""
    from gateway.config import load_config

    try:
        config = load_config({"data": str(data)}, environ=dict(environ))
    except (ValueError, OSError):
        return None
    source = "default"
    if (data / "gateway.toml").exists():
        source = shown(data / "gateway.toml")
    elif "GATEWAY_API_PORT" in environ or "GATEWAY_API_HOST" in environ:
        source = "GATEWAY_API_HOST/GATEWAY_API_PORT"
    return f"http://{_connect_host(config.api_host)}:{config.api_port}", source


def resolve(given: Settings, environ: Mapping[str, str] | None = None) -> Target:
    """Turn the options as given, the environment and the data directory into a target."""
    env = os.environ if environ is None else environ
    data = Path(given.data or env.get("GATEWAY_DATA") or DEFAULT_DATA)
    pid: int | None = None
    run_json = data / "run.json"
    if given.api:
        api, api_from = normalize_api(given.api), "--api"
    elif env.get("GATEWAY_API"):
        api, api_from = normalize_api(env["GATEWAY_API"]), "GATEWAY_API"
    else:
        found = None
        try:
            info = json.loads(run_json.read_text())
            found = (
                f"http://{_connect_host(str(info.get('api_host', '127.0.0.1')))}"
                f":{int(info['ports']['api'])}"
            )
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if found:
            api, api_from = found, shown(run_json)
        else:
            api, api_from = _from_config(data, env) or (DEFAULT_API, "default")
    token_file = data / "admin.token"
    token: str | None
    if given.token:
        token, token_from = given.token, "--token"
    elif env.get("GATEWAY_TOKEN"):
        token, token_from = env["GATEWAY_TOKEN"], "GATEWAY_TOKEN"
    else:
        try:
            token, token_from = token_file.read_text().strip() or None, shown(token_file)
        except FileNotFoundError:
            token, token_from = None, f"no {shown(token_file)}"
        except OSError as exc:
            token, token_from = None, f"cannot read {shown(token_file)} ({exc.strerror})"
    return Target(data, api, api_from, token, token_from, pid)


def shown(path: Path) -> str:
    """A path as the user would type it: ``./var/admin.token``, not ``var/admin.token``."""
    text = str(path)
    return text if path.is_absolute() or text.startswith(".") else f"./{text}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Run:
    """One command's view of the command line: its output and, on first use, its target
    and client.  The client is closed when the click context ends."""

    def __init__(self, given: Settings) -> None:
        self.given = given
        self.out = Output(json=given.json)
        self._target: Target | None = None
        self._client: Client | None = None
        self._contract: Contract | None = None

    @property
    def json(self) -> bool:
        return self.given.json

    @property
    def target(self) -> Target:
        if self._target is None:
            self._target = resolve(self.given)
        return self._target

    def client(self, *, token: bool = True) -> Client:
        """The API client; with ``token`` (every route but health) a missing token is a
        :class:`NoToken` error that says what to pass."""
        t = self.target
        if token and t.token is None:
            raise NoToken(t)
        if self._client is None:
            self._client = Client(t.api, t.token)
            click.get_current_context().call_on_close(self._client.close)
        return self._client

    def contract(self) -> Contract:
        """The gateway's OpenAPI schemas (public: no token needed), read once."""
        if self._contract is None:
            self._contract = Contract(self.client(token=False).get("/openapi.json"))
        return self._contract


class NoToken(Exception):
    """No admin token anywhere; the message says where the CLI looked."""

    def __init__(self, target: Target) -> None:
        super().__init__(
            f"{target.token_from}; pass --data DIR (the gateway's data directory), "
            "--token TOKEN or set GATEWAY_TOKEN"
        )


class Failed(click.ClickException):
    """A command failed for a reason the user can act on: one line on stderr, ``error: …``.

    Exit status: 1 the gateway refused (or the work failed), 2 the command line is
    incomplete or wrong (:class:`Incomplete`: no admin token, a bad value), 3 no gateway
    answers at the address (:class:`NoAnswer`).
    """

    exit_code = 1

    def __init__(self, message: str, *, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = list(details)

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=file is None, file=file)
        for line in self.details:
            click.echo(f"  {line}", err=file is None, file=file)


class Incomplete(Failed):
    """What was given cannot work (no admin token, a value of the wrong type)."""

    exit_code = 2


class NoAnswer(Failed):
    """No gateway answers at the address."""

    exit_code = 3


def failure(exc: ApiError | Unreachable | NoToken, target: Target) -> Failed:
    """The one line shown for an error: what happened, and what to change."""
    if isinstance(exc, NoToken):
        return Incomplete(str(exc))
    if isinstance(exc, Unreachable):
        where = f"no gateway answers at {exc.url} ({exc.reason})"
        if target.api_from in ("--api", "GATEWAY_API"):
            return NoAnswer(f"{where}; check {target.api_from}")
        if target.pid is not None and not pid_alive(target.pid):
            return NoAnswer(
                f"{where}: {target.api_from} is left from a gateway that is no longer running "
                f"(pid {target.pid}); start it again (scripts/serve) or pass --api URL"
            )
        return NoAnswer(
            f"{where}; is it running? start it with scripts/serve, or pass --data DIR "
            "(its data directory) or --api URL"
        )
    if exc.status == 401:
        if target.token_from.startswith(("--token", "GATEWAY_TOKEN")):
            advice = f"check {target.token_from}"
        else:
            advice = f"is {shown(target.data)} that gateway's data directory? pass --data DIR"
        return Failed(
            f"the gateway at {target.api} refused the admin token from {target.token_from} "
            f"({exc.message}); {advice}"
        )
    details = [f"{v.get('path', '')}: {v.get('message', '')}" for v in exc.violations]
    return Failed(f"{exc.message} ({exc.code})", details=details)
