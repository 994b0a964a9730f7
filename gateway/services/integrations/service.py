"""The integrations service: documents, configuration, calls, health and jobs per connector.

:class:`IntegrationService` is built by :class:`gateway.services.bundle.Services` with the
collaborators it uses (store, connector registry, devices, state, the debug log) and is
reachable as ``services.integrations``; :func:`serve_integrations` runs the schedules
(health probes, asset sync, asset fetch) in the root nursery.  Jobs of one integration
never overlap (one lock per integration); a job triggered through the API while a scheduled
one runs waits for it.  A failure of one
integration's job is logged and recorded in its run report; it never stops the scheduler.

Resource handling: no HTTP client outlives a call, a probe or a job run; the scheduler's
tasks all live in its own nursery and end with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import trio

from gateway.clock import now_us
from gateway.errors import BadRequest, GatewayError, NotFound
from gateway.model import LogRecord
from gateway.services.connectors import Registry
from gateway.services.devices import DeviceService
from gateway.services.integrations import storage
from gateway.services.integrations.bound import Bound
from gateway.services.integrations.health import run_health_check
from gateway.services.integrations.jobs import run_fetch, run_sync
from gateway.services.integrations.models import (
    ConfigParamInfo,
    HealthCheck,
    HealthView,
    IntegrationSettings,
    IntegrationView,
    JobInfo,
    JobsView,
    OperationInfo,
    ParameterInfo,
    RunReport,
    ValidationResult,
)
from gateway.services.integrations.operations import (
    CallResult,
    coerce_config,
)
from gateway.services.integrations.operations import base_url as make_base_url
from gateway.services.integrations.validate import (
    DocumentInvalid,
    ParamSpec,
    Spec,
    check_document,
    load_document,
    parse_document,
)
from gateway.services.secretbox import SecretBox
from gateway.services.state import StateService
from gateway.store.api import Store

__all__ = ["JOBS", "Bound", "IntegrationService", "serve_integrations"]

log = logging.getLogger(__name__)

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
MAX_NAME = 64
JOBS = ("sync", "fetch")
MAX_IDLE_S = 60.0  # the scheduler re-reads the integration list at least this often


def _check_name(name: str) -> None:
    if not 1 <= len(name) <= MAX_NAME or not set(name) <= NAME_CHARS:
        raise BadRequest(f"integration names are 1-{MAX_NAME} characters of a-z 0-9 _ -")


def _parameter_info(p: ParamSpec) -> ParameterInfo:
    """What a client needs to convert a parameter given as text: its JSON type."""
    schema = p.schema if isinstance(p.schema, dict) else {}
    kind = schema.get("type")
    items = schema.get("items")
    item_kind = items.get("type") if isinstance(items, dict) else None
    return ParameterInfo(
        p.name,
        p.location,
        kind if isinstance(kind, str) else "object",
        item_kind if isinstance(item_kind, str) else None,
        p.required,
    )


class SettingsInvalid(BadRequest):
    code = "invalid_settings"


def _settings(raw: Mapping[str, Any]) -> IntegrationSettings:
    try:
        s = msgspec.convert(raw, IntegrationSettings)
    except msgspec.ValidationError as exc:
        raise SettingsInvalid(f"settings: {exc}") from None
    problems = s.check()
    if problems:
        raise SettingsInvalid("settings: " + "; ".join(problems))
    return s


def _check_jobs(spec: Spec, s: IntegrationSettings) -> None:
    """The job settings must name what the document has, so a newcomer learns at ``add``
    (not at the first sync) that the API calls its listing ``listPumps``.  Raises
    ``SettingsInvalid`` naming the missing operation or parameter and what there is."""
    ops = ", ".join(sorted(spec.operations)) or "none"
    for job, name in (("sync", s.sync_operation), ("fetch", s.fetch_operation)):
        if name is not None and name not in spec.operations:
            raise SettingsInvalid(
                f"settings.{job}_operation: the document has no operation {name!r} (its "
                f"operations: {ops}); set {job}_operation to the operationId to use, or "
                f"null to turn the {job} job off"
            )
    if s.fetch_operation is not None:
        params = [p.name for p in spec.operations[s.fetch_operation].parameters]
        if s.fetch_id_parameter not in params:
            raise SettingsInvalid(
                f"settings.fetch_id_parameter: operation {s.fetch_operation!r} has no "
                f"parameter {s.fetch_id_parameter!r} (its parameters: "
                f"{', '.join(params) or 'none'})"
            )


class IntegrationService:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        devices: DeviceService,
        state: StateService,
        *,
        debug: Callable[[LogRecord], None],
        box: SecretBox,
    ) -> None:
        self.store = store
        self.registry = registry
        self.devices = devices
        self.state = state
        self.debug = debug
        self.box = box
        self._bound: dict[tuple[str, str], Bound] = {}
        self._locks: dict[tuple[str, str], trio.Lock] = {}
        self._running: set[tuple[str, str, str]] = set()
        self._due: dict[tuple[str, str, str], float] = {}
        self._changed = trio.Event()

    # -- documents ------------------------------------------------------------------------

    @staticmethod
    def validate(document: str, *, allow_http: bool = False) -> ValidationResult:
        """Check a document without storing it: every violation, by JSON path."""
        try:
            doc = load_document(document)
        except DocumentInvalid as exc:
            return ValidationResult(False, list(exc.violations), [])
        violations = check_document(doc, allow_http=allow_http)
        if violations:
            return ValidationResult(False, violations, [])
        spec = parse_document(document, allow_http=allow_http)
        return ValidationResult(True, [], sorted(spec.operations))

    async def add(
        self,
        cid: str,
        name: str,
        document: str,
        *,
        allow_http: bool = False,
        config: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> IntegrationView:
        """Register an integration.  Raises ``DocumentInvalid`` (refused whole, every
        violation listed), ``AlreadyExists``, ``BadRequest`` (config or settings)."""
        self.registry.require(cid)
        _check_name(name)
        spec = parse_document(document, allow_http=allow_http)
        s = _settings(settings or {})
        _check_jobs(spec, s)
        plain, sealed = self._seal(cid, name, spec, {}, {}, config or {})
        ts = now_us()
        rec = storage.StoredIntegration(
            cid,
            name,
            document,
            1,
            spec.version,
            allow_http,
            plain,
            sealed,
            msgspec.to_builtins(s),
            ts,
            ts,
        )
        await storage.insert_integration(self.store, rec)
        log.info("integration %s/%s added (%s %s)", cid, name, spec.title, spec.version)
        self._kick(cid, name)
        return await self.get(cid, name)

    async def update_document(
        self, cid: str, name: str, document: str, *, allow_http: bool = False
    ) -> IntegrationView:
        """Upload a new version of the document; configuration values of parameters the new
        document no longer declares are dropped.  Raises ``NotFound`` (before looking at the
        document), ``DocumentInvalid``, or ``SettingsInvalid`` when the current settings
        name an operation the new document lacks."""
        rec = await self._record(cid, name)
        spec = parse_document(document, allow_http=allow_http)
        _check_jobs(spec, _settings(rec.settings))
        plain = {k: v for k, v in rec.config.items() if k in spec.config_params}
        sealed = {
            k: v
            for k, v in rec.secrets.items()
            if k in spec.config_params and spec.config_params[k].secret
        }
        new = msgspec.structs.replace(
            rec,
            document=document,
            doc_version=rec.doc_version + 1,
            api_version=spec.version,
            allow_http=allow_http,
            config=plain,
            secrets=sealed,
            updated=now_us(),
        )
        await storage.update_integration(self.store, new)
        self._kick(cid, name)
        return await self.get(cid, name)

    async def configure(
        self,
        cid: str,
        name: str,
        *,
        values: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> IntegrationView:
        """Set configuration values (``None`` unsets one) and/or change settings (merged
        into the current ones).  Secret values are encrypted before they reach the store."""
        rec = await self._record(cid, name)
        spec = parse_document(rec.document, allow_http=rec.allow_http)
        plain, sealed = self._seal(cid, name, spec, rec.config, rec.secrets, values or {})
        merged = {**rec.settings, **(settings or {})}
        s = _settings(merged)
        _check_jobs(spec, s)
        new = msgspec.structs.replace(
            rec, config=plain, secrets=sealed, settings=msgspec.to_builtins(s), updated=now_us()
        )
        await storage.update_integration(self.store, new)
        self._kick(cid, name)
        return await self.get(cid, name)

    def _seal(
        self,
        cid: str,
        name: str,
        spec: Spec,
        plain: Mapping[str, Any],
        sealed: Mapping[str, str],
        values: Mapping[str, Any],
    ) -> tuple[dict[str, Any], dict[str, str]]:
        out_plain, out_sealed = dict(plain), dict(sealed)
        unset = [k for k, v in values.items() if v is None]
        for k in unset:
            if k not in spec.config_params:
                raise BadRequest(f"unknown configuration parameter {k!r}")
            out_plain.pop(k, None)
            out_sealed.pop(k, None)
        typed = coerce_config(
            spec.config_params, {k: v for k, v in values.items() if v is not None}
        )
        for k, v in typed.items():
            if spec.config_params[k].secret:
                text = v if isinstance(v, str) else msgspec.json.encode(v).decode()
                out_sealed[k] = self.box.encrypt(text, context=f"{cid}/{name}/{k}")
                out_plain.pop(k, None)
            else:
                out_plain[k] = v
        return out_plain, out_sealed

    async def remove(self, cid: str, name: str) -> None:
        await storage.delete_integration(self.store, cid, name)
        self._bound.pop((cid, name), None)
        self._kick(cid, name)

    # -- reading --------------------------------------------------------------------------

    async def _record(self, cid: str, name: str) -> storage.StoredIntegration:
        self.registry.require(cid)
        return await storage.get_integration(self.store, cid, name)

    async def bind(self, cid: str, name: str) -> Bound:
        """The callable integration (cached until its record changes)."""
        rec = await self._record(cid, name)
        cached = self._bound.get((cid, name))
        if cached is not None and cached.updated == rec.updated:
            return cached
        spec = parse_document(rec.document, allow_http=rec.allow_http)
        config = dict(rec.config)
        for k, token in rec.secrets.items():
            text = self.box.decrypt(token, context=f"{cid}/{name}/{k}")
            kind = spec.config_params[k].type if k in spec.config_params else "string"
            config[k] = text if kind == "string" else msgspec.json.decode(text)
        bound = Bound(rec, spec, config, _settings(rec.settings))
        self._bound[(cid, name)] = bound
        return bound

    def _view(self, rec: storage.StoredIntegration, health: HealthCheck | None) -> IntegrationView:
        spec = parse_document(rec.document, allow_http=rec.allow_http)
        s = _settings(rec.settings)
        try:
            base: str | None = make_base_url(spec, host=s.host, allow_http=rec.allow_http)
        except GatewayError:
            base = None
        has = set(rec.config) | set(rec.secrets)
        params = [
            ConfigParamInfo(p.name, p.description, p.type, p.required, p.secret, p.name in has)
            for p in spec.config_params.values()
        ]
        ops = [
            OperationInfo(
                o.operation_id,
                o.method,
                o.path,
                o.description,
                [p.name for p in o.parameters],
                [_parameter_info(p) for p in o.parameters],
            )
            for o in spec.operations.values()
        ]
        return IntegrationView(
            connector_id=rec.connector_id,
            name=rec.name,
            title=spec.title,
            description=spec.description,
            api_version=rec.api_version,
            doc_version=rec.doc_version,
            allow_insecure_http=rec.allow_http,
            base_url=base,
            health_url=None if base is None else base + spec.health_path,
            operations=ops,
            config_parameters=params,
            config={
                k: v
                for k, v in rec.config.items()
                if k in spec.config_params and not spec.config_params[k].secret
            },
            missing_config=[
                p.name for p in spec.config_params.values() if p.required and p.name not in has
            ],
            settings=s,
            health=health,
            created=rec.created,
            updated=rec.updated,
        )

    async def get(self, cid: str, name: str) -> IntegrationView:
        rec = await self._record(cid, name)
        last = await storage.read_health(self.store, cid, name, limit=1)
        return self._view(rec, last[0] if last else None)

    async def document(self, cid: str, name: str) -> str:
        return (await self._record(cid, name)).document

    async def list_for(self, cid: str) -> list[IntegrationView]:
        """Every integration of connector ``cid``, by name."""
        self.registry.require(cid)
        out = []
        for rec in await storage.list_integrations(self.store, cid):
            last = await storage.read_health(self.store, cid, rec.name, limit=1)
            out.append(self._view(rec, last[0] if last else None))
        return out

    # -- operations, health, jobs ---------------------------------------------------------

    async def call(
        self, cid: str, name: str, operation: str, params: Mapping[str, Any] | None = None
    ) -> CallResult:
        return await (await self.bind(cid, name)).call(operation, params or {})

    async def check_health(self, cid: str, name: str) -> HealthCheck:
        return await run_health_check(self, await self.bind(cid, name))

    async def health(
        self, cid: str, name: str, *, limit: int = 50, changes_only: bool = False
    ) -> HealthView:
        await self._record(cid, name)
        hist = await storage.read_health(
            self.store, cid, name, limit=limit, changes_only=changes_only
        )
        cur = await storage.read_health(self.store, cid, name, limit=1)
        return HealthView(cur[0] if cur else None, hist)

    async def runs(
        self, cid: str, name: str, job: str | None = None, *, limit: int = 20
    ) -> list[RunReport]:
        await self._record(cid, name)
        return await storage.read_runs(self.store, cid, name, job, limit=limit)

    async def jobs(self, cid: str, name: str) -> JobsView:
        s = (await self.bind(cid, name)).settings
        out = []
        for job in JOBS:
            last = await self.runs(cid, name, job, limit=1)
            out.append(
                JobInfo(
                    job,
                    getattr(s, f"{job}_interval_s"),
                    (cid, name, job) in self._running,
                    last[0] if last else None,
                    getattr(s, f"{job}_operation"),
                )
            )
        return JobsView(out)

    async def run_job(self, cid: str, name: str, job: str, *, trigger: str = "api") -> RunReport:
        """Run ``sync`` or ``fetch`` now (after any run of this integration in progress) and
        return its report.  A run that fails as a whole is reported with status
        ``failed`` and ``error``, not raised."""
        if job not in JOBS:
            raise NotFound(f"job {job!r} does not exist (jobs: {', '.join(JOBS)})")
        bound = await self.bind(cid, name)
        if getattr(bound.settings, f"{job}_operation") is None:
            raise SettingsInvalid(
                f"the {job} job is off: settings.{job}_operation is null (set it to the "
                "operationId to use)"
            )
        lock = self._locks.setdefault((cid, name), trio.Lock())
        async with lock:
            report = RunReport(id=0, job=job, trigger=trigger, started=now_us())
            report.id = await storage.start_run(self.store, cid, name, report)
            self._running.add((cid, name, job))
            try:
                if job == "sync":
                    await run_sync(self, bound, report)
                else:
                    await run_fetch(self, bound, report)
            except GatewayError as exc:
                report.error = exc.message
                log.warning("integration %s/%s %s failed: %s", cid, name, job, exc.message)
            finally:
                self._running.discard((cid, name, job))
                report.finished = now_us()
                ok = report.created + report.updated
                if report.error is not None or (report.failed and not ok):
                    report.status = "failed"
                else:
                    report.status = "partial" if report.failed else "ok"
                with trio.CancelScope(shield=True):
                    await storage.finish_run(self.store, report)
        log.info(
            "integration %s/%s %s: %s seen=%d created=%d updated=%d failed=%d vanished=%d",
            cid,
            name,
            job,
            report.status,
            report.seen,
            report.created,
            report.updated,
            report.failed,
            report.vanished,
        )
        return report

    # -- scheduling -----------------------------------------------------------------------

    def _kick(self, cid: str, name: str) -> None:
        """An integration changed: recompute its schedule now."""
        for job in ("health", *JOBS):
            self._due.pop((cid, name, job), None)
        self._changed.set()

    async def _scheduled(self, key: tuple[str, str, str]) -> None:
        cid, name, job = key
        try:
            if job == "health":
                await self.check_health(cid, name)
            else:
                await self.run_job(cid, name, job, trigger="schedule")
        except GatewayError as exc:
            log.warning("integration %s/%s scheduled %s: %s", cid, name, job, exc.message)
        except Exception:
            # One integration's bug must not stop every other schedule; it is logged with
            # its traceback and retried at the next interval.
            log.exception("integration %s/%s scheduled %s crashed", cid, name, job)
        finally:
            self._running.discard(key)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every integration's schedules until cancelled."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                self._changed = trio.Event()
                now = trio.current_time()
                wake = now + MAX_IDLE_S
                recs = await storage.list_integrations(self.store)
                live: set[tuple[str, str, str]] = set()
                for rec in recs:
                    if self.registry.get(rec.connector_id) is None:
                        continue
                    try:
                        s = _settings(rec.settings)
                    except BadRequest:
                        continue
                    for job in ("health", *JOBS):
                        interval = float(getattr(s, f"{job}_interval_s"))
                        key = (rec.connector_id, rec.name, job)
                        if interval <= 0 or getattr(s, f"{job}_operation", "") is None:
                            continue
                        live.add(key)
                        due = self._due.setdefault(key, now)
                        if due <= now and key not in self._running:
                            self._running.add(key)
                            nursery.start_soon(self._scheduled, key)
                            due = self._due[key] = now + interval
                        wake = min(wake, max(due, now + 0.01))
                for key in set(self._due) - live:
                    del self._due[key]
                with trio.move_on_at(wake):
                    await self._changed.wait()


async def serve_integrations(
    integrations: IntegrationService,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the integration schedules (health, sync, fetch) in the caller's nursery."""
    await integrations.serve(task_status=task_status)
