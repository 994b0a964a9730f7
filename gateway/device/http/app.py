"""The HTTP device API, compatible with Murano's (docs/protocol.md §2, §4, §5, §12, §13).

One application, two transports: the HTTP/1.1 fast path (``gateway.device.http.h1``) calls
:meth:`DeviceApp.handle` directly, and hypercorn (HTTP/2, upgrades, or the fast path
switched off) calls :meth:`DeviceApp.__call__`, the ASGI adapter, with an
:class:`~gateway.device.http.asgi.HttpConnection` (the TLS/SNI facts of the connection) in
``scope["state"]``.  Both give the same answers byte for byte
(``tests/conformance/http/test_05_same_answers.py``).  Per request:

1. **Routing** (§1, §13 item 16): on TLS the connector is the one SNI selected, and the
   ``Host`` header (port stripped) must name the same connector FQDN, else ``421``.  On the
   dev plain port the ``Host`` must be ``<cid>.devmode-m2.<base>`` of a connector with
   ``protocol.devmode``, else ``404``.
2. **Authentication** (§2.1): ``X-Exosite-CIK``, ``Authorization: token``, ``Authorization:
   Basic`` with an empty user (token) or ``identity:password``, or the TLS client
   certificate (whose first use provisions the device).  ``401`` / ``403`` (locked).
3. The operation: write / read / hybrid / long-poll (``/onep:v1/stack/alias``), record,
   activation, content (``gateway.device.http.content``), ``/timestamp``, ``/ip``.

Limits (docs/decisions.md "Limits", ``services.limits``): an address backed off after
failed authentications or activations is refused ``429`` with ``Retry-After`` before any
lookup; a device's writes above its publish rate (requests or bytes per second) are
refused ``429`` with ``Retry-After``, nothing stored.

Pipelined plain writes can be staged (:meth:`DeviceApp.stage_write`) and committed together
(:meth:`DeviceApp.commit_writes`): one store submission for the burst, each answered in
order after the commit.

Error handling: operations raise :class:`~gateway.errors.GatewayError`; :meth:`DeviceApp.refuse`
is the one place that turns them into a status and a short text body, and every refusal
writes one debug ``LogRecord`` (ip, identity when known, reason).  Nothing is changed by a
refused request: values are validated before anything is submitted, and a write is
answered ``204`` only after its transaction committed (``await ticket.wait()``).

Metrics (``services.metrics``): every request in and every answer out, values written
(after their commit) per connector, and refusals by reason — dict increments with label
keys computed once per module or per connector.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import ipaddress
import logging
import math
import re
import time

import trio

from gateway.clock import now_us
from gateway.device.http import content as device_content
from gateway.device.http.asgi import (
    FORM_CT,
    STATE_KEY,
    TEXT_CT,
    ClientGone,
    HttpConnection,
    Message,
    Receive,
    Request,
    Scope,
    Send,
    check_declared,
    read_body,
    respond,
    respond_empty,
    status_of,
    timed_receive,
)
from gateway.device.http.assembler import valid_host
from gateway.device.http.forms import encode_component, encode_pairs, parse_form, parse_names
from gateway.errors import (
    BadRequest,
    ConnAckCode,
    GatewayError,
    HeadersTooLarge,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    Refused,
    RequestTimeout,
    StorageFull,
    TooLarge,
    debug_reason,
)
from gateway.metrics import Labels, packet_key, write_key
from gateway.model import LogRecord, Protocol
from gateway.services.bundle import Services
from gateway.services.devices import DeviceAuth
from gateway.store.api import DataIn, Op, PointWrite, Ticket

__all__ = ["ALIAS_PATH", "BODY_TIMEOUT_S", "MAX_POLL_MS", "DeviceApp", "StagedWrite"]

log = logging.getLogger(__name__)

ALIAS_PATH = "/onep:v1/stack/alias"
RECORD_PATH = "/onep:v1/stack/record"
LEGACY_RECORD_PREFIX = ALIAS_PATH + "/"  # One Platform: POST /onep:v1/stack/alias/<alias>
MAX_POLL_MS = 300_000  # Request-Timeout is clamped here (§12 item 16)
FUTURE_SLACK_US = 500_000  # record points may be this far ahead of our clock (§13 item 10)
BODY_OVERHEAD = 64 * 1024  # bytes of names/keys allowed on top of the value budget
MAX_ALIAS_LENGTH = 256
MAX_HEADER_BYTES = 16 * 1024  # the sum of header names and values (431 above)
BODY_TIMEOUT_S = 30.0  # a request body must make progress this often (408), docs/decisions.md
DROP_BODY_CAP = 256 * 1024  # unread body bytes dropped before a refusal keeps the connection
_DIGITS = re.compile(r"[0-9]{1,20}")
_METRICS_PROTOCOL = "http"  # the metrics label (the events' protocol is Protocol.HTTP's)
_REQUESTS_IN = packet_key(_METRICS_PROTOCOL, "in")
_ANSWERS_OUT = packet_key(_METRICS_PROTOCOL, "out")


def not_authenticated(message: str) -> Refused:
    return Refused(
        message,
        reason="not_authenticated",
        http_status=401,
        connack=ConnAckCode.BAD_USERNAME_OR_PASSWORD,
    )


def http_date(ts_us: int) -> str:
    return email.utils.formatdate(ts_us / 1_000_000, usegmt=True)


def parse_since(raw: str | None) -> int:
    """``If-Modified-Since`` (unix seconds or an HTTP-date) in µs; 0 when absent or
    unreadable (then every pending value qualifies, §12 item 17)."""
    if not raw:
        return 0
    try:
        return max(0, int(float(raw) * 1_000_000))
    except (ValueError, OverflowError):
        pass
    try:
        return max(0, int(email.utils.parsedate_to_datetime(raw).timestamp() * 1_000_000))
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0


def parse_record_ts(key: str) -> int:
    """A record key (unix seconds, integer or fractional) in µs, exactly: ``12.3456789``
    → 12_345_678 µs (digits past µs are dropped), so a replayed point matches its original
    bit for bit (§12 item 14)."""
    whole, _, frac = key.partition(".")
    if _DIGITS.fullmatch(whole) and (not frac or _DIGITS.fullmatch(frac)):
        return int(whole) * 1_000_000 + int((frac + "000000")[:6])
    raise BadRequest(f"record timestamp {key!r} is not unix seconds")


class _TrackedBody:
    """The request's ``receive``, remembering whether the body was read to its end.

    A refusal often comes before the body is read (a wrong token, an unknown alias on the
    path).  Answering then and closing silently breaks a client that reuses the connection
    (it sees the connection end instead of its next answer), and keeping the connection
    with the body unread would parse the body as the next request.  So before a refusal
    the rest of a small body is read and dropped (``drop``), under the body deadline, and
    the connection carries on as h11 does; a larger rest is not read for nothing: the
    refusal says ``Connection: close`` instead (docs/decisions.md "HTTP device API")."""

    __slots__ = ("_receive", "_req", "done")

    def __init__(self, req: Request, receive: Receive) -> None:
        self._receive = receive
        self._req = req
        length = req.content_length()
        self.done = not length and b"transfer-encoding" not in req.headers

    async def __call__(self) -> Message:
        msg = await self._receive()
        if msg["type"] != "http.request" or not msg.get("more_body", False):
            self.done = True
        return msg

    async def drop(self, cap: int) -> bool:
        """Read and drop the rest of the body, at most ``cap`` bytes of it.  True when the
        body ended (the connection can carry the next request)."""
        if self.done:
            return True
        length = self._req.content_length()
        if length is not None and length > cap:
            return False
        dropped = 0
        while dropped <= cap:
            try:
                msg = await self._receive()
            except GatewayError:  # the body stalled (408 territory): end the connection
                return False
            if msg["type"] != "http.request":  # the client went away
                self.done = True
                return False
            dropped += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                self.done = True
                return True
        return False


class StagedWrite:
    """A plain write that passed routing, authentication and validation, waiting for the
    commit it shares with its neighbours (:meth:`DeviceApp.commit_writes`)."""

    __slots__ = ("op", "req", "send")

    def __init__(self, req: Request, op: DataIn, send: Send) -> None:
        self.req = req
        self.op = op
        self.send = send


class _Round:
    """The staged writes of one Trio scheduling round, submitted together."""

    __slots__ = ("ops", "submitted", "ticket")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.submitted = trio.Event()
        self.ticket: Ticket | None = None


class DeviceApp:
    """The device API (one per gateway): :meth:`handle` for any transport, ``__call__``
    for ASGI.  ``body_timeout_s`` is the body progress deadline of the ASGI path (the fast
    path applies its own in its ``receive``)."""

    def __init__(self, services: Services, *, body_timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.services = services
        self.registry = services.registry
        self.metrics = services.metrics
        self.body_timeout_s = body_timeout_s
        self._write_keys: dict[str, Labels] = {}
        self._round: _Round | None = None  # writes staged this scheduling round

    # -- entry -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI: hypercorn serves HTTP/2, upgrades and (fast path off) HTTP/1.1 this way."""
        if scope["type"] != "http":
            return
        conn: HttpConnection = scope["state"][STATE_KEY]
        req = Request.from_scope(scope, conn)
        version = scope["http_version"]
        if version[0] == "1" and _bad_framing(req.headers, version):
            # answer and close, as the fast path's parser does (same bytes)
            await send(_FRAMING_400)
            await send(_FRAMING_400_BODY)
            return
        await self.handle(req, timed_receive(receive, self.body_timeout_s), send)

    async def handle(self, req: Request, receive: Receive, send: Send) -> None:
        """Answer one request (any transport).  ``receive``/``send`` speak ASGI messages;
        ``receive`` raises ``RequestTimeout`` when the body stalls.  Returns without an
        answer only when the client went away (``ClientGone``)."""
        ident: list[str | None] = [None]
        cid: str | None = req.conn.info.connector_id
        packets = self.metrics.packets
        packets[_REQUESTS_IN] += 1
        body = _TrackedBody(req, receive)
        try:
            _check_head(req)
            cid = self.route(req)
            await self.dispatch(req, cid, body, send, ident)
        except GatewayError as exc:
            whole = isinstance(exc, RequestTimeout) or await body.drop(DROP_BODY_CAP)
            await self.refuse(req, cid, ident[0], exc, send, close=not whole)
        except ClientGone:
            return
        packets[_ANSWERS_OUT] += 1

    # -- pipelined plain writes: one submission per burst --------------------------------------

    async def stage_write(self, req: Request, body: bytes, send: Send) -> StagedWrite | None:
        """Route, authenticate and validate a plain write (``POST`` on the alias path, no
        query, ``body`` complete) without submitting it.  Returns the staged write, or None
        when it was refused (the refusal went to ``send``).  Same checks and answers as
        :meth:`handle` gives the request alone."""
        ident: str | None = None
        cid: str | None = req.conn.info.connector_id
        self.metrics.packets[_REQUESTS_IN] += 1
        try:
            _check_head(req)
            cid = self.route(req)
            auth = await self.authenticate(req, cid)
            ident = auth.identity
            max_payload = self._limits(cid)
            cap = 3 * max_payload + BODY_OVERHEAD
            check_declared(req.content_length(), cap)
            if len(body) > cap:
                raise TooLarge(f"request body above the limit of {cap} bytes")
            pairs = parse_form(body)
            if not pairs:
                raise BadRequest("a write needs a body <alias>=<value>[&...]")
            self.services.limits.http_publish(cid, auth.device_id, len(body))
            ts = now_us()
            points = self._write_points(cid, pairs, max_payload, ts)
        except GatewayError as exc:
            await self.refuse(req, cid, ident, exc, send)
            self.metrics.packets[_ANSWERS_OUT] += 1
            return None
        op = DataIn(auth.connector_id, auth.device_id, auth.identity, points, req.conn.meta, ts)
        return StagedWrite(req, op, send)

    async def commit_writes(self, staged: list[StagedWrite]) -> None:
        """Submit the staged writes and answer each ``204`` after the commit, in order.

        The writes staged by every connection in the same Trio scheduling round (the
        connections a burst of socket events woke) go to the store as ONE submission: the
        first caller of the round waits one scheduling step for the others, then submits
        for all.  If that submission fails, each write is submitted alone so every request
        gets its own outcome (docs/architecture.md principle 2: no 204 without a commit,
        no refusal of a write that was not at fault) — except when the disk is full: then
        every write of the round is answered ``507`` at once."""
        if not staged:
            return
        store = self.services.store
        current = self._round
        if current is None:
            current = self._round = _Round()
            current.ops.extend(s.op for s in staged)
            # not cancellable: the round's other writers wait for this submission
            await trio.lowlevel.cancel_shielded_checkpoint()
            self._round = None
            current.ticket = store.submit(current.ops)
            current.submitted.set()
        else:
            current.ops.extend(s.op for s in staged)
            await current.submitted.wait()
        assert current.ticket is not None
        try:
            await current.ticket.wait()
        except StorageFull as exc:  # no write is at fault, and alone none would fit either
            for s in staged:
                await self.refuse(s.req, s.op.connector_id, s.op.identity, exc, s.send)
                self.metrics.packets[_ANSWERS_OUT] += 1
            return
        except Exception:  # one write at fault (or an unrelated one of the round): alone now
            for s in staged:
                try:
                    await store.submit([s.op]).wait()
                except GatewayError as exc:
                    await self.refuse(s.req, s.op.connector_id, s.op.identity, exc, s.send)
                else:
                    await self._written(s)
                self.metrics.packets[_ANSWERS_OUT] += 1
            return
        for s in staged:
            await self._written(s)
            self.metrics.packets[_ANSWERS_OUT] += 1

    async def _written(self, s: StagedWrite) -> None:
        self._count_writes(s.op.connector_id, len(s.op.points))
        await respond_empty(s.send, 204)

    async def dispatch(
        self, req: Request, cid: str, receive: Receive, send: Send, ident: list[str | None]
    ) -> None:
        path, method = req.path, req.method
        if path == ALIAS_PATH:
            if method == "POST":
                auth = await self.authenticate(req, cid)
                ident[0] = auth.identity
                await self.write(req, cid, auth, receive, send)
            elif method == "GET":
                auth = await self.authenticate(req, cid)
                ident[0] = auth.identity
                await self.read(req, cid, auth, receive, send)
            else:
                raise _method_not_allowed(method, path)
        elif path == RECORD_PATH or path.startswith(LEGACY_RECORD_PREFIX):
            if method != "POST":
                raise _method_not_allowed(method, path)
            auth = await self.authenticate(req, cid)
            ident[0] = auth.identity
            alias = None if path == RECORD_PATH else path[len(LEGACY_RECORD_PREFIX) :]
            await self.record(req, cid, auth, alias, receive, send)
        elif path == "/provision/activate":
            if method != "POST":
                raise _method_not_allowed(method, path)
            await self.activate(req, cid, receive, send, ident)
        elif path == "/provision/download":
            if method not in ("GET", "HEAD"):
                raise _method_not_allowed(method, path)
            auth = await self.authenticate(req, cid)
            ident[0] = auth.identity
            await device_content.download(self.services, req, cid, auth, send)
        elif path == "/provision/upload":
            if method not in ("POST", "PUT"):
                raise _method_not_allowed(method, path)
            auth = await self.authenticate(req, cid)
            ident[0] = auth.identity
            await device_content.upload(self.services, req, cid, auth, receive, send)
        elif path == "/timestamp" and method in ("GET", "HEAD"):
            await respond(send, 200, b"%d" % int(time.time()), (TEXT_CT,))
        elif path == "/ip" and method in ("GET", "HEAD"):
            await self.ip(req, send)
        else:
            raise NotFound(f"no such endpoint: {method} {path}")

    async def refuse(
        self,
        req: Request,
        cid: str | None,
        identity: str | None,
        exc: GatewayError,
        send: Send,
        *,
        close: bool = False,
    ) -> None:
        """The one place an error becomes an HTTP answer, plus its debug-log record.
        ``close``: the request's body was not read to its end, so the connection cannot
        carry another request; the answer says ``Connection: close`` (RFC 9112 §9.6)."""
        status = status_of(exc)
        reason = debug_reason(exc)
        self.metrics.refuse(_METRICS_PROTOCOL, reason)
        info = req.conn.info
        self.services.debug(
            LogRecord(
                kind="debug",
                timestamp=now_us(),
                connector_id=cid,
                ip=info.peer_ip or None,
                identity=identity,
                connection_id=info.connection_id,
                protocol=Protocol.HTTP.value,
                event="http_refused",
                reason=reason,
                detail=f"{req.method} {req.path} -> {status}: {exc.message}",
            )
        )
        headers: tuple[tuple[bytes, bytes], ...] = (TEXT_CT,)
        if status == 401:
            headers = (TEXT_CT, (b"www-authenticate", b'Token realm="device"'))
        elif isinstance(exc, MethodNotAllowed):
            headers = (TEXT_CT, (b"allow", exc.allow.encode("ascii")))
        elif isinstance(exc, RequestTimeout):
            headers = (TEXT_CT, _CLOSE)  # the rest of the body may still come: end here
        elif isinstance(exc, RateLimited):
            retry = b"%d" % max(1, math.ceil(exc.retry_after_s))
            headers = (TEXT_CT, (b"retry-after", retry))
        if close and _CLOSE not in headers:
            headers = (*headers, _CLOSE)
        await respond(send, status, exc.message.encode("utf-8", "replace"), headers)

    # -- routing and authentication ----------------------------------------------------------

    def route(self, req: Request) -> str:
        """The connector this request is for (see the module docstring); cached per
        connection until the Host header or the registry changes."""
        conn = req.conn
        host = req.headers.get(b"host")
        cached = conn.route
        version = self.registry.version
        if cached is not None and cached[0] == host and cached[1] == version:
            return cached[2]
        if host is not None and not valid_host(host):
            # RFC 9112 §3.2 (the HTTP/1.x paths refuse it before: HTTP/2's :authority)
            raise BadRequest(f"Host {host!r} is not a host[:port]")
        sni_cid = conn.info.connector_id
        found = None if host is None else self.registry.connector_for_host(host.decode("latin-1"))
        if sni_cid is not None:
            if host is None and self.registry.get(sni_cid) is not None:
                cid = sni_cid  # HTTP/1.0 without Host: SNI alone decides
            elif found is None or found[1] or found[0].id != sni_cid:
                raise Refused(
                    f"Host {host!r} does not name the connector of this TLS connection",
                    reason="host_mismatch",
                    http_status=421,
                )
            else:
                cid = sni_cid
        else:
            if found is None or not found[1] or not found[0].settings.protocol.devmode:
                raise Refused(
                    f"Host {host!r} is not the devmode host of a connector in dev mode",
                    reason="unknown_connector",
                    http_status=404,
                )
            cid = found[0].id
        conn.route = (host, version, cid)
        return cid

    async def authenticate(self, req: Request, cid: str) -> DeviceAuth:
        """The request's device (see the module docstring); refused at once while the
        address is backed off, and a failure counts against the address."""
        limits = self.services.limits
        ip = req.conn.info.peer_ip or None
        limits.check_auth(cid, ip)
        try:
            return await self._authenticate(req, cid)
        except Refused as exc:
            limits.auth_failed(cid, ip, exc.reason)
            raise

    async def _authenticate(self, req: Request, cid: str) -> DeviceAuth:
        devices = self.services.devices
        token = req.header(b"x-exosite-cik")
        if token is not None:
            return await devices.authenticate_token(cid, token)
        authz = req.header(b"authorization")
        if authz is not None:
            scheme, _, cred = authz.partition(" ")
            scheme = scheme.lower()
            cred = cred.strip()
            if scheme == "token":
                return await devices.authenticate_token(cid, cred)
            if scheme == "basic":
                try:
                    user, sep, secret = (
                        base64.b64decode(cred, validate=True).decode("utf-8").partition(":")
                    )
                except (binascii.Error, ValueError):
                    raise not_authenticated("malformed Basic credentials") from None
                if not sep:
                    raise not_authenticated("malformed Basic credentials")
                if not user:
                    return await devices.authenticate_token(cid, secret)
                if not req.conn.info.tls:
                    raise not_authenticated("dev mode accepts tokens only")
                return await devices.authenticate_password(cid, user, secret)
            raise not_authenticated(f"unsupported Authorization scheme {scheme!r}")
        claim = req.conn.info.cert
        if claim is not None:
            return await devices.authenticate_certificate(
                cid, claim, ip=req.conn.info.peer_ip or None, meta=req.conn.meta
            )
        raise not_authenticated(
            "no credentials (X-Exosite-CIK, Authorization or a client certificate)"
        )

    # -- write, read, hybrid, long-poll ------------------------------------------------------

    def _limits(self, cid: str) -> int:
        connector = self.registry.get(cid)
        if connector is None:
            raise NotFound(f"connector {cid!r} not found")
        return connector.settings.limits.max_payload

    async def _read_form(
        self, req: Request, cid: str, receive: Receive
    ) -> tuple[list[tuple[str, str]], int]:
        max_payload = self._limits(cid)
        # A fully percent-encoded value takes three bytes per byte.
        body = await read_body(
            receive, cap=3 * max_payload + BODY_OVERHEAD, declared=req.content_length()
        )
        return parse_form(body), max_payload

    async def write(
        self, req: Request, cid: str, auth: DeviceAuth, receive: Receive, send: Send
    ) -> None:
        """Write (§2.3) and hybrid write/read (§2.5): one server timestamp for every alias,
        ``204`` after commit (or the read's answer)."""
        pairs, max_payload = await self._read_form(req, cid, receive)
        if pairs:
            self.services.limits.http_publish(cid, auth.device_id, _form_bytes(pairs))
            ts = now_us()
            points = self._write_points(cid, pairs, max_payload, ts)
            state = self.services.state
            await state.submit_write(auth, points, req.conn.meta, timestamp=ts).wait()
            self._count_writes(cid, len(points))
        elif not req.query:
            raise BadRequest("a write needs a body <alias>=<value>[&...]")
        if req.query:
            await self._answer_read(req, auth, parse_names(req.query), send)
        else:
            await respond_empty(send, 204)

    def _write_points(
        self, cid: str, pairs: list[tuple[str, str]], max_payload: int, ts: int
    ) -> list[PointWrite]:
        """The checked points of a write (§2.3): one server timestamp for every alias."""
        values = []
        for alias, value in pairs:
            _check_alias(alias)
            _check_size(alias, value, max_payload)
            values.append((alias, value, ts))
        return self.services.state.points_for(cid, values)

    async def read(
        self, req: Request, cid: str, auth: DeviceAuth, receive: Receive, send: Send
    ) -> None:
        """Plain read (§2.4) or, with ``Request-Timeout``, long-poll (§2.6)."""
        aliases = parse_names(req.query)
        if not aliases:
            raise BadRequest("a read needs the aliases in the query: ?<alias>[&<alias>...]")
        timeout = req.header(b"request-timeout")
        if timeout is None:
            await self._answer_read(req, auth, aliases, send)
        else:
            timeout_ms = _parse_timeout_ms(timeout)
            await self.long_poll(req, cid, auth, aliases, timeout_ms, receive, send)

    async def _answer_read(
        self, req: Request, auth: DeviceAuth, aliases: list[str], send: Send
    ) -> None:
        values = await self.services.state.read_for_device(auth.device_id, aliases)
        if values:
            await respond(send, 200, encode_pairs(values), (FORM_CT,))
        else:
            await respond_empty(send, 204)

    async def long_poll(
        self,
        req: Request,
        cid: str,
        auth: DeviceAuth,
        aliases: list[str],
        timeout_ms: int,
        receive: Receive,
        send: Send,
    ) -> None:
        """Answer the oldest pending value of ``aliases`` (one alias only: §12 item 15),
        waiting up to ``timeout_ms`` for one; ``304`` at the end.

        Waiting costs the request's task and a watcher task: the wake-up is the device's
        shared change event (``ControlHub.change_event``), and the wait ends at once when
        the client goes away — the watcher sees ``http.disconnect`` from ``receive`` (a
        closed HTTP/1.1 connection, an HTTP/2 ``RST_STREAM``), and the transport cancels
        the connection's polls when its read side ends (``HttpConnection.close``).
        """
        resources = self.registry.resources(cid)
        defined = [a for a in aliases if a in resources]
        if not defined:
            raise NotFound("none of the aliases is a defined resource")
        since = parse_since(req.header(b"if-modified-since"))
        state = self.services.state
        control = self.services.control
        conn = req.conn
        found = None
        kicked: Refused | None = None
        gone: list[bool] = []
        with trio.CancelScope(deadline=trio.current_time() + timeout_ms / 1000) as scope:
            conn.add_poll(scope)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_cancel_on_disconnect, receive, scope, gone)
                    while True:
                        # before the read: no gap
                        changed = control.change_event((auth.connector_id, auth.identity))
                        pending = await state.pending(auth.device_id, defined, since)
                        if pending:
                            found = pending[0]
                            break
                        try:
                            await changed.wait()
                        except Refused as exc:  # a kick (lock, delete, revoke)
                            kicked = exc  # raised outside the nursery: no exception group
                            break
                    nursery.cancel_scope.cancel()
            finally:
                conn.discard_poll(scope)
        if kicked is not None:
            raise kicked
        if found is None:
            if conn.closed or gone:
                raise ClientGone
            await respond_empty(send, 304)
            return
        body = f"{encode_component(found.alias)}={encode_component(found.value)}"
        await respond(
            send,
            200,
            body.encode("ascii"),
            (FORM_CT, (b"last-modified", http_date(found.timestamp).encode())),
        )

    # -- record ------------------------------------------------------------------------------

    async def record(
        self,
        req: Request,
        cid: str,
        auth: DeviceAuth,
        alias: str | None,
        receive: Receive,
        send: Send,
    ) -> None:
        """Record (§2.7): ``alias=a&<ts>=<v>&...&alias=b&...``, device timestamps in unix
        seconds.  Every point is stored, exact replays once; always ``204`` (§12 item 14)."""
        pairs, max_payload = await self._read_form(req, cid, receive)
        now = now_us()
        latest = now + FUTURE_SLACK_US
        values = []
        for key, value in pairs:
            if key == "alias":
                _check_alias(value)
                alias = value
                continue
            if alias is None:
                raise BadRequest("a record body starts with alias=<alias>")
            ts = parse_record_ts(key)
            if ts > latest:
                raise BadRequest(f"record timestamp {key} is in the future")
            _check_size(alias, value, max_payload)
            values.append((alias, value, ts))
        if not values:
            raise BadRequest("a record needs at least one <timestamp>=<value> point")
        self.services.limits.http_publish(cid, auth.device_id, _form_bytes(pairs))
        state = self.services.state
        points = state.points_for(cid, values, replay_check=True)
        await state.submit_write(auth, points, req.conn.meta, timestamp=now).wait()
        self._count_writes(cid, len(points))
        await respond_empty(send, 204)

    def _count_writes(self, cid: str, n: int) -> None:
        key = self._write_keys.get(cid)
        if key is None:
            key = self._write_keys[cid] = write_key(_METRICS_PROTOCOL, cid)
        self.metrics.writes[key] += n

    # -- activation, ip ----------------------------------------------------------------------

    async def activate(
        self, req: Request, cid: str, receive: Receive, send: Send, ident: list[str | None]
    ) -> None:
        """Provision (§2.2, §12 items 10-12, 22): ``id=``, ``sn=`` or ``vendor=&model=&sn=``;
        token mode answers the 40-hex token, password mode (``&password=``) ``204``."""
        body = await read_body(receive, cap=BODY_OVERHEAD, declared=req.content_length())
        form = dict(parse_form(body))
        identity = form.get("id") or form.get("sn")
        if not identity:
            raise BadRequest("activation needs id=<identity> (or sn=<identity>)")
        ident[0] = identity
        conn = req.conn
        ip = conn.info.peer_ip or None
        limits = self.services.limits
        limits.check_activation(cid, ip)
        try:
            token = await self.services.devices.activate(
                cid, identity, ip=ip, meta=conn.meta, password=form.get("password")
            )
        except GatewayError as exc:
            if exc.http_status < 500:  # the device's fault, not the disk's
                limits.activation_failed(
                    cid, ip, exc.reason if isinstance(exc, Refused) else exc.code
                )
            raise
        if token is None:
            await respond_empty(send, 204)
        else:
            await respond(send, 200, token.encode("ascii"), (TEXT_CT,))

    async def ip(self, req: Request, send: Send) -> None:
        """Legacy ``/ip`` (§2.9): the address the device connected to and its port as
        decimal bytes, the address's then the port's (six for IPv4, eighteen for IPv6:
        docs/decisions.md "Addresses and the PROXY protocol")."""
        server = req.conn.server
        try:
            addr = ipaddress.ip_address(server[0]) if server else None
        except ValueError:
            addr = None
        if server is None or addr is None:
            raise NotFound("no IP server address for this connection")
        port = server[1]
        text = ",".join(str(b) for b in (*addr.packed, port >> 8, port & 0xFF))
        await respond(send, 200, text.encode("ascii"), (TEXT_CT,))


def _form_bytes(pairs: list[tuple[str, str]]) -> int:
    """What a write costs of the device's byte budget: its names and values."""
    return sum(len(k) + len(v) for k, v in pairs)


def _check_alias(alias: str) -> None:
    if not alias or len(alias) > MAX_ALIAS_LENGTH:
        raise BadRequest(f"alias must be 1-{MAX_ALIAS_LENGTH} characters")


def _check_size(alias: str, value: str, max_payload: int) -> None:
    # len(str) <= len(utf-8 bytes) <= 4 * len(str): encode only when it could matter
    if len(value) * 4 > max_payload and len(value.encode("utf-8")) > max_payload:
        raise TooLarge(f"value of {alias!r} is above the limit of {max_payload} bytes")


def _check_head(req: Request) -> None:
    if req.head_size > MAX_HEADER_BYTES:
        # the transports cap heads they buffer across reads; this catches one-read heads
        raise HeadersTooLarge(f"request headers above {MAX_HEADER_BYTES} bytes")


async def _cancel_on_disconnect(
    receive: Receive, scope: trio.CancelScope, gone: list[bool]
) -> None:
    """Cancel ``scope`` when ``receive`` reports ``http.disconnect`` (the request body is
    read and dropped on the way: a long-poll has none to speak of)."""
    while True:
        msg: Message = await receive()
        if msg["type"] == "http.disconnect":
            gone.append(True)
            scope.cancel()
            return
        if msg["type"] != "http.request":
            return


def _parse_timeout_ms(raw: str) -> int:
    try:
        ms = int(float(raw))
    except (ValueError, OverflowError):
        raise BadRequest(f"Request-Timeout {raw!r} is not milliseconds") from None
    return min(max(ms, 0), MAX_POLL_MS)


_ALLOW = {
    ALIAS_PATH: "GET, POST",
    "/provision/download": "GET, HEAD",
    "/provision/upload": "POST, PUT",
}
_CLOSE = (b"connection", b"close")
# What the fast path's parser answers to malformed framing (hypercorn's error shape)
_FRAMING_400: Message = {
    "type": "http.response.start",
    "status": 400,
    "headers": [(b"content-length", b"0"), _CLOSE],
}
_FRAMING_400_BODY: Message = {"type": "http.response.body", "body": b"", "more_body": False}


def _method_not_allowed(method: str, path: str) -> GatewayError:
    return MethodNotAllowed(f"{method} is not allowed on {path}", allow=_ALLOW.get(path, "POST"))


def _bad_framing(headers: dict[bytes, bytes], version: str) -> bool:
    """What h11 lets through that the fast path's assembler refuses with a framing 400
    (``gateway/device/http/assembler.py``), so hypercorn's HTTP/1.x answers the same:
    ``Content-Length`` with ``Transfer-Encoding`` (a request smuggling shape, RFC 9112
    §6.1), ``Transfer-Encoding`` in HTTP/1.0 (faulty framing, §6.1) and a ``Host`` that is
    not ``uri-host[:port]`` (§3.2).  h11 itself answers ``gzip, chunked`` (501) and a
    request line with two spaces (400)."""
    if b"transfer-encoding" in headers and (b"content-length" in headers or version == "1.0"):
        return True
    host = headers.get(b"host")
    return host is not None and not valid_host(host)
