"""Fuzz target: the pieces of the HTTP device request path that do not depend on the HTTP
server in front of them (hypercorn today).

Input: one control byte choosing the piece, then its input:

* 0 — :func:`~gateway.device.http.forms.parse_form` (write, record and activation bodies):
  a list of text pairs or ``BadRequest``; without raw JSON every non-empty ``&`` segment is
  one pair; pairs encoded again with :func:`encode_pairs` parse back to themselves;
* 1 — :func:`~gateway.device.http.forms.parse_names` (read queries): distinct non-empty
  names, or ``BadRequest``;
* 2 — the record body: ``parse_form`` then, per pair, the alias or
  :func:`~gateway.device.http.app.parse_record_ts` (``BadRequest`` or a time ≥ 0 in µs that
  keeps every digit up to the microsecond);
* 3 — :func:`~gateway.device.http.app.parse_since` (``If-Modified-Since``): never raises,
  always ≥ 0;
* 4 — Host routing, :meth:`Registry.connector_for_host` over two connectors: ``None`` or a
  connector whose host name (or devmode host name) the Host names, port and case aside.

The only exception allowed anywhere is :class:`~gateway.errors.BadRequest`.
"""

from __future__ import annotations

from gateway.device.http.app import parse_record_ts, parse_since
from gateway.device.http.forms import encode_pairs, parse_form, parse_names
from gateway.errors import BadRequest
from gateway.services.connectors import Connector, ConnectorSettings, Registry

__all__ = ["NAME", "check", "seeds"]

NAME = "http_device"
_BASE = "localhost"
_REGISTRY = Registry(_BASE)
for _cid in ("demo", "abc1"):
    _REGISTRY.put(
        Connector(
            _cid,
            _cid,
            "",
            f"{_cid}.m2.{_BASE}",
            f"{_cid}.devmode-m2.{_BASE}",
            ConnectorSettings(),
            0,
        )
    )


def _form(body: bytes) -> None:
    try:
        pairs = parse_form(body)
    except BadRequest:
        return
    if b"{" not in body and b"[" not in body:
        assert len(pairs) == len([s for s in body.split(b"&") if s]), pairs
    unique = dict(pairs)
    if len(unique) == len(pairs):
        assert dict(parse_form(encode_pairs(unique))) == unique, "encode/parse round trip"


def _names(query: bytes) -> None:
    try:
        names = parse_names(query)
    except BadRequest:
        return
    assert len(set(names)) == len(names), names
    assert all(names), names


def _record(body: bytes) -> None:
    try:
        pairs = parse_form(body)
    except BadRequest:
        return
    for key, _ in pairs:
        if key == "alias":
            continue
        try:
            ts = parse_record_ts(key)
        except BadRequest:
            continue
        whole, _, frac = key.partition(".")
        assert ts == int(whole) * 1_000_000 + int((frac + "000000")[:6]), (key, ts)


def _since(raw: bytes) -> None:
    assert parse_since(raw.decode("latin-1")) >= 0


def _host(raw: bytes) -> None:
    host = raw.decode("latin-1")
    found = _REGISTRY.connector_for_host(host)
    if found is not None:
        connector, dev = found
        name = connector.devmode_fqdn if dev else connector.fqdn
        assert name in host.lower(), (host, name)


_PIECES = (_form, _names, _record, _since, _host)


def check(data: bytes) -> None:
    if not data:
        return
    _PIECES[data[0] % len(_PIECES)](data[1:])


def seeds() -> list[bytes]:
    return [
        b'\x00data_in=21.5&config_io={"a":"b&c"}',
        b"\x00a=%ff",
        b"\x00x=1+2&y=%41%zz&&z",
        b"\x01a&b=&a&%C3%A9",
        b"\x02alias=temp&1700000000.123456789=1&1700000001=2&alias=hum&12=3",
        b"\x03Tue, 15 Nov 1994 08:12:31 GMT",
        b"\x031700000000.5",
        b"\x04demo.m2.localhost:8443",
        b"\x04ABC1.devmode-m2.localhost.",
        b"\x04[::1]:80",
    ]
