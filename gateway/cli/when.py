"""Points in time as an operator types them, turned into the API's µs since the epoch.

``gateway events --since/--until`` take what a person has at hand while investigating:

* a time ago: ``-1h``, ``30m``, ``2d``, ``1h30m``, ``90s``, ``1w`` (the sign is optional:
  a forensic search looks back, so ``30m`` and ``-30m`` both mean thirty minutes ago);
* ``now``, ``today`` (local midnight), ``yesterday`` (the midnight before);
* a time of day today, local: ``14:03``, ``14:03:22``, ``14:03:22.5``;
* an ISO 8601 date or time: ``2025-05-01`` (local midnight), ``2025-05-01 14:03`` and
  ``2025-05-01T14:03:22`` (local time), ``2025-05-01T12:03:22Z`` or ``…+02:00`` (that zone);
* a number: µs since the epoch, as ``--json`` prints ``timestamp``.

Local means the zone of the machine running the CLI, the zone the tables print in (see
:func:`gateway.cli.output.local_time`), so a time copied from a table finds that row.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import click

__all__ = ["WHEN_HELP", "parse_when", "when_option"]

WHEN_HELP = (
    "WHEN is a time ago (-1h, 30m, 2d, 1h30m), now, today, yesterday, a time of day today "
    "(14:03, local), an ISO 8601 date or time (2025-05-01, 2025-05-01 14:03 local, "
    "2025-05-01T12:03:22Z) or µs since the epoch (as --json prints)"
)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_AGO = re.compile(r"-?(?:\d+[smhdw])+")
_AGO_PART = re.compile(r"(\d+)([smhdw])")
_TIME_OF_DAY = re.compile(r"(\d{1,2}):(\d\d)(?::(\d\d)(?:\.(\d{1,6}))?)?")


def _us(t: datetime) -> int:
    return round(t.timestamp() * 1_000_000)


def parse_when(text: str, *, now: datetime | None = None) -> int:
    """µs since the epoch for ``text`` (the forms in this module's docstring); ``now`` is
    the reference for relative forms (the current local time by default).  Raises
    ``ValueError`` with a message naming the accepted forms."""
    value = text.strip()
    ref = now or datetime.now().astimezone()
    # Wall-clock forms are worked out on the local calendar (naive), then placed on the
    # time line with the zone rules of that day, so "yesterday" across a DST change is
    # still midnight.  Durations ago are taken on the time line itself.
    wall = ref.astimezone().replace(tzinfo=None)
    word = value.lower()
    if word == "now":
        return _us(ref)
    if word in ("today", "yesterday"):
        midnight = wall.replace(hour=0, minute=0, second=0, microsecond=0)
        return _us((midnight - timedelta(days=word == "yesterday")).astimezone())
    if value.isdigit():
        return int(value)
    if _AGO.fullmatch(word):
        seconds = sum(int(n) * _UNIT_S[u] for n, u in _AGO_PART.findall(word))
        return _us(ref) - seconds * 1_000_000
    if m := _TIME_OF_DAY.fullmatch(value):
        hour, minute, second, fraction = m.groups()
        try:
            clock = wall.replace(
                hour=int(hour),
                minute=int(minute),
                second=int(second or 0),
                microsecond=int((fraction or "0").ljust(6, "0")),
            )
        except ValueError:
            raise ValueError(f"{text!r} is no time of day") from None
        return _us(clock.astimezone())
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is no time I know; {WHEN_HELP}") from None
    # A time without a zone is the local one (what the tables show).
    return _us(t if t.tzinfo is not None else t.astimezone())


def when_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A click callback for an option taking WHEN: µs since the epoch, or None when the
    option was not given; a text :func:`parse_when` cannot read is a usage error (exit
    status 2) that lists the accepted forms."""
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
