"""A throwaway PostgreSQL cluster for tests: Debian's server binaries, a data directory in a
temporary directory, listening on 127.0.0.1 only (an ephemeral port) and a private Unix
socket directory.

We run as root in CI, and ``postgres`` refuses to run as root, so when this process is root
the cluster belongs to the unprivileged ``postgres`` user (Debian's package creates it) and
every server command runs through ``runuser``.  ``fsync`` is off: the tests prove the
gateway's acknowledgement rules against PostgreSQL's commit, not the disk.

:class:`PgCluster` is used by the session-scoped pytest fixture (``tests/conftest.py``), which
gives each test its own database copied from a migrated template (``CREATE DATABASE …
TEMPLATE``: tens of milliseconds instead of a migration per test).  :meth:`PgCluster.stop`
and :meth:`PgCluster.start` let a test take the server away under load and bring it back on
the same port and data.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from gateway.testing.ports import free_port as _free_port

__all__ = ["PgCluster", "pg_bin_dir"]

_USER = "postgres"


def pg_bin_dir() -> Path | None:
    """The newest installed server's bin directory (``/usr/lib/postgresql/<major>/bin``)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


class PgCluster:
    """One cluster: :meth:`start` (initdb on first call), :meth:`stop`, :meth:`destroy`.
    ``url(db)`` is a ``postgresql://`` URL for the gateway and psycopg."""

    def __init__(self, base: Path | None = None) -> None:
        bindir = pg_bin_dir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (scripts/bootstrap --system)")
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="gw-pg-", dir=base))
        self.data = self.base / "data"
        self.sockets = self.base / "run"
        self.port = _free_port()
        self._root = os.geteuid() == 0
        self._running = False
        self._initialised = False

    def _cmd(self, *argv: str) -> list[str]:
        return ["runuser", "-u", _USER, "--", *argv] if self._root else list(argv)

    def _own(self, path: Path) -> None:
        if self._root:
            pw = pwd.getpwnam(_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (creating the cluster the first time); returns once it accepts
        connections (``pg_ctl -w`` waits for that)."""
        if not self._initialised:
            os.chmod(self.base, 0o755)
            for d in (self.data, self.sockets):
                d.mkdir(mode=0o700)
                self._own(d)
            subprocess.run(
                self._cmd(
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    _USER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ),
                check=True,
                capture_output=True,
            )
            self._initialised = True
        options = " ".join(
            (
                f"-p {self.port}",
                f"-k {self.sockets}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c max_connections=300",
                "-c shared_buffers=64MB",
            )
        )
        done = subprocess.run(
            self._cmd(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.data / "server.log"),
                "-o",
                options,
                "-t",
                str(int(timeout)),
                "-w",
                "start",
            ),
            capture_output=True,
        )
        if done.returncode != 0:
            log = self.data / "server.log"
            text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {done.stderr.decode()}\n{text}")
        self._running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions, disconnect everyone;
        ``immediate``: like a crash, recovery at the next start)."""
        if not self._running:
            return
        subprocess.run(
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"),
            check=False,
            capture_output=True,
        )
        self._running = False

    def destroy(self) -> None:
        """Stop and delete everything."""
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
