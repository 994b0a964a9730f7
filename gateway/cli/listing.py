"""Printing a list route (``{"items": [...], "next": cursor|null}``, docs/decisions.md
"Management"): one page or all of them, as a table or as JSON, with the cursor kept.

* one page, ``--json``: the page exactly as the API answered, ``next`` included, so a script
  can continue with ``--cursor``;
* one page, table: the rows, then on stderr how many more there are ("100 shown, 2,345
  more") and how to get them.  The count comes from one look-ahead request of up to
  :data:`LOOKAHEAD` rows (a keyset page costs the same wherever it starts), so a million
  devices show "1,000+ more" instead of being counted;
* ``--all``: every page, printed as it arrives (the table keeps its column widths; JSON is
  one ``{"items": [...], "next": null}`` document written incrementally), so memory stays
  flat however long the list is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from gateway.cli.client import Client
from gateway.cli.output import Column, Output, TableWriter

__all__ = ["LOOKAHEAD", "print_all", "print_page"]

LOOKAHEAD = 1000  # rows fetched to say how many more there are (the API's largest page)


def print_page(
    out: Output,
    client: Client,
    path: str,
    params: dict[str, Any],
    columns: Sequence[Column],
    *,
    noun: str,
) -> None:
    """One page of ``path`` (``params`` may hold ``cursor`` and ``limit``)."""
    page = client.get(path, **params)
    if out.json:
        out.emit_json(page)
        return
    items, nxt = page["items"], page.get("next")
    out.table(items, columns)
    if nxt is None:
        return
    ahead = client.get(path, **{**params, "cursor": nxt, "limit": LOOKAHEAD})
    more = f"{len(ahead['items']):,}" + ("+" if ahead.get("next") is not None else "")
    out.hint(
        f"{len(items):,} {noun} shown, {more} more: --all lists every one, "
        f"--cursor {nxt} shows the next page"
    )


def print_all(
    out: Output,
    client: Client,
    path: str,
    params: dict[str, Any],
    columns: Sequence[Column],
    *,
    noun: str,
) -> None:
    """Every page of ``path``, streamed."""
    n = 0
    if out.json:
        out.write('{"items":[')
        for page in client.pages(path, **params):
            for item in page["items"]:
                out.write(("," if n else "") + msgspec.json.encode(item).decode())
                n += 1
        out.write('],"next":null}\n')
        return
    table = TableWriter(out, columns)
    for page in client.pages(path, **params):
        table.rows(page["items"])
        n += len(page["items"])
    out.hint(f"{n:,} {noun}" if n else "(none)")
