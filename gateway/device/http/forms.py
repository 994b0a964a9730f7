"""The lenient ``application/x-www-form-urlencoded`` codec of the HTTP device API.

Why not ``urllib.parse.parse_qsl``: real Exosite clients do not always encode (docs/protocol.md
§2.1, §12 item 23, §13 item 7).  murano-client's ``http_write`` — the path ExoEdge acks
config through — sends ``config_io={"last_edited": "…", "channels": {…}}`` raw, and the
C# example sends ``data_in={"0001":0}``.  So this decoder:

* splits pairs at ``&`` and a pair at its *first* ``=`` (a raw JSON value keeps its own
  ``=`` and ``:``);
* keeps a raw JSON object/array value whole even when it contains ``&`` (a value that
  starts with ``{`` or ``[`` extends to its balancing bracket, strings and escapes
  respected, when that bracket is followed by ``&`` or the end of the body);
* decodes ``+`` as space and ``%XX`` as a byte (standard decoding), and leaves a ``%`` that
  does not start a valid escape as a literal ``%``;
* requires the decoded bytes to be UTF-8: anything else is :class:`~gateway.errors.BadRequest`
  (the request changes nothing).

The encoder produces what the real server sends (the Murano documentation's test vector):
unreserved characters as they are, space as ``+`` and everything else as *lowercase* ``%xx``
escapes.

Pure functions over ``bytes``/``str``; no I/O.  The hot path (one small write per request)
takes the fast branch: no ``%`` and no ``+`` means one ``bytes.decode``.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from gateway.errors import BadRequest

__all__ = ["decode_component", "encode_component", "encode_pairs", "parse_form", "parse_names"]

_OPEN = {0x7B: 0x7D, 0x5B: 0x5D}  # { -> }, [ -> ]
_QUOTE = 0x22  # "
_BACKSLASH = 0x5C
_AMP = 0x26

# Characters sent unescaped (RFC 3986 unreserved, as Python's quote_plus keeps them).
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_ENCODE_TABLE: list[str] = [
    chr(b) if b in _UNRESERVED else ("+" if b == 0x20 else f"%{b:02x}") for b in range(256)
]


def decode_component(raw: bytes) -> str:
    """Decode one name or value: ``+`` → space, ``%XX`` → byte, invalid ``%`` literal.

    Raises ``BadRequest`` when the result is not UTF-8.
    """
    if b"%" in raw or b"+" in raw:
        raw = unquote_to_bytes(raw.replace(b"+", b" "))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"form data is not UTF-8 after decoding ({exc.reason})") from None


def _json_end(body: bytes, start: int) -> int:
    """Index just past the bracket that balances ``body[start]`` (``{`` or ``[``), or -1 if
    the body ends first.  Strings (with backslash escapes) are skipped over."""
    depth = 0
    in_string = False
    i = start
    n = len(body)
    while i < n:
        c = body[i]
        if in_string:
            if c == _BACKSLASH:
                i += 1
            elif c == _QUOTE:
                in_string = False
        elif c == _QUOTE:
            in_string = True
        elif c in _OPEN:
            depth += 1
        elif c == 0x7D or c == 0x5D:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """All ``name=value`` pairs of ``body`` in order (names may repeat: record bodies).

    A segment without ``=`` yields ``(name, "")``; empty segments are skipped.  Raises
    ``BadRequest`` for undecodable bytes.
    """
    out: list[tuple[str, str]] = []
    if not body:
        return out
    # Fast path: no raw JSON anywhere (values are encoded or plain).
    if b"{" not in body and b"[" not in body:
        for segment in body.split(b"&"):
            if segment:
                name, _, value = segment.partition(b"=")
                out.append((decode_component(name), decode_component(value)))
        return out
    pos = 0
    n = len(body)
    while pos < n:
        amp = body.find(b"&", pos)
        eq = body.find(b"=", pos)
        if eq == -1 or (amp != -1 and amp < eq):
            end = n if amp == -1 else amp
            if end > pos:
                out.append((decode_component(body[pos:end]), ""))
            pos = end + 1
            continue
        name = body[pos:eq]
        vstart = eq + 1
        end = n if amp == -1 else amp
        if vstart < n and body[vstart] in _OPEN:
            close = _json_end(body, vstart)
            if close != -1 and (close == n or body[close] == _AMP):
                end = close
        out.append((decode_component(name), decode_component(body[vstart:end])))
        pos = end + 1
    return out


def parse_names(query: bytes) -> list[str]:
    """The alias list of a read query ``a&b&c`` (``a=`` is accepted as ``a``), without
    duplicates, in order."""
    seen: dict[str, None] = {}
    for segment in query.split(b"&"):
        if segment:
            name = decode_component(segment.partition(b"=")[0])
            if name:
                seen[name] = None
    return list(seen)


def encode_component(text: str) -> str:
    """``quote_plus`` with lowercase hex escapes (what Murano sends)."""
    if text.isascii() and text.isalnum():
        return text
    table = _ENCODE_TABLE
    return "".join([table[b] for b in text.encode("utf-8")])


def encode_pairs(pairs: dict[str, str]) -> bytes:
    """A form body ``a=v&b=w`` from aliases and values."""
    return "&".join(
        f"{encode_component(k)}={encode_component(v)}" for k, v in pairs.items()
    ).encode("ascii")
