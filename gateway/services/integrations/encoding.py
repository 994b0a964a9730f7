"""How operation parameters become bytes on the wire (sans-IO).

* Scalars are text: booleans ``true`` / ``false``, numbers as JSON writes them.
* Arrays follow their parameter's ``collectionFormat``: ``csv`` / ``ssv`` / ``tsv`` /
  ``pipes`` join the items with ``,`` / space / tab / ``|`` into one value; ``multi`` sends
  one ``name=item`` pair per item (query and form fields only; the validator refuses it
  elsewhere).  An item that contains its format's separator is refused: the server could not
  split it back (docs/decisions.md, "Cloud-to-cloud integrations").
* ``in: formData`` fields go out as ``application/x-www-form-urlencoded`` or, when the
  operation declares a ``type: file`` parameter or consumes only multipart, as
  ``multipart/form-data`` (:func:`encode_multipart`, RFC 7578).

Files arrive from the management API as JSON, so a file value is either text (sent as
UTF-8, named after the parameter) or ``{"filename", "content_type", "content" |
"content_base64"}``; Python callers may also pass ``bytes``.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from gateway.errors import BadRequest
from gateway.services.integrations.validate import COLLECTION_FORMATS

__all__ = [
    "FilePart",
    "ParameterInvalid",
    "collection_values",
    "encode_form",
    "encode_multipart",
    "file_part",
    "scalar_text",
]

DEFAULT_FILE_TYPE = "application/octet-stream"
_FORMAT_NAMES = {",": "comma", " ": "space", "\t": "tab", "|": "pipe"}


class ParameterInvalid(BadRequest):
    code = "invalid_parameter"


class FilePart(msgspec.Struct, frozen=True):
    """One file of a multipart body."""

    field: str
    filename: str
    content_type: str
    content: bytes


def scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def collection_values(name: str, value: Any, collection_format: str) -> list[str]:
    """The wire values of one parameter: one text for a scalar or a joined array, one per
    item for ``multi``.  Raises ``ParameterInvalid`` when an item contains the separator."""
    if not isinstance(value, list):
        return [scalar_text(value)]
    items = [scalar_text(v) for v in value]
    sep = COLLECTION_FORMATS.get(collection_format, ",")
    if sep is None:
        return items
    for item in items:
        if sep in item:
            raise ParameterInvalid(
                f"parameter {name!r}: item {item!r} contains the {_FORMAT_NAMES[sep]} that "
                f"separates {collection_format} items, so the API could not split it back"
            )
    return [sep.join(items)]


def file_part(name: str, value: Any) -> FilePart:
    """A ``type: file`` value as a :class:`FilePart`; ``ParameterInvalid`` if malformed."""
    if isinstance(value, bytes):
        return FilePart(name, name, DEFAULT_FILE_TYPE, value)
    if isinstance(value, str):
        return FilePart(name, name, DEFAULT_FILE_TYPE, value.encode())
    if not isinstance(value, Mapping):
        raise ParameterInvalid(
            f"parameter {name!r} is a file: give its text, or an object with filename, "
            "content_type and content (text) or content_base64"
        )
    unknown = sorted(set(value) - {"filename", "content_type", "content", "content_base64"})
    if unknown:
        raise ParameterInvalid(f"parameter {name!r}: unknown file field(s) {', '.join(unknown)}")
    filename = value.get("filename", name)
    ctype = value.get("content_type", DEFAULT_FILE_TYPE)
    if not isinstance(filename, str) or not filename or not isinstance(ctype, str) or not ctype:
        raise ParameterInvalid(f"parameter {name!r}: filename and content_type must be text")
    if any(ord(c) < 32 for c in ctype):  # it becomes a header line of the part
        raise ParameterInvalid(f"parameter {name!r}: content_type has control characters")
    text, b64 = value.get("content"), value.get("content_base64")
    if (text is None) == (b64 is None):
        raise ParameterInvalid(f"parameter {name!r}: give exactly one of content, content_base64")
    if text is not None:
        if not isinstance(text, str):
            raise ParameterInvalid(f"parameter {name!r}: content must be text")
        return FilePart(name, filename, ctype, text.encode())
    try:
        data = base64.b64decode(str(b64), validate=True)
    except (binascii.Error, ValueError):
        raise ParameterInvalid(f"parameter {name!r}: content_base64 is not base64") from None
    return FilePart(name, filename, ctype, data)


def encode_form(fields: Sequence[tuple[str, str]]) -> bytes:
    """``application/x-www-form-urlencoded`` (spaces as ``+``, as HTML forms send them)."""
    return urllib.parse.urlencode(list(fields)).encode()


def _quote_header(text: str) -> str:
    # RFC 7578 §4.2 / the WHATWG form encoder: names and file names travel in a quoted
    # string; a quote or line break in them is percent-encoded rather than escaped.
    return text.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")


def encode_multipart(
    fields: Sequence[tuple[str, str]], files: Sequence[FilePart], *, boundary: str | None = None
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its Content-Type (RFC 7578).  Our own encoder:
    httpx builds multipart only when a file is present and keeps its encoder private, and
    an operation that consumes multipart must get multipart even without a file."""
    mark = boundary or secrets.token_hex(16)
    out: list[bytes] = []
    for name, text in fields:
        head = f'Content-Disposition: form-data; name="{_quote_header(name)}"'
        out.append(f"--{mark}\r\n{head}\r\n\r\n".encode() + text.encode() + b"\r\n")
    for f in files:
        head = (
            f'Content-Disposition: form-data; name="{_quote_header(f.field)}"; '
            f'filename="{_quote_header(f.filename)}"\r\nContent-Type: {f.content_type}'
        )
        out.append(f"--{mark}\r\n{head}\r\n\r\n".encode() + f.content + b"\r\n")
    out.append(f"--{mark}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={mark}"
