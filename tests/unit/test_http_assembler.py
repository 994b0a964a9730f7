"""The sans-IO HTTP/1.1 request assembler (gateway/device/http/assembler.py): events, limits
and refusals, byte at a time and all at once; h11 (hypercorn's parser) is the oracle for
what valid requests mean.  Requests are written out by hand."""

from __future__ import annotations

from urllib.parse import unquote

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.device.http.assembler import (
    CONNECTION_CLOSED,
    END_OF_MESSAGE,
    NEED_DATA,
    Body,
    Event,
    RequestAssembler,
    RequestHead,
    UnsupportedTransferCoding,
    Upgrade,
    _ChunkWalk,
    valid_host,
)
from gateway.errors import BadRequest, GatewayError, HeadersTooLarge

GET = b"GET /onep:v1/stack/alias?a&b HTTP/1.1\r\nHost: x\r\nX-Exosite-CIK: t\r\n\r\n"
POST = b"POST /onep:v1/stack/alias HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\ndata_in=1"


def events(asm: RequestAssembler) -> list[Event]:
    out: list[Event] = []
    while (event := asm.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def feed(data: bytes, *, chunk: int | None = None, **limits: int) -> list[object]:
    """Everything the assembler makes of ``data`` (fed whole or ``chunk`` bytes at a time):
    heads as tuples, bodies joined per request, errors as (class, message)."""
    asm = RequestAssembler(**limits)
    out: list[object] = []
    body = b""
    step = chunk or len(data) or 1
    try:
        for i in range(0, len(data), step):
            asm.receive_data(data[i : i + step])
            while (event := asm.next_event()) is not NEED_DATA:
                if type(event) is RequestHead:
                    out.append(
                        (event.method, event.path, event.query, event.headers, event.keep_alive)
                    )
                elif type(event) is Body:
                    body += event.data
                elif event is END_OF_MESSAGE:
                    out.append(body)
                    body = b""
                else:
                    out.append(event)
    except GatewayError as exc:
        out.append((type(exc), exc.message))
    return out


def test_a_request_and_its_body() -> None:
    assert feed(POST) == [
        (
            "POST",
            "/onep:v1/stack/alias",
            b"",
            [(b"host", b"x"), (b"content-length", b"9")],
            True,
        ),
        b"data_in=1",
    ]


@pytest.mark.parametrize("chunk", [1, 2, 7, 64])
def test_byte_at_a_time_equals_all_at_once(chunk: int) -> None:
    data = GET + POST + GET
    assert feed(data, chunk=chunk) == feed(data)


def test_pipelined_requests_queue_in_order() -> None:
    asm = RequestAssembler()
    asm.receive_data(POST + GET + POST)
    kinds = [type(e).__name__ if type(e) is not type else e.__name__ for e in events(asm)]
    assert kinds == [
        "RequestHead",
        "Body",
        "END_OF_MESSAGE",
        "RequestHead",
        "END_OF_MESSAGE",
        "RequestHead",
        "Body",
        "END_OF_MESSAGE",
    ]
    assert asm.idle


def test_take_request_only_when_the_body_is_all_there() -> None:
    asm = RequestAssembler()
    asm.receive_data(POST[:-3])
    assert asm.take_request() is None  # body incomplete: nothing taken
    assert type(asm.next_event()) is RequestHead
    asm2 = RequestAssembler()
    asm2.receive_data(POST + POST)
    first = asm2.take_request()
    assert first is not None
    assert first[0].method == "POST"
    assert first[1] == b"data_in=1"
    assert asm2.take_request() is not None
    assert asm2.idle


def test_path_decoded_query_raw_target_kept() -> None:
    asm = RequestAssembler()
    asm.receive_data(b"GET /a%20b/%7Ec?x=%20 HTTP/1.1\r\nHost: h\r\n\r\n")
    head = asm.next_event()
    assert type(head) is RequestHead
    assert (head.path, head.query, head.target) == ("/a b/~c", b"x=%20", b"/a%20b/%7Ec?x=%20")


def test_header_values_trimmed_names_lowered_raw_names_kept() -> None:
    asm = RequestAssembler()
    asm.receive_data(b"GET / HTTP/1.1\r\nHost:  h \t\r\nX-Exosite-CIK: tok  \r\n\r\n")
    head = asm.next_event()
    assert type(head) is RequestHead
    assert head.headers == [(b"host", b"h"), (b"x-exosite-cik", b"tok")]
    assert head.raw_headers == [(b"Host", b"h"), (b"X-Exosite-CIK", b"tok")]
    assert head.head_size == len(b"host" + b"h" + b"x-exosite-cik" + b"tok")


@pytest.mark.parametrize(
    ("request_bytes", "keep_alive", "expect"),
    [
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", True, False),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", False, False),
        (b"GET / HTTP/1.0\r\n\r\n", False, False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", False, False),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
            True,
            True,
        ),
        (b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", False, False),
    ],
)
def test_keep_alive_and_expect_as_h11_decides(
    request_bytes: bytes, keep_alive: bool, expect: bool
) -> None:
    asm = RequestAssembler()
    asm.receive_data(request_bytes)
    head = asm.next_event()
    assert type(head) is RequestHead
    assert (head.keep_alive, head.expect_continue) == (keep_alive, expect)


def test_chunked_body_with_extensions_and_trailers() -> None:
    data = (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;x=y\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: 1\r\n\r\n"
    )
    for chunk in (1, 3, len(data)):
        out = feed(data, chunk=chunk)
        assert out[1] == b"hello world"


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_trailer_fields_are_never_headers(chunk: int) -> None:
    """Trailer fields are dropped (docs/decisions.md "HTTP trailers"): a head already
    emitted never grows them, however the reads fall (RFC 9110 §6.5.1), and the request
    after them is parsed as before."""
    data = (
        b"POST /onep:v1/stack/record HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nalias\r\n0\r\nX-Exosite-CIK: 0123456789\r\nHost: evil\r\n\r\n"
    )
    asm = RequestAssembler()
    got: list[Event] = []
    for i in range(0, len(data + GET), chunk):
        asm.receive_data((data + GET)[i : i + chunk])
        got.extend(events(asm))
    heads = [e for e in got if type(e) is RequestHead]
    assert [h.headers for h in heads] == [
        [(b"host", b"h"), (b"transfer-encoding", b"chunked")],
        [(b"host", b"x"), (b"x-exosite-cik", b"t")],
    ]
    assert heads[0].raw_headers == [(b"Host", b"h"), (b"Transfer-Encoding", b"chunked")]
    assert b"".join(e.data for e in got if type(e) is Body) == b"alias"


@pytest.mark.parametrize("chunk", [1, 100, 700])
def test_trailer_section_limit(chunk: int) -> None:
    """Dropped trailers still cost memory while they arrive (httptools buffers a field):
    a trailer section still unfinished past ``max_head_bytes`` is 431, like an unfinished
    head.  One that completes within a read is dropped whole (its cost is that read)."""
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
    many = head + b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 40) for i in range(40)) + b"\r\n"
    out = feed(many, chunk=chunk, max_head_bytes=1024)
    assert out[-1][0] is HeadersTooLarge  # type: ignore[index]
    assert feed(many, max_head_bytes=1024)[-1] == b"abc"
    one_big = head + b"X-T: " + b"v" * 5000  # never ends
    out = feed(one_big, chunk=chunk, max_head_bytes=1024)
    assert out[-1][0] is HeadersTooLarge  # type: ignore[index]
    small = head + b"X-T: 1\r\n\r\n"
    assert feed(small, chunk=chunk, max_head_bytes=1024)[-1] == b"abc"
    # the body itself is no trailer: a big chunked body in small reads is not refused
    body = b"400\r\n" + b"b" * 1024 + b"\r\n"
    big = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body * 8
    assert feed(big + b"0\r\n\r\n", chunk=chunk, max_head_bytes=1024)[-1] == b"b" * 8192


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"h",
        b"demo.devmode-m2.localhost",
        b"h:8080",
        b"h:",
        b"[::1]",
        b"[::1]:443",
        b"%41.x",
        b"127.0.0.1:1",
        b"a-b_c~d!$&'()*+,;=",
    ],
)
def test_valid_host_values(value: bytes) -> None:
    assert valid_host(value)
    assert feed(b"GET / HTTP/1.1\r\nHost: " + value + b"\r\n\r\n")[-1] == b""


@pytest.mark.parametrize(
    "value",
    [
        b"a b",
        b"a/b",
        b"user@h",
        b"h:x",
        b"h:80:81",
        b"h:-1",
        b"d\xc3\xa9mo",
        b"[::1",
        b"[]",
        b"[::1]x",
        b"[::1]:x",
        b"[a/b]",
        b"h\x7f",
        b"h?",
        b"h#",
    ],
)
def test_invalid_host_is_bad_request(value: bytes) -> None:
    """RFC 9112 §3.2: a Host that is not ``uri-host [":" port]`` is 400 (not routed as an
    unknown host); nothing of the request is emitted."""
    assert not valid_host(value)
    out = feed(b"GET / HTTP/1.1\r\nHost: " + value + b"\r\n\r\n")
    assert len(out) == 1
    assert out[0][0] is BadRequest  # type: ignore[index]  # (llhttp refuses DEL itself)


@pytest.mark.parametrize(
    "data",
    [
        # RFC 9112 §6.1: Content-Length with Transfer-Encoding is a smuggling shape
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        # a chunk size that does not fit 64 bits
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"1" * 20
        + b"\r\nabc",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"\x00\x01garbage\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
        # RFC 9112 §3: one space between the request line's parts (llhttp skips a run)
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET   /onep:v1/stack/alias?a&b  HTTP/1.1\r\nHost: x\r\nX-Exosite-CIK: t\r\n\r\n",
        # RFC 9112 §3.2: a Host value that is not uri-host[:port]
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        # RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing
        b"POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
)
def test_malformed_framing_is_bad_request_after_the_good_requests(data: bytes) -> None:
    """Requests before the bad one are delivered; nothing after it (the connection ends).
    A head refused for its framing yields no head; a broken body comes after its head."""
    out = feed(GET + data + GET)
    assert out[:2] == feed(GET)
    assert out[-1][0] is BadRequest  # type: ignore[index]
    assert len(out) in (3, 4)


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"deflate,chunked", b"x, Chunked"])
def test_transfer_coding_before_chunked_is_501(coding: bytes) -> None:
    """RFC 9112 §6.1: a coding we do not decode is 501 (h11's answer too); the request is
    not emitted and nothing after it is read."""
    data = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: " + coding + b"\r\n\r\n0\r\n\r\n"
    for chunk in (1, None):
        out = feed(GET + data + GET, chunk=chunk)
        assert out[:2] == feed(GET)
        assert out[2][0] is UnsupportedTransferCoding  # type: ignore[index]
        assert len(out) == 3
    assert UnsupportedTransferCoding("x").http_status == 501


def test_two_header_lines_of_codings_are_one_list() -> None:
    lines = b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"
    out = feed(b"POST / HTTP/1.1\r\nHost: h\r\n" + lines + b"\r\n0\r\n\r\n")
    assert out[-1][0] is UnsupportedTransferCoding  # type: ignore[index]


@pytest.mark.parametrize("chunk", [1, 2, 5, 7, 64])
def test_request_line_check_across_reads(chunk: int) -> None:
    """The request-line check sees a line however the reads cut it, and a burst of the
    same good line before a bad one does not hide the bad one."""
    good = POST * 3 + GET
    assert feed(good, chunk=chunk) == feed(good)
    bad = POST * 3 + b"POST  /onep:v1/stack/alias HTTP/1.1\r\nHost: x\r\n\r\n"
    out = feed(bad, chunk=chunk)
    assert out[-1][0] is BadRequest  # type: ignore[index]
    assert out[:-1] == feed(POST * 3)
    big = b"GET  / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n"
    assert feed(big, chunk=chunk * 100)[-1][0] is BadRequest  # type: ignore[index]
    # a body holding the good line does not hide the bad line after it; empty lines
    # before a request are allowed (RFC 9112 §2.2)
    fake = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 16\r\n\r\nGET / HTTP/1.1\r\n"
    out = feed(fake + b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n" + b"\r\n" + GET, chunk=chunk)
    assert out[1] == b"GET / HTTP/1.1\r\n"
    assert out[-1][0] is BadRequest  # type: ignore[index]
    assert len(out) == 3
    assert feed(fake + b"\r\n" + GET, chunk=chunk) == feed(fake) + feed(GET)


@pytest.mark.parametrize("chunk", [1, 2, 5, 9, 64, None])
@pytest.mark.parametrize("trailer", [b"", b"X-T: GET /x HTTP/1.1\r\n"])
def test_request_line_check_after_a_chunked_body(trailer: bytes, chunk: int | None) -> None:
    """A chunked body is walked to its end however the reads cut it, so the request after
    it is checked where it begins: a copy of the good line in the body, its trailer or a
    later request does not hide a bad line."""
    good = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
    body = b"GET /x HTTP/1.1\r\n"
    chunked = (
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x;e=1\r\n%s\r\n0\r\n" % (len(body), body)
        + trailer
        + b"\r\n"
    )
    out = feed(chunked + b"GET  /x HTTP/1.1\r\nHost: h\r\n\r\n" + good, chunk=chunk)
    assert out[1] == body
    assert out[-1][0] is BadRequest  # type: ignore[index]
    assert len(out) == 3
    twice = feed(chunked + b"\r\n" + good + chunked + good, chunk=chunk)
    assert twice == feed(chunked + good) * 2


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=40), max_size=5),
    st.lists(st.text(alphabet="ab=;x", max_size=8).map(str.encode), max_size=3),
    st.sampled_from([b"", b";e=1", b';q="a;b"']),
    st.integers(1, 30),
)
def test_chunk_walk_finds_the_end_whatever_the_reads(
    chunks: list[bytes], trailers: list[bytes], ext: bytes, step: int
) -> None:
    """The walk that places the next request line ends exactly after the body's empty line,
    read by read, and measures only an unfinished trailer section."""
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), ext, c) for c in chunks)
    body += b"0" + ext + b"\r\n" + b"".join(b"X-" + t + b": v\r\n" for t in trailers) + b"\r\n"
    data = body + b"GET / HTTP/1.1\r\n"
    walk = _ChunkWalk()
    ends = [walk.run(data[i : i + step], 0) for i in range(0, len(body), step)]
    last = len(ends) - 1
    assert ends[:last] == [-1] * last
    assert ends[last] + last * step == len(body)
    whole = _ChunkWalk()
    assert whole.run(data, 0) == len(body)
    assert whole.trailer == 0


def test_unfinished_head_limit() -> None:
    """A head still incomplete after ``max_head_bytes`` more bytes is 431; the bytes of the
    read it began in count as far as llhttp reported them, so a burst of small pipelined
    requests ending in a partial head is never refused for the requests before it."""
    limit = 1024
    burst = POST * 100 + b"GET / HTTP/1.1\r\nHost: h\r\n"  # 6 KB before the partial head
    assert feed(burst, max_head_bytes=limit)[-1] == b"data_in=1"
    big = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 5000
    assert feed(big + b"\r\n\r\n", chunk=4096, max_head_bytes=limit)[-1] == b""  # completes
    out = feed(big, chunk=512, max_head_bytes=limit)
    assert out[-1][0] is HeadersTooLarge  # type: ignore[index]
    # a complete head in one read is the application's to measure (431 from DeviceApp)
    assert feed(big + b"\r\n\r\n", max_head_bytes=limit)[-1] == b""


def test_upgrade_hands_over_the_head_and_every_byte_after_it() -> None:
    asm = RequestAssembler()
    head = b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    asm.receive_data(GET + head + b"\x00\x01 rest")
    got = events(asm)
    assert type(got[0]) is RequestHead
    assert got[1] is END_OF_MESSAGE
    upgrade = got[2]
    assert type(upgrade) is Upgrade
    assert upgrade.data == head + b"\x00\x01 rest"
    assert asm.closed
    asm.receive_data(b"more")  # ignored: the stream is the full stack's now
    assert asm.next_event() is NEED_DATA


def test_eof_between_and_inside_requests() -> None:
    asm = RequestAssembler()
    asm.receive_data(GET)
    asm.receive_data(b"")
    assert [e for e in events(asm) if e is CONNECTION_CLOSED] == [CONNECTION_CLOSED]
    asm2 = RequestAssembler()
    asm2.receive_data(POST[:-2])
    asm2.receive_data(b"")
    assert events(asm2)[-1] is CONNECTION_CLOSED


# -- h11 as the oracle ----------------------------------------------------------------------

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
_value = st.text(alphabet='abcdefghijklmnopqrstuvwxyz0123456789 =&%{}":,/', max_size=30).map(
    str.strip
)
_target = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/_-:?&=%7E", max_size=40).map(
    lambda t: "/" + t
)


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE"]))
    headers = [("Host", "demo.devmode-m2.localhost")]
    names = draw(st.lists(_token, max_size=5, unique=True))
    reserved = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade"}
    headers += [(n, draw(_value)) for n in names if n.lower() not in reserved]
    body = draw(st.binary(max_size=50))
    chunked = draw(st.booleans()) and bool(body)
    raw = f"{method} {draw(_target)} HTTP/1.1\r\n"
    if body and not chunked:
        headers.append(("Content-Length", str(len(body))))
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    raw += "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    data = raw.encode()
    if chunked:
        cut = draw(st.integers(0, len(body)))
        for part in (body[:cut], body[cut:]):
            if part:
                data += b"%x\r\n%s\r\n" % (len(part), part)
        data += b"0\r\n\r\n"
    else:
        data += body
    return data


def _h11(data: bytes) -> list[object]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    out: list[object] = []
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            target = event.target
            raw_path, _, query = target.partition(b"?")

            out.append(
                (
                    event.method.decode(),
                    unquote(raw_path.decode()),
                    query,
                    list(event.headers),
                    True,
                )
            )
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            out.append(body)
            body = b""
            conn.send(h11.Response(status_code=204, headers=[]))
            conn.send(h11.EndOfMessage())
            conn.start_next_cycle()
        else:
            return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_requests(), min_size=1, max_size=4), st.integers(1, 64))
def test_valid_requests_mean_what_h11_says(requests: list[bytes], chunk: int) -> None:
    data = b"".join(requests)
    expected = _h11(data)
    assert feed(data) == expected
    assert feed(data, chunk=chunk) == expected
