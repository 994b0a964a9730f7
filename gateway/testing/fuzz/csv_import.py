"""Fuzz target: bulk device import from CSV, through the device service as the management API
calls it (``services.devices.import_csv``), against a real store.

A whole gateway (:func:`gateway.testing.server.open_test_gateway`, no dev ports) runs in a
background thread for the length of the run; each input is one import into its demo
connector.  Input: one control byte (bit 0: dry run, bit 1: all or nothing), then the CSV
text (UTF-8, invalid bytes replaced: the API receives text).

Invariants:

* the import returns an :class:`ImportReport` or raises a
  :class:`~gateway.errors.GatewayError` (a CSV it cannot use); nothing else;
* the report's counts add up: every error has a line ≥ 2, in order; there are no more
  errors than rows; nothing is created on a dry run or when all-or-nothing met an error;
  otherwise created + errors = total.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from gateway.errors import GatewayError
from gateway.testing.server import TestGateway, open_test_gateway

__all__ = ["NAME", "check", "prepared", "seeds"]

NAME = "csv_import"
_ALREADY = "already exists"


class _Host:
    """A gateway in a Trio run on its own thread; ``call`` runs a coroutine there."""

    def __init__(self) -> None:
        self.gw: TestGateway | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="fuzz-csv-")
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to the caller of start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        async with open_test_gateway(Path(self._dir.name) / "data", dev=False) as gw:
            self.gw = gw
            self.token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError("the gateway for the CSV target did not start") from self._error

    def stop(self) -> None:
        if self.token is not None and self._stop is not None:
            self.token.run_sync_soon(self._stop.set)
        self._thread.join(timeout=30)
        self._dir.cleanup()

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            return await fn(*args, **kwargs)

        return trio.from_thread.run(run, trio_token=self.token)


_HOST: list[_Host] = []


@contextmanager
def prepared() -> Iterator[None]:
    """Start the gateway the imports go to (once per process) and stop it at the end."""
    host = _Host()
    host.start()
    _HOST.append(host)
    try:
        yield
    finally:
        _HOST.remove(host)
        host.stop()


def check(data: bytes) -> None:
    if not data:
        return
    if not _HOST:
        raise RuntimeError("check() runs inside prepared()")
    host = _HOST[-1]
    assert host.gw is not None
    dry_run, all_or_nothing = bool(data[0] & 1), bool(data[0] & 2)
    text = data[1:].decode("utf-8", "replace")
    cid = host.gw.info.demo_connector or "demo"
    try:
        report = host.call(
            host.gw.services.devices.import_csv,
            cid,
            text,
            dry_run=dry_run,
            all_or_nothing=all_or_nothing,
        )
    except GatewayError:
        return
    lines = [e.line for e in report.errors]
    assert all(line >= 2 for line in lines), report
    assert lines == sorted(lines), report
    assert report.created >= 0, report
    assert report.total >= 0, report
    assert len(report.errors) <= report.total, report
    assert report.total < len(text.splitlines()), report  # at most one per line after the header
    if dry_run or (all_or_nothing and report.errors):
        assert report.created == 0, report
    else:
        assert report.created + len(report.errors) == report.total, report


def seeds() -> list[bytes]:
    return [
        b"\x00ID\ndev-1\ndev-2\n",
        b"\x02ID,tag:site,tag:floor\nd1,north,1\nd2,south\nd1,x\n",
        b"\x01ID,Certificate\nc1,not a certificate\n",
        b'\x00ID\n"quoted, id"\n"unterminated\n',
        b"\x00id , tag:a\n  spaced  , v\n\n,\n",
        b"\x03Name\nx\n",
    ]
