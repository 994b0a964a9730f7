"""Refusal records become durable events (gateway/services/refusals.py): typed by what was
refused, with the record's reason, address and connection; a flood from one address is
folded into a few events carrying how many were left out."""

from __future__ import annotations

from gateway.model import LogRecord
from gateway.services.refusals import RefusalEvents, refusal_type
from gateway.store.api import EventMeta


def rec(
    event: str,
    reason: str | None = "not_authenticated",
    *,
    ts: int = 1_000_000,
    cid: str | None = "demo",
    ip: str | None = "203.0.113.7",
    detail: str | None = None,
    identity: str | None = None,
) -> LogRecord:
    return LogRecord(
        kind="debug",
        timestamp=ts,
        connector_id=cid,
        ip=ip,
        identity=identity,
        connection_id="c1",
        protocol="murano:v1/mqtt",
        event=event,
        reason=reason,
        detail=detail,
    )


def test_types_by_what_was_refused() -> None:
    assert refusal_type(rec("connection_refused", "idle_timeout")) == "connection_refused"
    assert refusal_type(rec("connect_refused")) == "connection_refused"
    assert refusal_type(rec("provision_refused", "presenter_identity_disabled")) == (
        "activation_refused"
    )
    assert refusal_type(rec("write_rejected", "bad_request")) == "write_refused"
    http = "http_refused"
    assert refusal_type(rec(http, detail="POST /provision/activate -> 404: no")) == (
        "activation_refused"
    )
    assert refusal_type(rec(http, detail="POST /onep:v1/stack/alias -> 401: no")) == (
        "write_refused"
    )
    assert refusal_type(rec(http, detail="POST /onep:v1/stack/alias/temp -> 401: no")) == (
        "write_refused"
    )
    assert refusal_type(rec(http, detail="PUT /provision/upload -> 413: big")) == "write_refused"
    assert refusal_type(rec(http, detail="GET /onep:v1/stack/alias -> 401: no")) == (
        "request_refused"
    )
    assert refusal_type(rec(http, detail=None)) == "request_refused"
    # not refusals
    assert refusal_type(rec("connect", None)) is None
    assert refusal_type(rec("disconnect", "idle_timeout")) is None


def test_event_carries_the_record() -> None:
    ev = RefusalEvents().event_for(
        rec("connect_refused", "locked", identity="dev-1", detail="CONNACK 5: device is locked")
    )
    assert ev is not None
    assert (ev.connector_id, ev.type, ev.identity, ev.reason) == (
        "demo",
        "connection_refused",
        "dev-1",
        "locked",
    )
    assert ev.timestamp == 1_000_000
    assert ev.meta == EventMeta("c1", "203.0.113.7", "murano:v1/mqtt")
    assert ev.payload == {"event": "connect_refused", "detail": "CONNACK 5: device is locked"}


def test_no_connector_no_event() -> None:
    assert RefusalEvents().event_for(rec("connection_refused", "no_sni", cid=None)) is None


def test_a_flood_is_folded_and_counted() -> None:
    r = RefusalEvents(interval_us=1_000_000, burst=3)
    made = [r.event_for(rec("connect_refused", ts=1_000_000 + i)) for i in range(10)]
    assert sum(e is not None for e in made) == 3  # the first three of the window
    # another address, reason or type has its own allowance
    assert r.event_for(rec("connect_refused", ip="198.51.100.1", ts=1_000_050)) is not None
    assert r.event_for(rec("connect_refused", "locked", ts=1_000_060)) is not None
    assert r.event_for(rec("write_rejected", ts=1_000_070)) is not None
    # the next window's first event says how many were left out
    nxt = r.event_for(rec("connect_refused", ts=2_000_000))
    assert nxt is not None
    assert nxt.payload["suppressed"] == 7
    after = r.event_for(rec("connect_refused", ts=2_000_001))
    assert after is not None
    assert "suppressed" not in after.payload


def test_a_slow_retrier_is_recorded_every_time() -> None:
    r = RefusalEvents(interval_us=1_000_000, burst=1)
    events = [r.event_for(rec("connect_refused", ts=i * 5_000_000)) for i in range(1, 6)]
    assert all(e is not None for e in events)
