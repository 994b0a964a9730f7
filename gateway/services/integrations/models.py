"""Typed values of the integrations feature: settings, health, run reports.

These Structs are what the service returns and what the management API encodes, so the
OpenAPI generator can describe them.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "AssetError",
    "ConfigParamInfo",
    "HealthCheck",
    "HealthView",
    "IntegrationSettings",
    "IntegrationView",
    "JobInfo",
    "JobName",
    "JobsView",
    "OperationInfo",
    "ParameterInfo",
    "RunReport",
    "ValidationResult",
]

JobName = Literal["sync", "fetch"]


class IntegrationSettings(msgspec.Struct, forbid_unknown_fields=True):
    """How the gateway talks to the API and maps its assets onto devices.

    Intervals are seconds; 0 turns a schedule off (the job can still be triggered).  A job
    operation set to ``None`` turns that job off entirely; otherwise it must be an
    operationId of the document (checked when the integration is added or changed).
    Every setting is described in the README's "Integrations" section.
    """

    host: str | None = None  # overrides the document's ``host`` (e.g. "127.0.0.1:8443")
    ca_bundle: str | None = None  # PEM: trust these CAs instead of the system store
    timeout_s: float = 10.0
    health_interval_s: float = 60.0
    sync_interval_s: float = 300.0
    fetch_interval_s: float = 60.0
    # asset sync
    sync_operation: str | None = "assets"  # lists the assets (an array, or an object with one)
    assets_field: str | None = None  # when the listing is an object: the key of its list
    asset_id_field: str = "id"
    tag_fields: list[str] = msgspec.field(default_factory=list)
    config_io_template: Any = None  # JSON set into config_io when a device is created
    # asset fetch
    fetch_operation: str | None = "assetState"
    fetch_id_parameter: str = "id"
    field_map: dict[str, str] = msgspec.field(default_factory=dict)  # datapoint key -> field
    data_alias: str = "data_in"
    concurrency: int = 4  # assets fetched at once
    # retries (per upstream call)
    retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 120.0

    def check(self) -> list[str]:
        """Problems with these settings (empty when usable)."""
        out = [
            f"{name} must not be negative"
            for name in ("timeout_s", "backoff_s", "max_backoff_s", "max_retry_after_s")
            if getattr(self, name) < 0
        ]
        for name in ("health_interval_s", "sync_interval_s", "fetch_interval_s"):
            value = getattr(self, name)
            if value != 0 and value < 0.05:
                out.append(f"{name} must be 0 (off) or at least 0.05 seconds")
        if self.timeout_s == 0:
            out.append("timeout_s must be positive")
        if not 0 <= self.retries <= 10:
            out.append("retries must be 0..10")
        if not 1 <= self.concurrency <= 64:
            out.append("concurrency must be 1..64")
        if self.host is not None and ("/" in self.host or not self.host):
            out.append("host must be a host name with an optional :port")
        return out


class HealthCheck(msgspec.Struct, frozen=True):
    """One health probe.  ``healthy`` is True for a 2xx answer."""

    timestamp: int  # µs
    healthy: bool
    status_code: int | None
    latency_ms: float
    detail: str
    changed: bool


class AssetError(msgspec.Struct, frozen=True):
    asset_id: str
    error: str


class RunReport(msgspec.Struct):
    """The outcome of one job run (kept and exposed per integration)."""

    id: int
    job: str
    trigger: str  # schedule | api
    started: int  # µs
    finished: int | None = None
    status: str = "running"  # running | ok | partial | failed
    seen: int = 0
    created: int = 0
    updated: int = 0
    failed: int = 0
    vanished: int = 0
    retries: int = 0
    error: str | None = None  # why the run as a whole failed
    errors: list[AssetError] = msgspec.field(default_factory=list)


# -- what the service returns (and the management API encodes) ---------------------------


class ParameterInfo(msgspec.Struct, frozen=True):
    """One parameter of an operation as the document declares it, so that a client (the
    CLI's ``integration call OP id=7``) can turn text into the value the document expects."""

    name: str
    location: str  # path | query | header | formData | body
    type: str  # the JSON schema type: string, integer, number, boolean, array, object, file
    items: str | None  # the item type of an array
    required: bool


class OperationInfo(msgspec.Struct, frozen=True):
    operation_id: str
    method: str
    path: str
    description: str
    parameters: list[str]
    parameter_specs: list[ParameterInfo] = msgspec.field(default_factory=list)


class ConfigParamInfo(msgspec.Struct, frozen=True):
    """A declared configuration parameter.  Secrets say only whether they are set."""

    name: str
    description: str
    type: str
    required: bool
    secret: bool
    set: bool


class IntegrationView(msgspec.Struct, frozen=True):
    """An integration as the API shows it: never a secret value."""

    connector_id: str
    name: str
    title: str
    description: str
    api_version: str
    doc_version: int
    allow_insecure_http: bool  # the development flag: plain http accepted
    base_url: str | None
    health_url: str | None
    operations: list[OperationInfo]
    config_parameters: list[ConfigParamInfo]
    config: dict[str, Any]  # non-secret values only
    missing_config: list[str]  # required parameters without a value
    settings: IntegrationSettings
    health: HealthCheck | None
    created: int
    updated: int


class ValidationResult(msgspec.Struct, frozen=True):
    valid: bool
    violations: list[Any]  # list[Violation]; Any keeps this module free of validate.py
    operations: list[str]


class HealthView(msgspec.Struct, frozen=True):
    current: HealthCheck | None
    history: list[HealthCheck]  # newest first


class JobInfo(msgspec.Struct, frozen=True):
    job: str
    interval_s: float
    running: bool
    last: RunReport | None
    operation: str | None = None  # the operationId the job calls; None: the job is off


class JobsView(msgspec.Struct, frozen=True):
    jobs: list[JobInfo]
