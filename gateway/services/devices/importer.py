"""Bulk whitelisting from CSV (docs/protocol.md §8; docs/decisions.md, "Bulk import CSV").

Header ``ID`` [``,Certificate``] [``,tag:<name>``...], one identity per line.  Every row is
checked here (identity format, duplicates in the file, certificate, tag sizes); the store's
``ImportDevices`` handler then reports the identities that already exist and writes the
rest in one transaction, or nothing when ``all_or_nothing`` and any row has an error.

An import given an ``import_id`` can be re-run after a crash (docs/decisions.md "A CSV import
can be re-run after a crash"): one transaction writes its devices and records its outcome
under the id, so the re-run either finds nothing (the crash came before the commit) and
imports, or finds the record and answers it again (``replayed``) without writing: each
device is created exactly once, and the report is the same both times.
"""

from __future__ import annotations

import csv
import hashlib
import io

from gateway.clock import now_us
from gateway.errors import BadRequest, GatewayError
from gateway.services.connectors import Registry
from gateway.services.devices.model import ImportReport, ImportRowError, Tag, check_tag
from gateway.store.api import ImportDevices, ImportOutcome, ImportRow, Store

__all__ = ["import_csv"]

ALREADY_EXISTS = "already exists"


async def import_csv(
    store: Store,
    registry: Registry,
    cid: str,
    text: str,
    *,
    dry_run: bool = False,
    all_or_nothing: bool = True,
    import_id: str | None = None,
) -> ImportReport:
    """Import ``text``; rows with errors are reported by line.  Raises ``BadRequest`` when
    the CSV itself is unusable (nothing is written then), ``Conflict`` when ``import_id``
    was used for another text."""
    connector = registry.require(cid)
    fmt = connector.settings.identity_format
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise BadRequest(f"malformed CSV: {exc}") from exc
    if not rows:
        raise BadRequest("empty CSV: the first line must be a header starting with ID")
    header = [h.strip() for h in rows[0]]
    if not header or header[0].upper() != "ID":
        raise BadRequest("the first line must be a header whose first column is ID")
    cert_col: int | None = None
    tag_cols: list[tuple[int, str]] = []
    for i, h in enumerate(header[1:], start=1):
        if h.lower() in ("certificate", "ssl client certificate"):
            cert_col = i
        elif h.lower().startswith("tag:") and len(h) > 4:
            tag_cols.append((i, h[4:]))
        elif h:
            raise BadRequest(f"unknown CSV column {h!r} (expected Certificate or tag:<name>)")
    errors: list[ImportRowError] = []
    good: list[ImportRow] = []
    seen: set[str] = set()
    from gateway.tls.pki import fingerprint

    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        ident = row[0].strip()
        if len(row) > len(header):
            errors.append(ImportRowError(line, ident, "more columns than the header"))
            continue
        try:
            fmt.check(ident)
        except GatewayError as exc:
            errors.append(ImportRowError(line, ident, exc.message))
            continue
        if ident in seen:
            errors.append(ImportRowError(line, ident, "duplicate identity in the file"))
            continue
        seen.add(ident)
        fp = None
        if cert_col is not None and cert_col < len(row) and row[cert_col].strip():
            try:
                fp = fingerprint(row[cert_col].strip())
            except ValueError as exc:
                errors.append(ImportRowError(line, ident, f"bad certificate: {exc}"))
                continue
        tags = [
            Tag(name, row[i].strip()) for i, name in tag_cols if i < len(row) and row[i].strip()
        ]
        try:
            for t in tags:
                check_tag(t)
        except BadRequest as exc:
            errors.append(ImportRowError(line, ident, exc.message))
            continue
        good.append(ImportRow(line, ident, fp, tags))
    (outcome,) = await store.write(
        [
            ImportDevices(
                cid,
                good,
                now_us(),
                dry_run=dry_run,
                all_or_nothing=all_or_nothing,
                row_errors=bool(errors),
                import_id=import_id,
                digest=hashlib.sha256(text.encode("utf-8")).hexdigest() if import_id else "",
            )
        ]
    )
    assert isinstance(outcome, ImportOutcome)
    line_of = {r.identity: r.line for r in good}
    errors.extend(ImportRowError(line_of[i], i, ALREADY_EXISTS) for i in outcome.existing)
    errors.sort(key=lambda e: e.line)
    return ImportReport(
        total=len(good) + sum(1 for e in errors if e.error != ALREADY_EXISTS),
        created=outcome.created,
        errors=errors,
        dry_run=dry_run,
        import_id=import_id,
        replayed=outcome.replayed,
    )
