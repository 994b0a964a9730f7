"""Management routes: the durable event log (forwards with long-poll, or newest first;
filtered by identity, type, IP and time), the live log tail (SSE) and the extra admin
tokens."""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import BadRequest
from gateway.mgmt.common import (
    AdminTokenInfo,
    AdminTokens,
    Endpoint,
    NewAdminToken,
    QueryParam,
    decode_body,
    json_response,
    q_float,
    q_int,
    q_ip,
    q_str,
)
from gateway.mgmt.sse import DEFAULT_HEARTBEAT_S, LogStream
from gateway.rules.identity import MAX_IDENTITY_LENGTH
from gateway.services.bundle import Services
from gateway.services.events import EVENT_TYPES, MAX_LIMIT, MAX_WAIT_S, EventFilter, EventOut
from gateway.services.logs import LogFilter

__all__ = ["EventPage", "TokenCreate", "endpoints"]

KINDS = ("events", "debug")


class EventPage(msgspec.Struct, frozen=True):
    """A page of events.  Forwards (``after``): oldest first, ``next`` is the cursor to pass
    as ``after`` next time (never null: the log goes on).  Backwards (``before``): newest
    first, ``next`` is the cursor to pass as ``before`` for older events, null at the
    oldest."""

    items: list[EventOut]
    next: int | None


class TokenCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


def endpoints(services: Services, tokens: AdminTokens) -> list[Endpoint]:
    reg = services.registry

    async def read_events(request: Request) -> Response:
        cid = request.path_params["cid"]
        reg.require(cid)
        query = request.query_params
        since = q_int(request, "since", -1, lo=0, hi=2**62)
        until = q_int(request, "until", -1, lo=0, hi=2**62)
        filt = EventFilter(
            identity=q_str(request, "identity", max_length=MAX_IDENTITY_LENGTH),
            types=tuple(query.getlist("type")),
            ip=q_ip(request),
            since=None if since < 0 else since,
            until=None if until < 0 else until,
        )
        limit = q_int(request, "limit", 100, lo=1, hi=MAX_LIMIT)
        after = q_int(request, "after", 0, lo=-1, hi=2**62)
        wait = q_float(request, "wait", 0.0, lo=0.0, hi=MAX_WAIT_S)
        if "before" in query:
            before = q_int(request, "before", -1, lo=-1, hi=2**62)
            items, older = await services.events.read_back(
                cid, before=before, after=after, limit=limit, wait=wait, filt=filt
            )
            return json_response(EventPage(items, older))
        items = await services.events.read(cid, after=after, limit=limit, wait=wait, filt=filt)
        # An empty page keeps the cursor ("from now" resolves to the current end).
        nxt = after if after >= 0 else await services.events.last_seq(cid)
        if items:
            nxt = items[-1].seq
        return json_response(EventPage(items, nxt))

    async def tail_logs(request: Request) -> Response:
        cid = request.path_params["cid"]
        reg.require(cid)
        kind = q_str(request, "kind")
        if kind is not None and kind not in KINDS:
            raise BadRequest("kind must be events or debug")
        ip = q_ip(request)
        filt = LogFilter(
            cid,
            kinds=(kind,) if kind else KINDS,
            identity=q_str(request, "identity", max_length=256),
            ip=ip,
        )
        heartbeat = q_float(request, "heartbeat", DEFAULT_HEARTBEAT_S, lo=0.05, hi=300.0)
        return LogStream(services.logs, filt, heartbeat_s=heartbeat)

    async def list_tokens(request: Request) -> Response:
        return json_response(await tokens.list())

    async def create_token(request: Request) -> Response:
        body = await decode_body(request, TokenCreate)
        return json_response(await tokens.create(body.name), 201)

    async def revoke_token(request: Request) -> Response:
        await tokens.revoke(request.path_params["token_id"])
        return Response(status_code=204)

    base = "/api/v1/connectors/{cid}"
    return [
        Endpoint(
            "GET",
            f"{base}/events",
            read_events,
            "Durable device events: after a cursor (long-polling up to ?wait seconds) or "
            "newest first before one, filtered by identity, type, IP and time",
            "events",
            "readEvents",
            response=EventPage,
            description="Without before: events with seq > after, oldest first.  With before:"
            " events with after < seq < before, newest first (before=-1: from the newest);"
            " next is then the cursor of the older page, null at the oldest.  Either way an"
            " empty page waits up to wait seconds for a commit that brings an event.  Filters"
            " combine (all"
            " must match; several type parameters match any of them).  Unknown parameters"
            " are refused (400).",
            query=(
                QueryParam(
                    "after",
                    {"type": "integer", "minimum": -1, "maximum": 2**62},
                    "cursor: events with seq > after (with before: the lower end); -1 = now [0]",
                ),
                QueryParam(
                    "before",
                    {"type": "integer", "minimum": -1, "maximum": 2**62},
                    "cursor: events with seq < before, newest first; -1 = from the newest",
                ),
                QueryParam(
                    "identity",
                    {"type": "string", "maxLength": MAX_IDENTITY_LENGTH},
                    "only this device's events",
                ),
                QueryParam(
                    "type",
                    {"enum": list(EVENT_TYPES)},
                    "only events of this type; repeat for several",
                    repeated=True,
                ),
                QueryParam(
                    "ip",
                    {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
                    "only events from this peer address",
                ),
                QueryParam(
                    "since",
                    {"type": "integer", "minimum": 0, "maximum": 2**62},
                    "only events at or after this time (µs since the epoch)",
                ),
                QueryParam(
                    "until",
                    {"type": "integer", "minimum": 0, "maximum": 2**62},
                    "only events at or before this time (µs since the epoch)",
                ),
                QueryParam(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                    "page size [100]",
                ),
                QueryParam(
                    "wait",
                    {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
                    "seconds to wait when nothing is there yet [0]",
                ),
            ),
        ),
        Endpoint(
            "GET",
            f"{base}/logs",
            tail_logs,
            "Live log tail as Server-Sent Events (event: log / dropped)",
            "events",
            "tailLogs",
            response_media={"text/event-stream": {"type": "string"}},
            query=(
                QueryParam("kind", {"enum": list(KINDS)}, "events or debug [both]"),
                QueryParam("identity", {"type": "string", "maxLength": 256}, "only this device"),
                QueryParam(
                    "ip",
                    {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
                    "only this peer address (also pre-auth records)",
                ),
                QueryParam(
                    "heartbeat",
                    {"type": "number", "minimum": 0.05, "maximum": 300},
                    f"keepalive interval, seconds [{DEFAULT_HEARTBEAT_S:g}]",
                ),
            ),
            description="The stream stays open until the client disconnects; a client "
            "too slow to keep up gets a final 'dropped' event.",
        ),
        Endpoint(
            "GET",
            "/api/v1/tokens",
            list_tokens,
            "List extra admin tokens",
            "tokens",
            "listTokens",
            response=list[AdminTokenInfo],
            errors=(),
        ),
        Endpoint(
            "POST",
            "/api/v1/tokens",
            create_token,
            "Create an admin token (shown once)",
            "tokens",
            "createToken",
            body=TokenCreate,
            response=NewAdminToken,
            status=201,
            errors=(400,),
            creates=("token_id", "$response.body#/id"),
        ),
        Endpoint(
            "DELETE",
            "/api/v1/tokens/{token_id}",
            revoke_token,
            "Revoke an admin token",
            "tokens",
            "revokeToken",
            status=204,
            errors=(404,),
        ),
    ]
