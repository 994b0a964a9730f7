"""docs/architecture.md principle 2: kill -9 at any moment loses nothing that was acknowledged."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

CHILD = Path(__file__).with_name("kill9_child.py")


@pytest.mark.parametrize("run", range(4))
def test_acknowledged_writes_survive_sigkill(tmp_path: Path, run: int) -> None:
    db = tmp_path / "gateway.db"
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    acked: list[int] = []
    buf = b""
    deadline = time.monotonic() + 20
    kill_after = random.Random(run).uniform(0.2, 0.8)
    started: float | None = None
    while time.monotonic() < deadline and proc.poll() is None:
        chunk = proc.stdout.read() or b""
        buf += chunk
        if started is None and b"\n" in buf:
            started = time.monotonic()
        if started is not None and time.monotonic() - started > kill_after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=10)
    buf += proc.stdout.read() or b""
    proc.stdout.close()
    err = proc.stderr.read() if proc.stderr else b""
    if proc.stderr:
        proc.stderr.close()
    acked = [int(x) for x in buf.split(b"\n")[:-1]]  # a torn last line was never whole
    assert proc.returncode == -signal.SIGKILL, err
    assert len(acked) > 50, "the child acknowledged too little to make the test meaningful"
    conn = sqlite3.connect(db)
    try:
        data = {
            int(n)
            for (p,) in conn.execute("SELECT payload FROM events WHERE type = 'data_in'")
            for n in [msgspec.json.decode(p)[0]["values"]["data_in"]]
        }
        pubs = {
            msgspec.json.decode(p)["n"]
            for (p,) in conn.execute("SELECT payload FROM events WHERE type = 'publish'")
        }
        reported = {int(v) for (v,) in conn.execute("SELECT reported FROM state")}
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    missing = [n for n in acked if n not in data or n not in pubs]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    # state holds, per device, a value at least as new as its last acknowledged write
    for task in range(16):
        mine = [n for n in acked if n // 1_000_000 == task]
        if mine:
            assert max(r for r in reported if r // 1_000_000 == task) >= max(mine)
