"""The device API's answers as bytes: a catalogue of requests (every route and error of the
HTTP device API, plus the HTTP/1.1 framing cases devices meet) and a runner that sends them
over raw sockets and records what comes back, byte for byte.

Used by ``test_05_same_answers.py`` to hold every HTTP/1.1 path of the gateway to the same
answers: status line, header names, values and order, body, and whether the connection
stays open afterwards.  Values that cannot repeat between runs (dates, tokens, the clock,
the port) are masked by :func:`normalize`; everything else is compared as it is.

The requests are written out by hand (never produced by the gateway's code), and the
recorded answers in ``data/answers.json`` were captured from the hypercorn path before the
fast path existed (see the test module).
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx
import trio

from gateway.testing.server import TestGateway
from gateway.testing.tlsclient import client_context, open_tls_client

__all__ = ["CASES", "HTTP10_TRANSFER_ENCODING", "Case", "normalize", "prepare", "run_case"]

ALIAS = "/onep:v1/stack/alias"
RECORD = "/onep:v1/stack/record"
FORM = "Content-Type: application/x-www-form-urlencoded; charset=utf-8"
READ_TIMEOUT_S = 10.0
LIMIT = 1_048_576  # the demo connector's default max_payload


def req(
    method: str,
    target: str,
    *headers: str,
    body: str | bytes = b"",
    host: str | None = "{host}",
    version: str = "HTTP/1.1",
    length: bool | None = None,
) -> bytes:
    """One raw request: request line, ``Host`` first (unless None), the given header lines,
    ``Content-Length`` when there is a body (or ``length=True``), then the body."""
    raw = body.encode() if isinstance(body, str) else body
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines.extend(headers)
    if length or (length is None and (raw or method in ("POST", "PUT"))):
        lines.append(f"Content-Length: {len(raw)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


def cik(name: str) -> str:
    return f"X-Exosite-CIK: {{tok_{name}}}"


@dataclass(frozen=True)
class Case:
    """Requests sent on one connection.  Each inner tuple is written in one ``send_all``
    (pipelined); the next group is sent once every answer of the previous one arrived.
    ``masks`` are extra (pattern, replacement) pairs applied to the answers."""

    name: str
    groups: tuple[tuple[bytes, ...], ...]
    tls: bool = False
    masks: tuple[tuple[str, str], ...] = ()
    vars: Mapping[str, str] = field(default_factory=dict)


def one(name: str, *requests: bytes, **kw: object) -> Case:
    """A case whose requests are sent one after the other (each waits for its answer)."""
    return Case(name, tuple((r,) for r in requests), **kw)  # type: ignore[arg-type]


def piped(name: str, *requests: bytes, **kw: object) -> Case:
    """A case whose requests are all written at once (HTTP/1.1 pipelining)."""
    return Case(name, (tuple(requests),), **kw)  # type: ignore[arg-type]


_UNIX_S = (r"\r\n\r\n[0-9]{10}$", "\r\n\r\n<unix-s>")
_IP = (
    r"(?s)content-length: [0-9]+(\r\n.*\r\n\r\n)127,0,0,1,[0-9]+,[0-9]+",
    r"content-length: <n>\1<ip>",
)
_BASIC_TOKEN = "Authorization: Basic {basic_w}"
_BASIC_PASSWORD = "Authorization: Basic " + base64.b64encode(b"w:secret-password").decode()
_FW = "firmware-0123456789-abcdefghij"

# RFC 9112 §6.1: faulty framing, 400 and close on every path; not in CASES because for an
# HTTP/1.0 peer h11 moves the Connection field after the date (test_05 checks it apart).
HTTP10_TRANSFER_ENCODING = one(
    "http10_transfer_encoding",
    req("POST", ALIAS, cik("w"), "Transfer-Encoding: chunked", version="HTTP/1.0", length=False)
    + b"9\r\ndata_in=t\r\n0\r\n\r\n",
)

CASES: tuple[Case, ...] = (
    # -- activation (docs/protocol.md §2.2) ---------------------------------------------------
    one("activate", req("POST", "/provision/activate", FORM, body="id=act-1")),
    one("activate_sn", req("POST", "/provision/activate", FORM, body="sn=act-2")),
    one("activate_again", req("POST", "/provision/activate", FORM, body="id=w")),
    one("activate_no_id", req("POST", "/provision/activate", FORM, body="foo=bar")),
    one("activate_get", req("GET", "/provision/activate")),
    # -- write (§2.3) -----------------------------------------------------------------------------
    one("write", req("POST", ALIAS, cik("w"), FORM, body="data_in=1&uptime=5")),
    one(
        "write_raw_json",
        req("POST", ALIAS, cik("w"), FORM, body='config_io={"a": 1, "b": "x&y=z"}'),
    ),
    one("write_no_credentials", req("POST", ALIAS, FORM, body="data_in=1")),
    one("write_unknown_token", req("POST", ALIAS, "X-Exosite-CIK: " + "0" * 40, body="data_in=1")),
    one(
        "write_authorization_token", req("POST", ALIAS, "Authorization: token {tok_w}", body="a=1")
    ),
    one("write_basic_token", req("POST", ALIAS, _BASIC_TOKEN, body="data_in=2")),
    one("write_basic_password_dev", req("POST", ALIAS, _BASIC_PASSWORD, body="data_in=3")),
    one("write_basic_malformed", req("POST", ALIAS, "Authorization: Basic !!x", body="a=1")),
    one("write_bearer", req("POST", ALIAS, "Authorization: Bearer x", body="data_in=1")),
    one("write_empty", req("POST", ALIAS, cik("w"), FORM, body="")),
    one("write_not_utf8", req("POST", ALIAS, cik("w"), FORM, body="data_in=%ff%fe")),
    one("write_invalid_value", req("POST", ALIAS, cik("w"), FORM, body="data_in=ok&temp=hot")),
    one(
        "write_value_too_large", req("POST", ALIAS, cik("w"), body=b"data_in=" + b"x" * (LIMIT + 1))
    ),
    one(
        "write_declared_too_large",
        req("POST", ALIAS, cik("w"), f"Content-Length: {50 * LIMIT}", length=False)
        + b"data_in="
        + b"y" * 1000,
    ),
    one("write_locked", req("POST", ALIAS, cik("l"), FORM, body="data_in=1")),
    one("write_alias_too_long", req("POST", ALIAS, cik("w"), body="a" * 300 + "=1")),
    one("hybrid", req("POST", ALIAS + "?data_in&uptime", cik("w"), FORM, body="data_in=42")),
    one("hybrid_nothing_to_read", req("POST", ALIAS + "?data_out", cik("w"), body="data_in=43")),
    one("hybrid_query_only", req("POST", ALIAS + "?data_in", cik("w"), FORM, body="")),
    # -- read and long-poll (§2.4, §2.6) ----------------------------------------------------
    one("read", req("GET", ALIAS + "?data_in&config_io&nope", cik("w"))),
    one("read_escaped_names", req("GET", ALIAS + "?data%5Fin&config%5fio=", cik("w"))),
    one("read_header_case", req("GET", ALIAS + "?data_in", "X-EXOSITE-CIK: {tok_w}  ")),
    one("read_undefined", req("GET", ALIAS + "?nope&other", cik("w"))),
    one("read_without_aliases", req("GET", ALIAS, cik("w"))),
    one("read_settable", req("GET", ALIAS + "?config_io", cik("r"))),
    one("read_escapes", req("GET", ALIAS + "?data_out", cik("r"))),
    one(
        "poll_pending",
        req(
            "GET",
            ALIAS + "?config_io&data_out",
            cik("p"),
            "Request-Timeout: 1000",
            "If-Modified-Since: 0",
        ),
    ),
    one("poll_timeout", req("GET", ALIAS + "?config_io", cik("w"), "Request-Timeout: 50")),
    one("poll_undefined", req("GET", ALIAS + "?nope", cik("w"), "Request-Timeout: 60000")),
    one("poll_bad_timeout", req("GET", ALIAS + "?data_out", cik("w"), "Request-Timeout: soon")),
    # -- record (§2.7) ----------------------------------------------------------------------
    one(
        "record",
        req("POST", RECORD, cik("w"), FORM, body="alias=data_in&1700000000=a&1700000001.5=b"),
    ),
    one("record_future", req("POST", RECORD, cik("w"), body="alias=data_in&99999999999=x")),
    one("record_no_alias", req("POST", RECORD, cik("w"), body="1700000000=x")),
    one("record_bad_key", req("POST", RECORD, cik("w"), body="alias=data_in&yesterday=x")),
    one("record_no_points", req("POST", RECORD, cik("w"), body="alias=data_in")),
    one("record_legacy", req("POST", ALIAS + "/data_in", cik("w"), body="1700000002=old")),
    one("record_get", req("GET", RECORD, cik("w"))),
    # -- methods, routes, utilities (§2.9) -------------------------------------------------
    one("alias_delete", req("DELETE", ALIAS, cik("w"))),
    one("alias_put", req("PUT", ALIAS, cik("w"), body="data_in=1")),
    one("alias_head", req("HEAD", ALIAS, cik("w"))),
    one("options_star", req("OPTIONS", "*")),
    one("absolute_form", req("GET", "http://{host}/timestamp")),
    one("get_with_body", req("GET", "/timestamp", body="ignored"), masks=(_UNIX_S,)),
    one("unknown_path", req("GET", "/nothing/here", cik("w"))),
    one("unknown_path_escaped", req("GET", "/a%20b/%7Ec?x=1", cik("w"))),
    one("timestamp", req("GET", "/timestamp"), masks=(_UNIX_S,)),
    one("timestamp_head", req("HEAD", "/timestamp")),
    one("timestamp_post", req("POST", "/timestamp", body="x")),
    one("ip", req("GET", "/ip"), masks=(_IP,)),
    # -- content (§2.8, §12 item 18) ---------------------------------------------------------
    one("download_list", req("GET", "/provision/download", cik("w"))),
    one(
        "download_info",
        req("GET", "/provision/download?id=notes.txt&info=true", cik("w")),
        masks=((r"text/plain,12,[0-9]+,", "text/plain,12,<s>,"),),
    ),
    one("download", req("GET", "/provision/download?id=fw.bin", cik("w"))),
    one(
        "download_range", req("GET", "/provision/download?id=fw.bin", cik("w"), "Range: bytes=2-5")
    ),
    one(
        "download_suffix", req("GET", "/provision/download?id=fw.bin", cik("w"), "Range: bytes=-3")
    ),
    one("download_416", req("GET", "/provision/download?id=fw.bin", cik("w"), "Range: bytes=99-")),
    one("download_head", req("HEAD", "/provision/download?id=fw.bin", cik("w"))),
    one("download_missing", req("GET", "/provision/download?id=nope", cik("w"))),
    one("download_no_credentials", req("GET", "/provision/download")),
    one("download_post", req("POST", "/provision/download", cik("w"), body="x")),
    one(
        "upload",
        req(
            "POST",
            "/provision/upload?id=log.txt",
            cik("u"),
            "Content-Type: text/plain",
            body="hello",
        ),
    ),
    one("upload_bad_id", req("POST", "/provision/upload?id=../../x", cik("u"), body="x")),
    one("upload_no_id", req("POST", "/provision/upload", cik("u"), body="x")),
    one("upload_get", req("GET", "/provision/upload?id=a", cik("u"))),
    # -- routing by Host (§1, §13 item 16) --------------------------------------------------
    one("host_port_ignored", req("GET", "/timestamp", host="{host}:8080"), masks=(_UNIX_S,)),
    one("host_unknown", req("GET", "/timestamp", host="example.com")),
    one("host_tls_name_on_dev_port", req("GET", "/timestamp", host="{fqdn}")),
    one("host_missing_http10", req("GET", "/timestamp", host=None, version="HTTP/1.0")),
    one("host_missing_http11", req("GET", "/timestamp", host=None)),
    one("host_twice", req("GET", "/timestamp", "Host: {host}")),
    one("tls_write", req("POST", ALIAS, cik("w"), FORM, body="data_in=tls"), tls=True),
    one("tls_read", req("GET", ALIAS + "?data_in", cik("w")), tls=True),
    one("tls_host_mismatch", req("GET", "/timestamp", host="{devhost}"), tls=True),
    one(
        "tls_host_port_ignored",
        req("GET", "/timestamp", host="{fqdn}:8443"),
        tls=True,
        masks=(_UNIX_S,),
    ),
    one(
        "tls_http10_no_host",
        req("GET", "/timestamp", host=None, version="HTTP/1.0"),
        tls=True,
        masks=(_UNIX_S,),
    ),
    one("tls_password_basic", req("POST", ALIAS, _BASIC_PASSWORD, body="data_in=1"), tls=True),
    # -- framing (RFC 9112) -----------------------------------------------------------------
    one("connection_close", req("POST", ALIAS, cik("w"), "Connection: close", body="data_in=c")),
    one("connection_close_error", req("GET", "/nothing", "Connection: close")),
    one("http10", req("POST", ALIAS, cik("w"), version="HTTP/1.0", body="data_in=10")),
    one(
        "http10_keep_alive",
        req("GET", "/timestamp", "Connection: keep-alive", version="HTTP/1.0"),
        masks=(_UNIX_S,),
    ),
    one("expect_continue", req("POST", ALIAS, cik("w"), "Expect: 100-continue", body="data_in=e")),
    one(
        "chunked_body",
        req("POST", ALIAS, cik("w"), "Transfer-Encoding: chunked", length=False)
        + b"5\r\ndata_\r\n6\r\nin=chk\r\n0\r\n\r\n",
    ),
    one(
        "chunked_with_extension_and_trailer",
        req("POST", ALIAS, cik("w"), "Transfer-Encoding: chunked", length=False)
        + b"a;ext=1\r\ndata_in=ck\r\n0\r\nX-Trailer: 1\r\n\r\n",
    ),
    piped(
        "pipelined_writes",
        req("POST", ALIAS, cik("w"), FORM, body="data_in=p1"),
        req("POST", ALIAS, cik("w"), FORM, body="data_in=p2"),
        req("POST", ALIAS, cik("w"), FORM, body="data_in=p3"),
    ),
    piped(
        "pipelined_mixed",
        req("POST", ALIAS, cik("w"), FORM, body="data_in=m1"),
        req("GET", ALIAS + "?data_in", cik("w")),
        req("POST", ALIAS, cik("w"), FORM, body="data_in=%ff"),
        req("POST", ALIAS, "X-Exosite-CIK: nope", FORM, body="data_in=m2"),
        req("GET", "/nothing"),
        req("POST", ALIAS, cik("w"), FORM, body="data_in=m3"),
        req("GET", ALIAS + "?data_in", cik("w")),
    ),
    one(
        "keep_alive_sequence",
        *(req("POST", ALIAS, cik("w"), body=f"data_in=k{i}") for i in range(5)),
    ),
    one("malformed_request_line", b"GARBAGE\r\n\r\n"),
    one("not_http", b"\x00\x01garbage\r\n\r\n"),
    one("bad_header_line", b"GET /timestamp HTTP/1.1\r\nHost: {host}\r\nno colon here\r\n\r\n"),
    one("space_before_colon", b"GET /timestamp HTTP/1.1\r\nHost : {host}\r\n\r\n"),
    one("bad_content_length", req("POST", ALIAS, cik("w"), "Content-Length: abc", length=False)),
    one(
        "two_content_lengths",
        req("POST", ALIAS, cik("w"), "Content-Length: 3", "Content-Length: 4", length=False)
        + b"a=1",
    ),
    one("head_too_large", req("GET", "/timestamp", "X-Big: " + "a" * 200_000)),
    # -- RFC 9112 findings closed after the fast path merged (docs/reliability.md section 2) --
    one("request_line_two_spaces", b"GET  /timestamp HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    one(
        "request_line_two_spaces_after_target", b"GET /timestamp  HTTP/1.1\r\nHost: {host}\r\n\r\n"
    ),
    one("host_with_space", req("GET", "/timestamp", host="a b")),
    one("host_with_userinfo", req("GET", "/timestamp", host="user@{host}")),
    one("host_bad_port", req("GET", "/timestamp", host="{host}:x")),
    one("host_not_ascii", "GET /timestamp HTTP/1.1\r\nHost: démo.example\r\n\r\n".encode()),
    one("tls_host_with_slash", req("GET", "/timestamp", host="a/b"), tls=True),
    one(
        "transfer_coding_gzip_chunked",
        req("POST", ALIAS, cik("w"), "Transfer-Encoding: gzip, chunked", length=False)
        + b"9\r\ndata_in=g\r\n0\r\n\r\n",
    ),
    one(
        "chunked_credentials_in_trailer",  # trailer fields are never headers: no credentials
        req("POST", ALIAS, FORM, "Transfer-Encoding: chunked", length=False)
        + b"9\r\ndata_in=r\r\n0\r\nX-Exosite-CIK: {tok_w}\r\n\r\n",
    ),
)


async def _api(gw: TestGateway, method: str, path: str, **kw: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.api, headers=gw.admin_headers) as client:
        r = await client.request(method, path, **kw)  # type: ignore[arg-type]
    assert r.status_code < 300, (method, path, r.status_code, r.text)
    return r


async def _activate(gw: TestGateway, identity: str) -> str:
    raw = req("POST", "/provision/activate", FORM, body=f"id={identity}").replace(
        b"{host}", gw.devmode_fqdn().encode()
    )
    answer = await _exchange_plain(gw.ports["dev_http"], raw)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    return body.decode()


async def _exchange_plain(port: int, raw: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        data = b""
        with trio.fail_after(READ_TIMEOUT_S):
            while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 40:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
    return data


async def prepare(gw: TestGateway) -> dict[str, str]:
    """The state every case expects: devices ``w`` (writer), ``r`` (values to read), ``p``
    (a pending set value), ``l`` (locked), ``u`` (uploader); resource ``temp`` (number);
    content ``fw.bin`` and ``notes.txt``.  Returns the template variables."""
    cid = "demo"
    base = f"/connectors/{cid}"
    await _api(gw, "POST", f"{base}/resources", json={"alias": "temp", "format": "number"})
    await _api(
        gw,
        "POST",
        f"{base}/content",
        params={"id": "fw.bin"},
        content=_FW.encode(),
        headers={"Content-Type": "application/octet-stream"},
    )
    await _api(
        gw,
        "POST",
        f"{base}/content",
        params={"id": "notes.txt", "description": "Read me"},
        content=b"hello, notes",
        headers={"Content-Type": "text/plain"},
    )
    names = ("w", "r", "p", "l", "u")
    tokens = {name: await _activate(gw, name) for name in names}
    await _api(
        gw,
        "PATCH",
        f"{base}/devices/r/state",
        json={"config_io": '{"v": 1}', "data_out": "a b&c=d/é"},
    )
    await _api(gw, "PATCH", f"{base}/devices/p/state", json={"data_out": "go"})
    await _api(gw, "PATCH", f"{base}/devices/l", json={"locked": True})
    out = {f"tok_{name}": tok for name, tok in tokens.items()}
    out["basic_w"] = base64.b64encode(f":{tokens['w']}".encode()).decode()
    out["fqdn"] = gw.fqdn()
    out["devhost"] = gw.devmode_fqdn()
    return out


def _fill(raw: bytes, values: Mapping[str, str]) -> bytes:
    for key, value in values.items():
        raw = raw.replace(b"{%s}" % key.encode(), value.encode())
    return raw


def _split_one(buf: bytes, head_request: bool) -> tuple[bytes, bytes] | None:
    """One complete response at the start of ``buf`` (and the rest), or None if more bytes
    are needed.  Knows Content-Length, chunked, 1xx/204/304 and answers to HEAD."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[: end + 4]
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            fields[k.strip().lower()] = v.strip()
    rest = buf[end + 4 :]
    if status < 200 or status in (204, 304) or head_request:
        return head, rest
    if "content-length" in fields:
        n = int(fields["content-length"])
        if len(rest) < n:
            return None
        return head + rest[:n], rest[n:]
    if fields.get("transfer-encoding", "").lower() == "chunked":
        pos = 0
        while True:
            eol = rest.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(rest[pos:eol].split(b";")[0], 16)
            pos = eol + 2 + size + 2
            if len(rest) < pos:
                return None
            if size == 0:
                return head + rest[:pos], rest[pos:]
    return None  # close-delimited: the caller takes everything up to EOF


async def _open(gw: TestGateway, case: Case) -> trio.abc.Stream:
    if case.tls:
        ctx = client_context(gw.ca, alpn=["http/1.1"])
        return await open_tls_client(gw.ports["tls"], gw.fqdn(), ctx)
    return await trio.open_tcp_stream("127.0.0.1", gw.ports["dev_http"])


async def run_case(gw: TestGateway, case: Case, values: Mapping[str, str]) -> list[str]:
    """The answers to ``case`` (one string per answer, interim 100s included), then
    ``"open"`` if the connection still answers a probe request, else ``"closed"``."""
    host = gw.fqdn() if case.tls else gw.devmode_fqdn()
    fill = {**values, "host": host, **case.vars}
    answers: list[str] = []
    buf = b""
    eof = False
    stream = await _open(gw, case)
    try:
        for group in case.groups:
            raws = [_fill(r, fill) for r in group]
            # the server may answer early and close: then read what it sent
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(b"".join(raws))
            for raw in raws:
                expect_continue = b"\r\nexpect: 100-continue" in raw.lower().split(b"\r\n\r\n")[0]
                head_request = raw.startswith(b"HEAD ")
                wanted = 2 if expect_continue else 1
                while wanted and not (eof and not buf):
                    split = _split_one(buf, head_request)
                    if split is not None:
                        answer, buf = split
                        answers.append(answer.decode("latin-1"))
                        wanted -= 1
                        continue
                    if eof:
                        answers.append(buf.decode("latin-1") + "<eof>")
                        buf = b""
                        break
                    chunk = b""
                    with trio.fail_after(READ_TIMEOUT_S):
                        try:
                            chunk = await stream.receive_some(65536)
                        except trio.BrokenResourceError:
                            chunk = b""
                    if not chunk:
                        eof = True
                    buf += chunk
            if eof:
                break
        answers.append("closed" if eof else await _probe(stream, host))
    finally:
        await trio.aclose_forcefully(stream)
    return [normalize(a, case.masks) for a in answers]


async def _probe(stream: trio.abc.Stream, host: str) -> str:
    """Whether the connection still carries requests: ``GET /timestamp`` with
    ``Connection: close`` answered with 200 means open."""
    data = b""
    try:
        await stream.send_all(
            f"GET /timestamp HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        with trio.fail_after(READ_TIMEOUT_S):
            while chunk := await stream.receive_some(65536):
                data += chunk
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    return "open" if data.startswith(b"HTTP/1.1 200 ") else "closed"


_DATES = re.compile(r"(?m)^(date|last-modified): [^\r]*")
_TOKEN = re.compile(r"\b[0-9a-f]{40}\b")


def normalize(answer: str, masks: Sequence[tuple[str, str]] = ()) -> str:
    out = _DATES.sub(r"\1: <http-date>", answer)
    out = _TOKEN.sub("<token>", out)
    for pattern, repl in masks:
        out = re.sub(pattern, repl, out)
    return out
