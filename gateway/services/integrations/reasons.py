"""Transport failures of third-party calls, told as one plain sentence.

httpx wraps what really happened (a refused connection inside an exception group, an
untrusted certificate inside a broken stream) and its messages carry errno numbers and
OpenSSL source lines.  Operators read these in run reports, health details and API
answers, so :func:`transport_failure` walks the chain once and names the cause in words,
with the fix when there is an obvious one.  The translation happens here only (the style's
"translate foreign errors at the boundary, once").
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator

import httpx

__all__ = ["transport_failure"]

X509_V_ERR_HOSTNAME_MISMATCH = 62  # OpenSSL's verify code for a name the certificate lacks
_NOISE = re.compile(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)")  # "[Errno 111] ", "(_ssl.c:1006)"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the members of any exception group on the way."""
    todo = [exc]
    seen: set[int] = set()
    while todo:
        cur = todo.pop(0)
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        if isinstance(cur, BaseExceptionGroup):
            todo.extend(cur.exceptions)
        nxt = cur.__cause__ or cur.__context__
        if nxt is not None:
            todo.append(nxt)


def _clean(text: str) -> str:
    return _NOISE.sub("", text).strip().rstrip(".")


def transport_failure(exc: httpx.HTTPError, *, target: str, timeout_s: float) -> str:
    """Why a request to ``target`` (``host:port``) got no HTTP answer, as a clause such as
    ``could not connect to 127.0.0.1:8443: the connection was refused``."""
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            if e.verify_code == X509_V_ERR_HOSTNAME_MISMATCH:
                return (
                    f"the TLS certificate of {target} is not valid for that host name "
                    "(set host to a name the certificate covers)"
                )
            why = _clean(e.verify_message or "") or "certificate verify failed"
            return (
                f"the TLS certificate of {target} is not trusted ({why}); set ca_bundle to "
                "the CA that issued it"
            )
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return f"could not connect to {target}: the connection was refused"
        if isinstance(e, socket.gaierror):
            host = target.rsplit(":", 1)[0] if target.count(":") == 1 else target
            return f"could not connect to {target}: the host name {host} does not resolve"
        if isinstance(e, ssl.SSLError):
            why = str(e.reason or "").replace("_", " ").lower() or _clean(str(e))
            return f"the TLS handshake with {target} failed ({why})"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"could not connect to {target} within {timeout_s:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"{target} did not answer within {timeout_s:g} s"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"{target} closed the connection without a complete answer"
    for e in chain:
        if isinstance(e, OSError) and e.strerror:
            return f"the connection to {target} failed: {e.strerror.lower()}"
    texts = [_clean(str(e)) for e in chain if _clean(str(e))]
    return f"the request to {target} failed" + (f": {texts[-1]}" if texts else "")
