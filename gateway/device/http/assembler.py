"""Sans-IO HTTP/1.1 request assembler: bytes in, request events out.

Theory of operation
===================

The parsing is llhttp's (the parser of Node.js, compiled, through ``httptools``): it
validates the request line, header syntax and body framing strictly — no leniency flags —
and calls back per URL span, per header, per body span and at the end of each message.
:class:`RequestAssembler` collects those callbacks into events, in the shape h11 gives
them, so the Trio driver (``gateway.device.http.h1``) reads like any sans-IO loop::

    assembler.receive_data(data)            # b"" means EOF
    while (event := assembler.next_event()) is not NEED_DATA:
        ...                                 # RequestHead, Body, EndOfMessage, Upgrade, ...

Each ``receive_data`` runs llhttp over the whole chunk at once, so a pipelined burst of
requests becomes a queue of events; :attr:`RequestAssembler.queued_bytes` tells the driver
how much parsed input waits, which is how it bounds pipelining (it stops reading).

On top of llhttp the assembler applies what h11 (hypercorn's parser, which answered these
requests before) also enforces, so both paths refuse the same heads (RFC 9112): exactly one
``Host`` in HTTP/1.1, versions 1.0 and 1.1 only, an ASCII request target, exactly one space
between the request line's parts (llhttp skips a run of spaces; h11 refused it: §3), and
``chunked`` as the only transfer coding (``gzip, chunked`` is ``501``, as h11 answers it:
§6.1).  It also refuses what neither parser checked: a ``Host`` value that is not
``uri-host [":" port]`` (§3.2: 400, where routing would have called it an unknown host)
and ``Transfer-Encoding`` in an HTTP/1.0 request (§6.1: faulty framing).  llhttp on its own
already refuses, where h11 did not, ``Content-Length`` together with ``Transfer-Encoding``
(request smuggling, RFC 9112 §6.1) and a chunk size that does not fit 64 bits.

The request-line check needs the line's bytes, which llhttp does not report (only the
target's): the head's request line, rebuilt with single spaces, must stand where the request
begins, after nothing but empty lines (RFC 9112 §2.2).  That place is tracked from read to
read: a read begins between requests or inside a known body; the next request begins after
the previous head's empty line plus its ``Content-Length``, or where its chunked body ends
(:class:`_ChunkWalk` follows the framing llhttp has already accepted, a few steps per
chunk).  The bytes of a head that spans reads are kept until it completes (bounded by
``max_head_bytes``).  Should the place ever be lost, the line need only occur after the
previous line found: a good line is never refused.

Trailer fields of a chunked body are dropped (docs/decisions.md "HTTP trailers"): never
merged into the head's headers (RFC 9110 §6.5.1), which the driver may read after the
trailer was parsed.  A trailer section still unfinished after a read counts against
``max_head_bytes`` like an unfinished head (431): httptools buffers the field it parses.

Limits are constructor parameters.  ``max_head_bytes`` bounds a head that has not completed:
llhttp keeps no buffer, but httptools accumulates the header field being parsed, so once a
head is still incomplete after a read, every further byte read before it completes counts
against the limit (the bytes of the read in which it began are counted as far as llhttp has
reported them, so the count never exceeds the head's real size).  A complete head is
measured again by the application (``DeviceApp``: names plus values, 431), as h11's
``max_incomplete_event_size`` and the application did before.

Errors are events too: a malformed request is queued after the requests before it, and
:meth:`RequestAssembler.next_event` raises it (``BadRequest`` 400, ``HeadersTooLarge`` 431)
when the driver gets there, so earlier pipelined requests are still answered first.  After
an error, an upgrade or EOF the assembler accepts no more data.

Upgrades (``Connection: upgrade`` with ``Upgrade``, and ``CONNECT``) are not this
assembler's business: it returns an :class:`Upgrade` event holding the request head,
rebuilt from its parts, and every byte after it, for the driver to hand to the full HTTP
stack.  Pure: no I/O, no clock (docs/architecture.md principle 1).
"""

from __future__ import annotations

from collections import deque
from urllib.parse import unquote

import httptools

from gateway.errors import BadRequest, GatewayError, HeadersTooLarge

__all__ = [
    "CONNECTION_CLOSED",
    "DEFAULT_MAX_HEAD_BYTES",
    "END_OF_MESSAGE",
    "NEED_DATA",
    "Body",
    "Event",
    "RequestAssembler",
    "RequestHead",
    "UnsupportedTransferCoding",
    "Upgrade",
    "valid_host",
]

DEFAULT_MAX_HEAD_BYTES = 16 * 1024  # an unfinished head may not grow past this (431)


class UnsupportedTransferCoding(BadRequest):
    """A transfer coding other than ``chunked`` (``gzip, chunked``): RFC 9112 §6.1 says
    ``501 Not Implemented``, and h11 answers it so.  A :class:`BadRequest` because it is a
    refusal of the input like the others (nothing changed, the connection ends); only the
    status differs."""

    code = "unsupported_transfer_coding"
    http_status = 501


class NEED_DATA:
    """No complete event: feed more bytes."""


class END_OF_MESSAGE:
    """The current request's body is complete."""


class CONNECTION_CLOSED:
    """The peer closed its sending side (EOF) between requests or in the middle of one."""


class RequestHead:
    """A request line and its headers.

    ``path`` is percent-decoded and ``query`` raw, split at the first ``?`` of the target
    as sent (an absolute-form target keeps its scheme and host in ``path``).  ``headers``
    have lower-case names and values without surrounding whitespace, in order;
    ``raw_headers`` keep the names as sent.  ``head_size`` is the sum of the names' and
    values' lengths.  ``keep_alive`` is false for HTTP/1.0 or a ``close`` token in
    ``Connection``; ``expect_continue`` is an HTTP/1.1 ``Expect: 100-continue``.
    ``content_length`` is None for a chunked body or none at all (``chunked`` says which).
    """

    __slots__ = (
        "chunked",
        "content_length",
        "expect_continue",
        "head_size",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query",
        "raw_headers",
        "target",
    )

    def __init__(
        self,
        *,
        method: str,
        target: bytes,
        path: str,
        query: bytes,
        http_version: str,
        headers: list[tuple[bytes, bytes]],
        raw_headers: list[tuple[bytes, bytes]],
        head_size: int,
        keep_alive: bool,
        expect_continue: bool,
        content_length: int | None,
        chunked: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.http_version = http_version
        self.headers = headers
        self.raw_headers = raw_headers
        self.head_size = head_size
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.content_length = content_length
        self.chunked = chunked

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def raw(self) -> bytes:
        """The head rebuilt as bytes (names as sent, values trimmed): what the full stack
        parses when this request is handed over."""
        lines = [b"%s %s HTTP/%s" % (self.method.encode(), self.target, self.http_version.encode())]
        lines.extend(name + b": " + value for name, value in self.raw_headers)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def __repr__(self) -> str:
        return f"<RequestHead {self.method} {self.target!r} HTTP/{self.http_version}>"


class Body:
    """A piece of the current request's body (chunked framing removed)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Upgrade:
    """A request asking for another protocol (or ``CONNECT``): ``data`` is its head and
    every byte the peer sent after it; the assembler is done."""

    __slots__ = ("data", "head")

    def __init__(self, head: RequestHead, data: bytes) -> None:
        self.head = head
        self.data = data


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: GatewayError) -> None:
        self.error = error


Event = (
    RequestHead | Body | Upgrade | type[END_OF_MESSAGE] | type[CONNECTION_CLOSED] | type[NEED_DATA]
)


class RequestAssembler:
    """One connection's request stream (see the module docstring).

    ``next_event`` raises ``BadRequest`` or ``HeadersTooLarge`` where the stream broke;
    events before that point are returned first.
    """

    __slots__ = (
        "_carry",
        "_carry_exact",
        "_carry_from",
        "_cursor",
        "_data",
        "_done",
        "_events",
        "_head_bytes",
        "_headers",
        "_host",
        "_in_head",
        "_in_message",
        "_next",
        "_parser",
        "_queued",
        "_raw_headers",
        "_skip",
        "_started_this_read",
        "_url",
        "_walk",
        "_walk_from",
        "max_head_bytes",
    )

    def __init__(self, *, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES) -> None:
        self.max_head_bytes = max_head_bytes
        self._parser = httptools.HttpRequestParser(self)
        self._events: deque[RequestHead | Body | Upgrade | _Failure | type] = deque()
        self._queued = 0  # body bytes waiting in _events
        self._done = False  # an error, an upgrade or EOF: no more input
        self._in_head = False
        self._in_message = False
        self._started_this_read = False
        self._head_bytes = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._raw_headers: list[tuple[bytes, bytes]] = []
        # the request-line check (module docstring): the read being parsed; where in it the
        # next request may begin (-1: inside a chunked body until its walk ends, or lost);
        # where the last line was found; how much of the next read belongs to a
        # Content-Length body (-1: a chunked body goes on); the reads of an unfinished head
        self._data = b""
        self._next = 0
        self._cursor = 0
        self._skip = 0
        self._carry: list[bytes] = []
        self._carry_from = 0
        self._carry_exact = True
        self._host = b""  # the last Host value found valid (empty is valid too)
        # a chunked body whose start is known, followed to its end (module docstring)
        self._walk: _ChunkWalk | None = None
        self._walk_from = 0

    # -- sans-IO surface -------------------------------------------------------------------

    @property
    def queued_bytes(self) -> int:
        """Body bytes parsed but not yet taken (heads count a nominal 256 bytes each)."""
        return self._queued

    @property
    def idle(self) -> bool:
        """No request in progress: nothing queued and no partial head or body."""
        return not self._events and not self._in_message

    @property
    def in_head(self) -> bool:
        """A request head has begun and is not complete."""
        return self._in_head

    @property
    def head_began(self) -> bool:
        """The unfinished head (if any) began in the last ``receive_data``."""
        return self._in_head and self._started_this_read

    @property
    def closed(self) -> bool:
        """No more input is accepted (an error, an upgrade or EOF is queued or taken)."""
        return self._done

    def receive_data(self, data: bytes) -> None:
        """Parse ``data`` (``b""``: the peer closed).  Never raises for bad input: errors
        are queued as events."""
        if self._done:
            return
        if not data:
            self._done = True
            self._events.append(CONNECTION_CLOSED)
            return
        was_in_head = self._in_head
        self._started_this_read = False
        self._data = data
        self._next = self._skip
        self._cursor = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[int(exc.args[0]) :])
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            error = cause if isinstance(cause, GatewayError) else BadRequest(str(exc))
            self._fail(error)
            return
        except httptools.HttpParserError as exc:
            self._fail(BadRequest(f"malformed request: {exc}"))
            return
        finally:
            self._data = b""  # only the carry outlives a read
        if self._in_head:
            if was_in_head and not self._started_this_read:
                self._head_bytes += len(data)  # all of it is head: the head began earlier
                self._carry.append(data)
            else:  # the head began in this read, at (or after) the next request's place
                self._carry = [data]
                self._carry_exact = self._next >= 0
                self._carry_from = self._next if self._carry_exact else self._cursor
            self._skip = 0
            if self._head_bytes > self.max_head_bytes:
                self._fail(HeadersTooLarge(f"request head above {self.max_head_bytes} bytes"))
            return
        walk = self._walk
        if walk is not None:  # the chunked body goes on in the next read
            walk.run(data, self._walk_from)
            self._walk_from = 0
            if walk.trailer > self.max_head_bytes:  # dropped, but httptools buffers a field
                self._fail(HeadersTooLarge(f"trailer section above {self.max_head_bytes} bytes"))
        after = self._next - len(data)
        if after > 0:
            self._skip = after  # the rest of a Content-Length body
        elif self._next >= 0 or not self._in_message:
            self._skip = 0
        else:
            self._skip = -1  # a chunked body goes on

    def next_event(self) -> Event:
        """The next event, or ``NEED_DATA``.  Raises the queued error when reached."""
        if not self._events:
            return NEED_DATA
        event = self._events.popleft()
        if type(event) is Body:
            self._queued -= len(event.data)
        elif type(event) is RequestHead:
            self._queued -= 256
        elif type(event) is _Failure:
            self._events.clear()
            self._queued = 0
            raise event.error
        return event  # type: ignore[return-value]

    def peek_head(self) -> RequestHead | None:
        """The next event if it is a request head (left in place), else None."""
        events = self._events
        if events and type(events[0]) is RequestHead:
            return events[0]
        return None

    def take_request(self) -> tuple[RequestHead, bytes] | None:
        """The next request with all of its body, if it is all here (taken, body joined);
        None (nothing taken) otherwise."""
        events = self._events
        if not events or type(events[0]) is not RequestHead:
            return None
        rest = iter(events)
        head = next(rest)
        parts: list[bytes] = []
        for event in rest:
            if event is END_OF_MESSAGE:
                break
            if type(event) is not Body:
                return None
            parts.append(event.data)
        else:
            return None
        for _ in range(len(parts) + 2):
            events.popleft()
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._queued -= len(body) + 256
        return head, body  # type: ignore[return-value]

    def take_body(self) -> bytes | None:
        """The rest of the current request's body if all of it is here (its
        ``END_OF_MESSAGE`` queued): taken with the end, joined.  None (nothing taken) when
        the body is still arriving or broken."""
        events = self._events
        parts: list[bytes] = []
        for event in events:
            if event is END_OF_MESSAGE:
                break
            if type(event) is not Body:
                return None
            parts.append(event.data)
        else:
            return None
        for _ in range(len(parts) + 1):
            events.popleft()
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._queued -= len(body)
        return body

    def take_end(self) -> bool:
        """Take the ``END_OF_MESSAGE`` if it is next (a body piece and its end in one
        ``receive``)."""
        events = self._events
        if events and events[0] is END_OF_MESSAGE:
            events.popleft()
            return True
        return False

    # -- llhttp callbacks (called from inside feed_data) ----------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._in_head = True
        self._started_this_read = True
        self._head_bytes = 0
        self._url = b""
        self._headers = []
        self._raw_headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url
        if self._started_this_read:  # later reads are counted whole (receive_data)
            self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:  # a trailer field: dropped (module docstring; measured by
            return  # the chunk walk while it is unfinished)
        value = value.strip(b" \t")
        self._raw_headers.append((name, value))
        self._headers.append((name.lower(), value))
        if self._started_this_read:
            self._head_bytes += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._events.append(self._head())
        self._queued += 256

    def on_body(self, body: bytes) -> None:
        self._events.append(Body(body))
        self._queued += len(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        walk = self._walk
        if walk is not None:  # a chunked body: where it ended is where the next request begins
            self._next = walk.run(self._data, self._walk_from)
            self._walk = None
        self._events.append(END_OF_MESSAGE)

    # -- helpers ---------------------------------------------------------------------------

    def _head(self) -> RequestHead:
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise BadRequest(f"HTTP/{version} is not HTTP/1.x")
        target = self._url
        raw_path, _, query = target.partition(b"?")
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest("request target is not ASCII") from None
        if "%" in path:
            path = unquote(path)
        method = parser.get_method()
        # RFC 9112 §3: one space between the parts (module docstring)
        line = b"".join((method, b" ", target, _LINE_END[version]))
        data = self._data
        start = self._next
        if start >= 0 and not self._carry and data.startswith(line, start):
            end = start + len(line)  # the usual case: it begins where the last one ended
            self._cursor = end
            blank = data.find(b"\r\n\r\n", end - 2)  # where the head (no bare LF) ends
            self._next = blank + 4 if blank >= 0 else -1
        else:
            self._place_request_line(line)
        headers = self._headers
        hosts = 0
        host = b""
        size = 0
        keep_alive = version == "1.1"
        expect_continue = False
        content_length: int | None = None
        coding: bytes | None = None  # Transfer-Encoding, every field line joined
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"host":
                hosts += 1
                host = value
            elif name == b"connection":
                if b"close" in _tokens(value):
                    keep_alive = False
            elif name == b"content-length":
                content_length = int(value)  # llhttp checked digits, size and duplicates
            elif name == b"transfer-encoding":
                coding = value if coding is None else coding + b"," + value
            elif name == b"expect" and version == "1.1":
                expect_continue = b"100-continue" in _tokens(value)
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            raise BadRequest("an HTTP/1.1 request needs exactly one Host header")
        if hosts and host != self._host and not valid_host(host):
            raise BadRequest(f"Host {host.decode('latin-1')!r} is not uri-host[:port]")
        chunked = coding is not None and _chunked(coding)
        if chunked and version == "1.0":
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request (faulty framing)")
        if chunked:  # where the next request begins: found at the body's end
            if self._next >= 0:
                self._walk = _ChunkWalk()
                self._walk_from = self._next
            self._next = -1
        elif content_length and self._next >= 0:
            self._next += content_length
        self._host = host  # valid (or absent): the connection's next heads repeat it
        return RequestHead(
            method=method.decode("ascii"),
            target=target,
            path=path,
            query=query,
            http_version=version,
            headers=headers,
            raw_headers=self._raw_headers,
            head_size=size,
            keep_alive=keep_alive,
            expect_continue=expect_continue,
            content_length=None if chunked else content_length,
            chunked=chunked,
        )

    def _place_request_line(self, line: bytes) -> None:
        """Refuse a request line whose parts are not separated by exactly one space (RFC
        9112 §3; llhttp skips a run of them), in the cases ``_head`` does not settle
        itself.  ``line`` (rebuilt with single spaces) must be where the request began
        (module docstring: nothing but empty lines before it), and the head's end found
        after it is where its body begins; should that place be lost (a chunk walk that
        met framing it does not know) the line need only occur after the last one found."""
        if self._carry:  # the head began in an earlier read
            carried = sum(len(part) for part in self._carry)
            buffer = b"".join([*self._carry, self._data])
            start = self._carry_from
            exact = self._carry_exact
            self._carry = []
            if not exact:
                self._next = -1
        else:
            carried = 0
            buffer = self._data
            start = self._next
            exact = start >= 0
            if not exact:
                start = self._cursor
        if exact and buffer.startswith(line, start):
            found = start  # the usual case: the request begins right there
        else:
            found = buffer.find(line, start)
            if found < 0 or (exact and buffer[start:found].strip(b"\r\n")):
                raise BadRequest(
                    "malformed request line: method, target and version need one space"
                )
        end = found + len(line)
        self._cursor = max(0, end - carried)
        if exact:  # the head ends at its first empty line (llhttp accepts no bare LF)
            blank = buffer.find(b"\r\n\r\n", end - 2)
            self._next = blank + 4 - carried if blank >= 0 else -1

    def _upgrade(self, rest: bytes) -> None:
        """The parser paused after an upgrade request: its head (queued last) goes out
        with the remaining bytes in one :class:`Upgrade` event."""
        self._done = True
        events = self._events
        while events and events[-1] is END_OF_MESSAGE:
            events.pop()
        head = events.pop()
        assert type(head) is RequestHead  # llhttp pauses right after the upgrade's head
        self._queued -= 256
        events.append(Upgrade(head, head.raw() + rest))

    def _fail(self, error: GatewayError) -> None:
        self._done = True
        self._events.append(_Failure(error))


_LINE_END = {"1.1": b" HTTP/1.1\r\n", "1.0": b" HTTP/1.0\r\n"}  # versions _head admits

# RFC 3986 §3.2.2: reg-name = *( unreserved / pct-encoded / sub-delims ); IP-literal's
# IPv6address (and IPvFuture) in hex digits, ":" and "." (and "v" plus unreserved / sub-delims)
_REG_NAME = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;="
_IP_LITERAL = _REG_NAME + b":"


def valid_host(value: bytes) -> bool:
    """``value`` is a ``Host`` field value RFC 9112 §3.2 accepts: ``uri-host [":" port]``
    (RFC 3986 §3.2.2, §3.2.3), or empty.  Called once per connection and Host value (the
    fast path) or per routing decision (the ASGI path): a ``bytes.translate`` in C and a
    digit check, no regex.
    Refuses spaces, ``/``, userinfo (``@``), a port that is not digits and non-ASCII."""
    if value[:1] == b"[":
        end = value.find(b"]")
        if end < 2 or value[1:end].translate(None, _IP_LITERAL):
            return False
        rest = value[end + 1 :]
        if not rest:
            return True
        if rest[:1] != b":":
            return False
        port = rest[1:]
    else:
        name, _, port = value.partition(b":")
        if name.translate(None, _REG_NAME):
            return False
    return not port or port.isdigit()


_HEX = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_START, _SIZE, _EXT, _DATA, _LINE, _SKIP, _END, _LOST = range(8)


class _ChunkWalk:
    """Follows the framing of one chunked body, read by read, to find where it ends (after
    its trailer section): where the next pipelined request begins.  llhttp parses the body;
    this only counts, over bytes llhttp has already accepted, so the framing is valid: size
    lines ``hex[;ext]`` CRLF, that many bytes and CRLF, the last chunk ``0``, then trailer
    lines up to an empty line.  A few Python steps per chunk, none per data byte.
    ``trailer`` measures a trailer section still arriving (held to the head limit)."""

    __slots__ = ("left", "size", "state", "trailer")

    def __init__(self) -> None:
        self.state = _START
        self.size = 0
        self.left = 0
        self.trailer = 0  # bytes of an unfinished trailer section walked so far

    def run(self, data: bytes, pos: int) -> int:
        """Walk ``data`` from ``pos``: where the body ends in it, or -1 (not in it)."""
        n = len(data)
        state = self.state
        left = self.left
        size = self.size
        find = data.find
        end = -1
        mark = pos if _LINE <= state < _LOST else -1  # where this run entered the trailer
        while pos < n and state != _LOST:
            if state == _START:  # a size line begins: whole in this read, usually
                lf = find(b"\n", pos)
                if lf < 0:
                    state = _SIZE
                    size = 0
                    continue
                try:
                    size = int(data[pos:lf].partition(b";")[0], 16)  # int() drops the CR
                except ValueError:  # not the framing llhttp accepts: lost (never raise)
                    state = _LOST
                    break
                if size:
                    pos = lf + 3 + size  # past the LF, the data and its CRLF
                    if pos > n:
                        state = _DATA
                        left = pos - n
                else:
                    pos = lf + 1
                    state = _LINE
                    mark = pos
            elif state == _DATA:
                if left > n - pos:
                    left -= n - pos
                    pos = n
                else:
                    pos += left
                    state = _START
            elif state == _SIZE:  # a size line cut by the read, digit by digit
                digit = _HEX.get(data[pos])
                if digit is None:
                    state = _EXT  # ";" or CR: the rest of the size line
                else:
                    size = size * 16 + digit
                    pos += 1
            elif state in (_EXT, _SKIP):
                lf = find(b"\n", pos)
                if lf < 0:
                    pos = n
                    break
                pos = lf + 1
                if state == _SKIP or not size:
                    if state != _SKIP:
                        mark = pos
                    state = _LINE  # a trailer line (or none) starts
                else:
                    state = _DATA
                    left = size + 2  # the data and its CRLF
            elif state == _LINE:
                state = _END if data[pos] == 13 else _SKIP  # CR: the empty line
                pos += 1
            elif state == _END:  # the LF of the empty line
                end = pos + 1
                break
        self.state = state
        self.left = left
        self.size = size
        if mark >= 0 and end < 0 and state != _LOST:
            self.trailer += pos - mark
        return end


def _chunked(coding: bytes) -> bool:
    """Check a ``Transfer-Encoding`` value (True: the body is chunked).  Without ``chunked``
    last the body's length is unknown (RFC 9112 §6.3: 400, as llhttp would refuse it after
    the head); another coding before it is one we do not decode (§6.1: 501, as h11 answers)."""
    if coding.lower() == b"chunked":
        return True
    codings = _tokens(coding)
    if codings[-1] != b"chunked":
        raise BadRequest("Transfer-Encoding without chunked last: the body length is unknown")
    raise UnsupportedTransferCoding(
        f"transfer coding {coding.decode('latin-1')!r}: only chunked is supported"
    )


def _tokens(value: bytes) -> list[bytes]:
    """A comma-separated header value as lower-case tokens (``Connection``, ``Expect``)."""
    return [t.strip(b" \t").lower() for t in value.split(b",")]
