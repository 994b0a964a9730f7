"""``--since`` / ``--until`` forms (gateway/cli/when.py), in a zone with daylight saving
time so that "local" is checked, not assumed to be UTC.  The zone is a POSIX TZ rule
(central Europe), so no tz database is needed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from gateway.cli.when import parse_when

CENTRAL_EUROPE = "CET-1CEST,M3.5.0,M10.5.0/3"  # DST from the last Sunday of March
# Monday 31 March 2025, 12:00 local (CEST, +02:00): the day after the change to DST.
NOW = datetime(2025, 3, 31, 10, 0, 0, tzinfo=UTC)
NOW_US = 1_743_415_200_000_000


def utc_us(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, sec, tzinfo=UTC).timestamp() * 1e6)


@pytest.fixture(autouse=True)
def central_europe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", CENTRAL_EUROPE)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_reference_instant() -> None:
    assert utc_us(2025, 3, 31, 10, 0) == NOW_US
    assert parse_when("now", now=NOW) == NOW_US


@pytest.mark.parametrize(
    ("text", "seconds_ago"),
    [
        ("-1h", 3600),
        ("1h", 3600),
        ("30m", 1800),
        ("-30m", 1800),
        ("1h30m", 5400),
        ("90s", 90),
        ("2d", 172_800),
        ("1w", 604_800),
        ("1d2h3m4s", 93_784),
    ],
)
def test_durations_are_ago_on_the_time_line(text: str, seconds_ago: int) -> None:
    assert parse_when(text, now=NOW) == NOW_US - seconds_ago * 1_000_000


def test_days_and_times_of_day_are_local() -> None:
    # Today began at 00:00 CEST (+02:00); yesterday at 00:00 CET (+01:00): 23 hours apart.
    assert parse_when("today", now=NOW) == utc_us(2025, 3, 30, 22, 0)
    assert parse_when("Yesterday", now=NOW) == utc_us(2025, 3, 29, 23, 0)
    assert parse_when("14:03", now=NOW) == utc_us(2025, 3, 31, 12, 3)
    assert parse_when("09:15:30", now=NOW) == utc_us(2025, 3, 31, 7, 15, 30)
    assert parse_when("09:15:30.25", now=NOW) == utc_us(2025, 3, 31, 7, 15, 30) + 250_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-05-01", utc_us(2025, 4, 30, 22, 0)),  # local midnight, summer time
        ("2025-01-15", utc_us(2025, 1, 14, 23, 0)),  # local midnight, winter time
        ("2025-05-01 14:03", utc_us(2025, 5, 1, 12, 3)),
        ("2025-05-01T14:03:22", utc_us(2025, 5, 1, 12, 3, 22)),
        ("2025-05-01T12:03:22Z", utc_us(2025, 5, 1, 12, 3, 22)),
        ("2025-05-01T14:03:22+02:00", utc_us(2025, 5, 1, 12, 3, 22)),
        ("2025-05-01 14:03:22.123456", utc_us(2025, 5, 1, 12, 3, 22) + 123_456),
        ("1746101002000000", 1_746_101_002_000_000),  # µs, as --json prints
        ("  -1h ", NOW_US - 3_600_000_000),
    ],
)
def test_iso_8601_and_epoch_microseconds(text: str, expected: int) -> None:
    assert parse_when(text, now=NOW) == expected


def test_a_table_time_finds_its_row() -> None:
    """What a table prints (gateway.cli.output.local_time) reads back as the same second."""
    from gateway.cli.output import local_time

    us = utc_us(2025, 7, 4, 8, 30, 15)
    assert parse_when(local_time(us)) == us


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("soon", "'soon' is no time I know; WHEN is a time ago"),
        ("-5", "'-5' is no time I know"),
        ("1x", "'1x' is no time I know"),
        ("", "'' is no time I know"),
        ("25:00", "'25:00' is no time of day"),
        ("12:60", "'12:60' is no time of day"),
        ("2025-13-01", "'2025-13-01' is no time I know"),
    ],
)
def test_what_is_no_time_says_what_is(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match="^" + needle.replace("(", r"\(")):
        parse_when(text, now=NOW)
