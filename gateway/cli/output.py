"""How the CLI prints: tables and records for people (rich), JSON for scripts, progress and
hints on stderr.

Human output turns the API's machine values into something a person reads: µs epochs
become local times (``2025-05-01 14:03:22``), booleans ``yes``/``no``, empty lists and
nulls ``-``, tags ``name:value``, sizes ``150.0 MiB``.  Tables have no box lines and one row
per line, so ``grep`` and ``awk`` work on them; on a terminal columns are fitted to the
width (long cells end in ``…``), in a pipe nothing is cut.  ``--json`` prints the API's own
values unchanged (one document; JSON Lines for the live tails).

Everything that is not the answer — progress bars, spinners, "N more" hints, warnings — goes
to stderr, so ``gateway device list demo --all > ids.txt`` gets only rows.  On a terminal
progress is a rich bar; in a pipe or a log it is a line every few seconds and a last line.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

import msgspec
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column as RichColumn
from rich.table import Table
from rich.text import Text

__all__ = ["Column", "Kind", "Output", "cell", "local_time"]

Kind = Literal["text", "time", "bool", "tags", "bytes", "json", "clip", "payload"]
PIPE_WIDTH = 100_000  # a pipe has no width: never fold or cut a row
CLIP = 60  # characters of a payload shown in a table cell
LINE_EVERY_S = 2.0  # seconds between progress lines in a pipe
MIN_EPOCH_US = 10**14  # 1973 in µs: smaller integers under a time-like key are counts
# Keys whose integer values are µs since the epoch, wherever they appear.
TIME_KEYS = frozenset(
    {
        "created",
        "updated",
        "lastseen",
        "timestamp",
        "reported_timestamp",
        "set_timestamp",
        "started",
        "finished",
        "expire",
    }
)


class Column(msgspec.Struct, frozen=True):
    """One table column: the key in each row, its heading and how to show the value."""

    key: str
    header: str = ""
    kind: Kind = "text"

    @property
    def title(self) -> str:
        return self.header or self.key.upper().replace("_", " ")


def local_time(us: int, *, ms: bool = False) -> str:
    t = datetime.fromtimestamp(us / 1e6)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if ms else t.strftime("%Y-%m-%d %H:%M:%S")


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"


def _tags(value: Any) -> str:
    if isinstance(value, Mapping):
        pairs = [f"{k}:{v}" for k, v in value.items()]
    else:
        pairs = [f"{t.get('name')}:{t.get('value', '')}" for t in value if isinstance(t, Mapping)]
    return ", ".join(pairs) or "-"


def _pairs(values: Mapping[str, Any]) -> str:
    return " ".join(
        f"{k}={v if isinstance(v, str) else msgspec.json.encode(v).decode()}"
        for k, v in values.items()
    )


def payload_text(value: Any) -> str:
    """An event payload as ``alias=value`` pairs: the device writes of a ``data_in`` or
    ``data_out`` event are ``[{"timestamp", "values"}, ...]`` (several writes coalesced into
    one event get their times); anything else is compact JSON."""
    if (
        isinstance(value, list)
        and value
        and all(isinstance(e, Mapping) and isinstance(e.get("values"), Mapping) for e in value)
    ):
        if len(value) == 1:
            return _pairs(value[0]["values"])
        return "; ".join(
            f"{local_time(e['timestamp'], ms=True)[11:]} {_pairs(e['values'])}"
            if isinstance(e.get("timestamp"), int)
            else _pairs(e["values"])
            for e in value
        )
    if isinstance(value, Mapping):
        return _pairs(value)
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def cell(value: Any, kind: Kind = "text", key: str = "") -> str:
    """One value as a person reads it."""
    if value is None or value == [] or value == {} or value == "":
        return "-"
    # A time by its key only when it looks like µs since the epoch: a run report's
    # "created" is a count of devices.
    by_key = (
        kind == "text" and key in TIME_KEYS and isinstance(value, int) and value >= MIN_EPOCH_US
    )
    if (kind == "time" or by_key) and isinstance(value, int) and not isinstance(value, bool):
        return local_time(value)
    if isinstance(value, str) and "\n" in value.strip():  # a PEM, a document: one line
        lines = value.strip().splitlines()
        return f"{lines[0]} … ({len(lines)} lines)"
    if kind == "bytes" and isinstance(value, int):
        return human_bytes(value)
    if kind == "tags":
        return _tags(value)
    if kind == "payload":
        text = payload_text(value)
        return text if len(text) <= CLIP else text[: CLIP - 1] + "…"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if kind in ("json", "clip") or isinstance(value, dict | list):
        if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            text = ", ".join(str(v) for v in value)
        elif isinstance(value, list) and all(isinstance(v, Mapping) and "name" in v for v in value):
            text = _tags(value)
        else:
            text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        if kind == "clip" and len(text) > CLIP:
            return text[: CLIP - 1] + "…"
        return text
    return str(value)


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in obj.items():
        if isinstance(v, Mapping) and v and k != "tags":
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


class _Lines:
    """Progress in a pipe or a log: a line when the work starts, then at most one line per
    :data:`LINE_EVERY_S` with the percentage (so a quick upload prints two lines and a long
    one a few dozen), and a last line with the total and the time taken."""

    def __init__(self, err: Console, label: str, total: int | None, fmt: Callable[[int], str]):
        self.err, self.label, self.total, self.fmt = err, label, total, fmt
        self.done = 0
        self.started = self.shown = time.monotonic()
        self.lock = threading.Lock()
        what = f" ({fmt(total)})" if total is not None else ""
        err.print(f"{label}{what}…")

    def advance(self, n: int) -> None:
        with self.lock:
            self.done += n
            now = time.monotonic()
            if now - self.shown < LINE_EVERY_S:
                return
            self.shown = now
            if self.total:
                pct = min(100, self.done * 100 // self.total)
                self.err.print(f"{self.label}: {pct}% ({self.fmt(self.done)})")
            else:
                self.err.print(f"{self.label}: {self.fmt(self.done)}")

    def finish(self) -> None:
        took = time.monotonic() - self.started
        self.err.print(f"{self.label}: done, {self.fmt(self.done)} in {took:.1f} s")


class _Amount(ProgressColumn):
    """``1.2/2.5 MiB`` or ``1,234/10,000`` for a task with a total; nothing for a spinner."""

    def __init__(self, unit: str) -> None:
        super().__init__(table_column=RichColumn(no_wrap=True))
        self.unit = unit

    def render(self, task: Task) -> Text:
        if task.total is None or task.fields.get("waiting"):
            return Text("")
        if self.unit == "bytes":
            return Text(f"{human_bytes(int(task.completed))}/{human_bytes(int(task.total))}")
        return Text(f"{int(task.completed):,}/{int(task.total):,}")


class Output:
    """Where one command prints.  ``json``: the command prints JSON documents only."""

    def __init__(self, *, json: bool) -> None:
        self.json = json
        self.out = self._console(sys.stdout)
        self.err = self._console(sys.stderr)

    @staticmethod
    def _console(file: Any) -> Console:
        probe = Console(file=file)
        width = None if probe.is_terminal else PIPE_WIDTH
        return Console(file=file, width=width, highlight=False, soft_wrap=False, emoji=False)

    @property
    def terminal(self) -> bool:
        return self.err.is_terminal

    # -- answers -------------------------------------------------------------------------

    def emit_json(self, value: Any) -> None:
        """One JSON document on stdout (indented on a terminal, compact in a pipe)."""
        raw = msgspec.json.encode(value)
        if self.out.is_terminal:
            raw = msgspec.json.format(raw, indent=2)
        self.write(raw.decode() + "\n")

    def emit_json_line(self, value: Any) -> None:
        """One JSON Lines record (the live tails), flushed at once."""
        self.write(msgspec.json.encode(value).decode() + "\n")

    def write(self, text: str) -> None:
        self.out.file.write(text)
        self.out.file.flush()

    def line(self, text: str) -> None:
        """A plain line of the answer (a confirmation such as ``deleted fleet1``)."""
        self.write(text + "\n")

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> None:
        if not rows:
            self.hint("(none)")
            return
        TableWriter(self, columns).rows(rows)

    def record(self, obj: Mapping[str, Any], kinds: Mapping[str, Kind] | None = None) -> None:
        """One object as ``key  value`` lines; nested objects as dotted keys."""
        kinds = kinds or {}
        pairs = list(_flatten(obj))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        for k, v in pairs:
            grid.add_row(Text(k), Text(cell(v, kinds.get(k, "text"), k.rsplit(".", 1)[-1])))
        self.render(grid)

    def render(self, renderable: Any) -> None:
        with self.out.capture() as cap:
            self.out.print(renderable)
        text = cap.get()
        if not self.out.is_terminal:
            text = "\n".join(line.rstrip() for line in text.split("\n"))
        self.write(text)

    # -- stderr ----------------------------------------------------------------------------

    def hint(self, text: str) -> None:
        """Advice about the answer ("100 shown, 1,000+ more: --all lists them")."""
        self.err.print(Text(text, style="dim"))

    def warn(self, text: str) -> None:
        self.err.print(Text(text, style="yellow"))

    @contextmanager
    def progress(
        self,
        label: str,
        total: int | None,
        *,
        unit: Literal["bytes", "items"] = "items",
        then: str | None = None,
    ) -> Iterator[Callable[[int], None]]:
        """A progress bar on stderr; the body calls the yielded function with each step.

        ``then`` names what happens after the last step while the body still waits (the
        gateway importing what was uploaded): a spinner with the elapsed time takes over
        when the bar is full, and its own "done" line follows when the body ends.
        """
        fmt: Callable[[int], str] = human_bytes if unit == "bytes" else (lambda n: f"{n:,}")
        if not self.terminal:
            lines = _Lines(self.err, label, total, fmt)
            waiting = [0.0]

            def advance(n: int) -> None:
                lines.advance(n)
                if then and not waiting[0] and total is not None and lines.done >= total:
                    lines.finish()
                    waiting[0] = time.monotonic()
                    self.err.print(f"{then}…")

            yield advance
            if waiting[0]:
                self.err.print(f"{then}: done in {time.monotonic() - waiting[0]:.1f} s")
            else:
                lines.finish()
            return
        bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", table_column=RichColumn(no_wrap=True)),
            BarColumn(),
            _Amount(unit),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.err,
        )
        with bar:
            task = bar.add_task(label, total=total)
            later: list[Any] = []

            def step(n: int) -> None:
                bar.advance(task, n)
                if then and not later and total is not None and bar.tasks[0].completed >= total:
                    later.append(bar.add_task(then, total=None, waiting=True))

            yield step
            for t in later:
                bar.update(t, total=1, completed=1)

    @contextmanager
    def working(self, label: str) -> Iterator[None]:
        """A spinner while the gateway works on something it answers only at the end."""
        started = time.monotonic()
        if self.terminal:
            with self.err.status(label):
                yield
        else:
            self.err.print(f"{label}…")
            yield
        self.err.print(f"{label}: done in {time.monotonic() - started:.1f} s")


class TableWriter:
    """A table printed in pieces (one page at a time, or rows as they arrive): the first
    piece sets the column widths and prints the heading; later pieces keep the widths, so
    ``--all`` over a million devices streams instead of waiting for the last page."""

    def __init__(self, output: Output, columns: Sequence[Column]) -> None:
        self.output = output
        self.columns = list(columns)
        self.widths: list[int] | None = None

    def rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        cells = [[cell(r.get(c.key), c.kind, c.key) for c in self.columns] for r in rows]
        first = self.widths is None
        if self.widths is None:
            self.widths = [
                max(len(c.title), *(len(row[i]) for row in cells))
                for i, c in enumerate(self.columns)
            ]
        table = Table(
            box=None,
            show_header=first,
            header_style="bold",
            pad_edge=False,
            padding=(0, 2, 0, 0),
            show_edge=False,
        )
        last = len(self.columns) - 1
        for i, c in enumerate(self.columns):
            table.add_column(
                c.title,
                min_width=self.widths[i] if i < last else None,
                no_wrap=True,
                overflow="ellipsis",
            )
        for row in cells:
            table.add_row(*(Text(v) for v in row))
        self.output.render(table)
