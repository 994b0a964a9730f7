"""Management routes for cloud-to-cloud integrations, under
``/api/v1/connectors/{cid}/integrations``.

Declared as :class:`~gateway.mgmt.common.Endpoint` values (so the management app's
router, auth and OpenAPI document cover them: ``*integrations.endpoints(services)`` in
``gateway/mgmt/app.py``); :func:`routes` also gives ready Starlette routes with the same
auth and error handling, for mounting on their own.

A refused document answers 400 ``{"error": "invalid_document", "message", "violations":
[{"path", "message"}, ...]}`` — every violation, by JSON path.  No route ever returns a
secret configuration value: secrets are reported only as ``set: true``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.mgmt.common import (
    AdminTokens,
    Endpoint,
    Link,
    QueryParam,
    decode_body,
    json_response,
    make_dispatcher,
    q_bool,
    q_int,
)
from gateway.services.bundle import Services
from gateway.services.integrations.models import (
    HealthCheck,
    HealthView,
    IntegrationSettings,
    IntegrationView,
    JobsView,
    RunReport,
    ValidationResult,
)
from gateway.services.integrations.operations import CallResult
from gateway.services.integrations.validate import (
    MAX_DOCUMENT_BYTES,
    DocumentInvalid,
    Violation,
)

__all__ = [
    "ConfigPatch",
    "DocumentIn",
    "DocumentInvalidBody",
    "IntegrationAdd",
    "IntegrationList",
    "RunList",
    "endpoints",
    "routes",
]

MAX_DOCUMENT_BODY = 4 * 1_048_576  # JSON-escaped documents of up to ~2 MB
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern="^[a-z0-9_-]+$")]
# An empty text is refused by the schema (400 bad_request); a non-empty text that is not an
# acceptable OpenAPI 2 document gets 400 invalid_document with every violation.
DocumentText = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_DOCUMENT_BYTES,
        description="The OpenAPI 2 document, YAML or JSON text",
    ),
]


class IntegrationAdd(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Register an integration: the OpenAPI 2 document (YAML or JSON text), optional
    configuration values and settings.  ``allow_insecure_http`` is the development flag
    that admits ``http`` in ``schemes``."""

    name: Name
    document: DocumentText
    allow_insecure_http: bool = False
    config: dict[str, Any] = {}
    settings: dict[str, Any] = {}


class DocumentIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A document to validate, or a new version of an integration's document."""

    document: DocumentText
    allow_insecure_http: bool = False


class ConfigPatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Configuration values to set (``null`` unsets one) and settings to change (merged
    into the current settings; see IntegrationSettings)."""

    values: dict[str, Any] = {}
    settings: dict[str, Any] = {}


class IntegrationList(msgspec.Struct, frozen=True):
    items: list[IntegrationView]


class RunList(msgspec.Struct, frozen=True):
    items: list[RunReport]


class DocumentInvalidBody(msgspec.Struct, frozen=True):
    """A refused document: every violation with its JSON path."""

    error: str
    message: str
    violations: list[Violation]


def _invalid(exc: DocumentInvalid) -> Response:
    return json_response(DocumentInvalidBody(exc.code, exc.message, exc.violations), 400)


def endpoints(services: Services) -> list[Endpoint]:
    svc = services.integrations
    base = "/api/v1/connectors/{cid}/integrations"
    one = base + "/{name}"
    t = "integrations"

    def ids(request: Request) -> tuple[str, str]:
        return request.path_params["cid"], request.path_params["name"]

    async def list_all(request: Request) -> Response:
        return json_response(IntegrationList(await svc.list_for(request.path_params["cid"])))

    async def add(request: Request) -> Response:
        body = await decode_body(request, IntegrationAdd, limit=MAX_DOCUMENT_BODY)
        try:
            view = await svc.add(
                request.path_params["cid"],
                body.name,
                body.document,
                allow_http=body.allow_insecure_http,
                config=body.config,
                settings=body.settings,
            )
        except DocumentInvalid as exc:
            return _invalid(exc)
        return json_response(view, 201)

    async def validate(request: Request) -> Response:
        services.registry.require(request.path_params["cid"])
        body = await decode_body(request, DocumentIn, limit=MAX_DOCUMENT_BODY)
        return json_response(svc.validate(body.document, allow_http=body.allow_insecure_http))

    async def show(request: Request) -> Response:
        return json_response(await svc.get(*ids(request)))

    async def remove(request: Request) -> Response:
        await svc.remove(*ids(request))
        return Response(status_code=204)

    async def get_document(request: Request) -> Response:
        return Response(await svc.document(*ids(request)), media_type="application/yaml")

    async def put_document(request: Request) -> Response:
        body = await decode_body(request, DocumentIn, limit=MAX_DOCUMENT_BODY)
        try:
            view = await svc.update_document(
                *ids(request), body.document, allow_http=body.allow_insecure_http
            )
        except DocumentInvalid as exc:
            return _invalid(exc)
        return json_response(view)

    async def patch_config(request: Request) -> Response:
        body = await decode_body(request, ConfigPatch)
        return json_response(
            await svc.configure(*ids(request), values=body.values, settings=body.settings)
        )

    async def call(request: Request) -> Response:
        raw = await request.body()
        params = (
            await decode_body(request, dict[str, Any], limit=MAX_DOCUMENT_BODY)
            if raw.strip()
            else {}
        )
        cid, name = ids(request)
        return json_response(await svc.call(cid, name, request.path_params["operation"], params))

    async def health(request: Request) -> Response:
        return json_response(
            await svc.health(
                *ids(request),
                limit=q_int(request, "limit", 50, lo=1, hi=500),
                changes_only=q_bool(request, "changes", False),
            )
        )

    async def check(request: Request) -> Response:
        return json_response(await svc.check_health(*ids(request)))

    async def jobs(request: Request) -> Response:
        return json_response(await svc.jobs(*ids(request)))

    async def run(request: Request) -> Response:
        cid, name = ids(request)
        return json_response(await svc.run_job(cid, name, request.path_params["job"]))

    async def runs(request: Request) -> Response:
        cid, name = ids(request)
        return json_response(
            RunList(
                await svc.runs(
                    cid,
                    name,
                    request.path_params["job"],
                    limit=q_int(request, "limit", 20, lo=1, hi=200),
                )
            )
        )

    # Names no creation gives: an operation and a job, read from an integration's answers.
    same = {"cid": "$request.path.cid", "name": "$request.path.name"}
    first_operation = "$response.body#/operations/0/operation_id"
    first_job = "$response.body#/jobs/0/job"
    invalid_doc = {400: "Document refused (invalid_document: every violation by JSON path)"}
    return [
        Endpoint(
            "GET",
            base,
            list_all,
            "List integrations",
            t,
            "listIntegrations",
            response=IntegrationList,
            errors=(404,),
        ),
        Endpoint(
            "POST",
            base,
            add,
            "Register an integration from an OpenAPI 2 document",
            t,
            "addIntegration",
            body=IntegrationAdd,
            response=IntegrationView,
            status=201,
            creates=("name", "$response.body#/name"),
            errors=(400, 404, 409, 413),
            description=invalid_doc[400],
        ),
        Endpoint(
            "POST",
            base + "/validate",
            validate,
            "Validate an OpenAPI 2 document without storing it",
            t,
            "validateIntegrationDocument",
            body=DocumentIn,
            response=ValidationResult,
        ),
        Endpoint(
            "GET",
            one,
            show,
            "Show an integration (secrets only as set/unset)",
            t,
            "getIntegration",
            response=IntegrationView,
            errors=(404,),
            links=(Link("callIntegrationOperation", {**same, "operation": first_operation}),),
        ),
        Endpoint(
            "DELETE",
            one,
            remove,
            "Remove an integration (its devices stay)",
            t,
            "removeIntegration",
            status=204,
            errors=(404,),
        ),
        Endpoint(
            "GET",
            one + "/document",
            get_document,
            "The stored OpenAPI 2 document",
            t,
            "getIntegrationDocument",
            response_media={"application/yaml": {"type": "string"}},
            errors=(404,),
        ),
        Endpoint(
            "PUT",
            one + "/document",
            put_document,
            "Upload a new document version",
            t,
            "putIntegrationDocument",
            body=DocumentIn,
            response=IntegrationView,
            errors=(400, 404, 413),
        ),
        Endpoint(
            "PATCH",
            one + "/config",
            patch_config,
            "Set configuration values and settings (secrets encrypted at rest)",
            t,
            "configureIntegration",
            body=ConfigPatch,
            response=IntegrationView,
            description="Settings: " + ", ".join(IntegrationSettings.__struct_fields__),
        ),
        Endpoint(
            "POST",
            one + "/operations/{operation}",
            call,
            "Call an operation by operationId with a JSON object of parameters",
            t,
            "callIntegrationOperation",
            body=dict[str, Any],
            body_required=False,
            response=CallResult,
            errors=(400, 404, 502, 504),
        ),
        Endpoint(
            "GET",
            one + "/health",
            health,
            "Current health and its history",
            t,
            "getIntegrationHealth",
            response=HealthView,
            errors=(400, 404),
            query=(
                QueryParam(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": 500},
                    "history entries (50)",
                ),
                QueryParam(
                    "changes", {"type": "boolean"}, "only the probes that changed the state"
                ),
            ),
        ),
        Endpoint(
            "POST",
            one + "/health",
            check,
            "Probe health now",
            t,
            "checkIntegrationHealth",
            response=HealthCheck,
            errors=(404,),
        ),
        Endpoint(
            "GET",
            one + "/jobs",
            jobs,
            "Jobs, their intervals and last reports",
            t,
            "listIntegrationJobs",
            response=JobsView,
            errors=(404,),
            links=(
                Link("runIntegrationJob", {**same, "job": first_job}),
                Link("listIntegrationRuns", {**same, "job": first_job}),
            ),
        ),
        Endpoint(
            "POST",
            one + "/jobs/{job}",
            run,
            "Run a job (sync or fetch) now",
            t,
            "runIntegrationJob",
            response=RunReport,
            errors=(400, 404),
        ),
        Endpoint(
            "GET",
            one + "/jobs/{job}/runs",
            runs,
            "Reports of a job's recent runs",
            t,
            "listIntegrationRuns",
            response=RunList,
            errors=(400, 404),
            query=(
                QueryParam(
                    "limit", {"type": "integer", "minimum": 1, "maximum": 200}, "reports (20)"
                ),
            ),
        ),
    ]


def routes(services: Services, *, tokens: AdminTokens) -> list[BaseRoute]:
    """Starlette routes for :func:`endpoints`, with bearer auth and the error shape."""
    grouped: defaultdict[str, list[Endpoint]] = defaultdict(list)
    for ep in endpoints(services):
        grouped[ep.path].append(ep)
    order = sorted(grouped, key=lambda p: ("{" in p, p))  # ".../validate" before "{name}"
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    return [Route(p, make_dispatcher(grouped[p], tokens), methods=methods) for p in order]
