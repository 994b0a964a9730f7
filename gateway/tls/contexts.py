"""Server-side SSL contexts: SNI picks the connector, ALPN picks the protocol.

How one handshake is served (OpenSSL calls back into us twice, synchronously):

1. Every connection starts on the *dispatch* context, which has **no certificate**.  Its
   servername callback looks the SNI up in the injected :class:`ConnectorDirectory`.  On a
   hit it switches the connection to that connector's context (its own certificate, or the
   gateway's wildcard one, and its TLS policy's cipher list).  On a miss (unknown name, or
   no SNI at all) it records the reason and leaves the connection where it is: a server
   without a certificate cannot complete a handshake, so OpenSSL aborts it with a
   ``handshake_failure`` alert.  That is exactly what Murano's clients see for a deleted
   connector (docs/protocol.md §1), with no exception thrown through C (pyOpenSSL would
   print it to stderr).
2. The ALPN callback picks ``mqtt``, ``h2`` or ``http/1.1`` by server preference among what
   the client offered, limited to what the listener serves (the MQTT-only port only ``mqtt``).
   No overlap is not an error: the connection continues without ALPN and the front door
   sniffs the first byte.

TLS policies (:mod:`gateway.tls.policy`) meet OpenSSL's order of work.  The protocol
version is chosen *before* the servername callback runs, from the dispatch context's
limits, so the dispatch context admits every version some policy allows (TLS 1.0 to 1.3)
and the callback refuses a connection whose version is below its connector's minimum (it
stays without a certificate and fails as above; the reason is ``tls_version``).  Since the
server picks the highest version both sides speak, that refusal is the same as a minimum
in the context.  The cipher suite is chosen *after* the callback, from the context switched
to, so each connector context carries its policy's list.  Options, though, stay those of
the context the connection was created on: server cipher order (and ChaCha20 for clients
that prefer it) is set on every context, the dispatch one included.

Client certificates are *requested* on every handshake and *accepted* whatever they are
(the verify callback returns True); :mod:`gateway.tls.identity` judges them afterwards
against the connector's CA, which therefore is not part of any SSL context and can change
at any time.  The verify mode is copied into the connection when it is created, which is why
it lives on the dispatch context (OpenSSL does not take it from the context switched to).

Contexts are cached per connector, keyed by the certificate and policy they serve; the
directory is asked on every handshake, so a replaced certificate or policy (or a
``reload_server_cert()`` for the wildcard) takes effect on the next handshake while live
connections keep the context they were created with: swapping certificates drops nobody.
Session resumption is off: every handshake is full, which keeps the per-connector switch
and the certificate policy simple (a resumed session would skip both).
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import typing
from collections.abc import Sequence
from pathlib import Path

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from OpenSSL import SSL

from gateway.model import Transport
from gateway.tls.pki import CertificateInfo, certificate_info
from gateway.tls.policy import CIPHERS_DEFAULT, CIPHERS_TLS13, DefaultPolicy, TlsPolicy

__all__ = [
    "ALPN_H2",
    "ALPN_HTTP11",
    "ALPN_MQTT",
    "CIPHERS_TLS12",
    "REASON_NO_SNI",
    "REASON_TLS_VERSION",
    "REASON_UNKNOWN_CONNECTOR",
    "ConnectorDirectory",
    "ConnectorTLS",
    "HandshakeState",
    "ServerContexts",
    "check_server_credentials",
]

logger = logging.getLogger(__name__)

ALPN_MQTT = b"mqtt"
ALPN_H2 = b"h2"
ALPN_HTTP11 = b"http/1.1"

# The default policy's TLS 1.2 suites (gateway/tls/policy.py has all policies).
CIPHERS_TLS12 = CIPHERS_DEFAULT.encode("ascii")
_SESSION_ID_CONTEXT = b"iot-gateway"
_MAX_CACHED_CONTEXTS = 4096  # connectors with a live context; oldest evicted beyond this
# SSL_OP_PRIORITIZE_CHACHA (OpenSSL 1.1.1+; pyOpenSSL has no name for it): with server
# order, a client that lists ChaCha20-Poly1305 first gets it (devices without AES hardware).
_OP_PRIORITIZE_CHACHA = 1 << 21
# The dispatch context only chooses the protocol version (policies are enforced after SNI):
# it admits TLS 1.0, which needs security level 0 on OpenSSL 3+ (gateway/tls/policy.py).
_DISPATCH_CIPHERS = (CIPHERS_DEFAULT + ":@SECLEVEL=0").encode("ascii")

# Server preference among the protocols a listener serves.
_ALPN_BY_TRANSPORT: dict[Transport, tuple[bytes, ...]] = {
    Transport.TLS: (ALPN_MQTT, ALPN_H2, ALPN_HTTP11),
    Transport.MQTT_TLS: (ALPN_MQTT,),
}

REASON_NO_SNI = "no_sni"
REASON_UNKNOWN_CONNECTOR = "unknown_connector"
REASON_TLS_VERSION = "tls_version"  # below the connector policy's minimum version


class ConnectorTLS(msgspec.Struct, frozen=True):
    """A connector's TLS facts as the directory knows them right now."""

    connector_id: str
    client_ca_pem: str | None  # when set: client certs must chain to it and be in validity
    server_cert_pem: str | None  # connector's own server certificate (+chain) or None
    server_key_pem: str | None
    devmode: bool
    policy: TlsPolicy = msgspec.field(default_factory=DefaultPolicy)


class ConnectorDirectory(typing.Protocol):
    """Connector lookup, injected (implemented over the store).  Called from inside the TLS
    handshake, so it must be synchronous and fast (an in-memory map)."""

    def tls_for_server_name(self, server_name: str) -> ConnectorTLS | None: ...

    def tls_for_connector(self, connector_id: str) -> ConnectorTLS | None: ...


class HandshakeState:
    """Per-connection scratch the callbacks fill in (``Connection.set_app_data``)."""

    __slots__ = ("connector", "reason", "server_name", "transport")

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.server_name: str | None = None
        self.connector: ConnectorTLS | None = None
        self.reason: str | None = None  # why the SNI step refused, when it did


# pyOpenSSL types its "no ALPN overlap" sentinel with a private class.
_NoOverlap = SSL._NoOverlappingProtocols
_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class _Credentials(msgspec.Struct, frozen=True):
    chain: list[x509.Certificate]
    key: _PrivateKey


def _load_credentials(cert_pem: str | bytes, key_pem: str | bytes) -> _Credentials:
    """Parse a PEM chain and its key; ``ValueError`` (one sentence) when either is not
    usable."""
    # PEM is ASCII: a text with anything else is no PEM (and UnicodeEncodeError is a
    # ValueError whose words must not reach the operator).
    try:
        raw_cert = cert_pem.encode("ascii") if isinstance(cert_pem, str) else cert_pem
        chain = x509.load_pem_x509_certificates(raw_cert)
    except ValueError:
        raise ValueError("the server certificate is not a PEM certificate chain") from None
    try:
        raw_key = key_pem.encode("ascii") if isinstance(key_pem, str) else key_pem
        key = serialization.load_pem_private_key(raw_key, password=None)
    except (ValueError, TypeError):
        raise ValueError("the server key is not an unencrypted PEM private key") from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise ValueError(f"unsupported server key type {type(key).__name__}")
    return _Credentials(chain=chain, key=key)


def _use_credentials(ctx: SSL.Context, creds: _Credentials) -> None:
    """Install the chain and key; ``ValueError`` when the key is not the leaf's."""
    ctx.use_certificate(creds.chain[0])
    for extra in creds.chain[1:]:
        ctx.add_extra_chain_cert(extra)
    try:
        ctx.use_privatekey(creds.key)
        ctx.check_privatekey()
    except SSL.Error:
        raise ValueError("the server key does not belong to the server certificate") from None


def check_server_credentials(
    cert_pem: str, key_pem: str, *, now: _dt.datetime | None = None
) -> CertificateInfo:
    """Prove that a server certificate chain and key can serve handshakes, before they are
    stored (a connector's ``pki.server_cert`` / ``pki.server_key``).

    Raises ``ValueError`` with a sentence an operator can act on when the PEM texts do not
    parse, the key does not belong to the first certificate, or that certificate is expired
    or not yet valid.  Returns what the chain looks like (for the caller's answer).
    """
    creds = _load_credentials(cert_pem, key_pem)
    _use_credentials(SSL.Context(SSL.TLS_SERVER_METHOD), creds)
    leaf = creds.chain[0]
    moment = now or _dt.datetime.now(_dt.UTC)
    if moment >= leaf.not_valid_after_utc:
        raise ValueError(f"the server certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    if moment < leaf.not_valid_before_utc:
        raise ValueError(
            f"the server certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d}"
        )
    return certificate_info(cert_pem)


def _accept_any_certificate(
    conn: SSL.Connection, cert: object, errno: int, depth: int, ok: int
) -> bool:
    """Verify callback: take every client certificate; identity.py judges it later."""
    return True


class _Cached(msgspec.Struct, frozen=True):
    cert_pem: str | None  # connector's own certificate, None = wildcard
    key_pem: str | None
    policy: TlsPolicy
    generation: int  # wildcard generation the context was built with
    context: SSL.Context


class ServerContexts:
    """Builds, caches and hands out the server contexts of one gateway.

    ``new_connection(transport)`` returns a fresh server-side ``SSL.Connection`` on memory
    BIOs, with a :class:`HandshakeState` as app data.  Thread-safety: the cache is guarded by
    a lock only because OpenSSL callbacks may in principle run on any thread; in the gateway
    everything runs on the Trio thread.
    """

    def __init__(
        self,
        directory: ConnectorDirectory,
        *,
        server_cert_path: str | Path,
        server_key_path: str | Path,
    ) -> None:
        self._directory = directory
        self._cert_path = Path(server_cert_path)
        self._key_path = Path(server_key_path)
        self._lock = threading.Lock()
        self._cache: dict[str, _Cached] = {}
        self._generation = 0
        self._wildcard_pem, self._wildcard = self._read_wildcard()
        self._dispatch = self._dispatch_context()

    # -- public -----------------------------------------------------------------------------

    def reload_server_cert(self) -> CertificateInfo:
        """Re-read the wildcard certificate and key from disk (``SIGHUP`` and
        ``POST /api/v1/tls/reload`` call this).

        New handshakes use the new certificate; connections already established keep theirs.
        Raises ``ValueError`` or ``OSError`` (and keeps the old certificate) when the files do
        not load or do not match.  Returns the certificate now served.  Blocking file I/O:
        Trio callers run it in a thread.
        """
        pem, creds = self._read_wildcard()
        self._build(creds, DefaultPolicy())  # proves the key matches before anything is swapped
        with self._lock:
            self._wildcard_pem, self._wildcard = pem, creds
            self._generation += 1
        info = certificate_info(pem)
        logger.info(
            "server certificate reloaded from %s: %s, sha256 %s",
            self._cert_path,
            info.subject,
            info.fingerprint,
        )
        return info

    def node_certificate(self) -> CertificateInfo:
        """The wildcard certificate served to connectors without their own."""
        with self._lock:
            pem = self._wildcard_pem
        return certificate_info(pem)

    def new_connection(self, transport: Transport) -> SSL.Connection:
        """A server connection on memory BIOs, ready for ``do_handshake``."""
        conn = SSL.Connection(self._dispatch, None)
        conn.set_accept_state()
        conn.set_app_data(HandshakeState(transport))
        return conn

    def context_for(self, tls: ConnectorTLS) -> SSL.Context:
        """The (cached) context serving ``tls``'s certificate, or the wildcard one."""
        with self._lock:
            cached = self._cache.get(tls.connector_id)
            generation = self._generation
            wildcard = self._wildcard
        if cached is not None and (
            cached.cert_pem == tls.server_cert_pem
            and cached.key_pem == tls.server_key_pem
            and cached.policy == tls.policy
            and (tls.server_cert_pem is not None or cached.generation == generation)
        ):
            return cached.context
        if tls.server_cert_pem is not None and tls.server_key_pem is not None:
            creds = _load_credentials(tls.server_cert_pem, tls.server_key_pem)
            context = self._build(creds, tls.policy)
        else:
            context = self._build(wildcard, tls.policy)
        with self._lock:
            self._cache.pop(tls.connector_id, None)
            if len(self._cache) >= _MAX_CACHED_CONTEXTS:
                self._cache.pop(next(iter(self._cache)))
            self._cache[tls.connector_id] = _Cached(
                cert_pem=tls.server_cert_pem,
                key_pem=tls.server_key_pem,
                policy=tls.policy,
                generation=generation,
                context=context,
            )
        return context

    # -- context construction ---------------------------------------------------------------

    def _read_wildcard(self) -> tuple[str, _Credentials]:
        pem = self._cert_path.read_text("ascii")
        return pem, _load_credentials(pem, self._key_path.read_bytes())

    def _base_context(self, ciphers: bytes) -> SSL.Context:
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        # Only the dispatch context's limits count (see the module docstring); connector
        # contexts repeat the floor so that no context alone would speak below TLS 1.0.
        ctx.set_min_proto_version(SSL.TLS1_VERSION)
        options = SSL.OP_NO_COMPRESSION | SSL.OP_NO_TICKET | SSL.OP_CIPHER_SERVER_PREFERENCE
        options |= _OP_PRIORITIZE_CHACHA
        options |= getattr(SSL, "OP_NO_RENEGOTIATION", 0)
        ctx.set_options(options)
        ctx.set_cipher_list(ciphers)
        ctx.set_tls13_ciphersuites(CIPHERS_TLS13.encode("ascii"))
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        ctx.set_session_id(_SESSION_ID_CONTEXT)
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)  # idle connections hold no 34 KB of buffers
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE, _accept_any_certificate)
        ctx.set_alpn_select_callback(self._select_alpn)
        return ctx

    def _build(self, creds: _Credentials, policy: TlsPolicy) -> SSL.Context:
        ctx = self._base_context(policy.cipher_string().encode("ascii"))
        _use_credentials(ctx, creds)
        return ctx

    def _dispatch_context(self) -> SSL.Context:
        ctx = self._base_context(_DISPATCH_CIPHERS)
        ctx.set_tlsext_servername_callback(self._on_server_name)
        return ctx

    # -- OpenSSL callbacks (synchronous, inside do_handshake) -------------------------------

    def _on_server_name(self, conn: SSL.Connection) -> None:
        state: HandshakeState = conn.get_app_data()
        raw = conn.get_servername()
        if not raw:
            state.reason = REASON_NO_SNI
            return
        name = raw.decode("ascii", "replace").lower().rstrip(".")
        state.server_name = name
        try:
            tls = self._directory.tls_for_server_name(name)
            if tls is None:
                state.reason = REASON_UNKNOWN_CONNECTOR
                return
            if conn.get_protocol_version() < tls.policy.min_version_number:
                # Known connector, refused version: its log says so; no context switch.
                state.connector = tls
                state.reason = REASON_TLS_VERSION
                return
            context = self.context_for(tls)
        except Exception:
            # Never let an exception cross the C boundary (pyOpenSSL would print it).  The
            # connection stays on the certificate-less context, so the handshake fails.
            logger.exception("connector lookup for server name %r failed", name)
            state.reason = REASON_UNKNOWN_CONNECTOR
            return
        state.connector = tls
        conn.set_context(context)

    @staticmethod
    def _select_alpn(conn: SSL.Connection, offered: list[bytes]) -> bytes | _NoOverlap:
        state: HandshakeState = conn.get_app_data()
        for proto in _ALPN_BY_TRANSPORT.get(state.transport, ()):
            if proto in offered:
                return proto
        return SSL.NO_OVERLAPPING_PROTOCOLS


def alpn_protocols(transport: Transport) -> Sequence[bytes]:
    """What a listener of ``transport`` negotiates, in server preference order."""
    return _ALPN_BY_TRANSPORT.get(transport, ())
