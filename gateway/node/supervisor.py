"""The supervisor: ``gateway serve`` with more than one worker (docs/architecture.md
"The node").

Theory of operation
-------------------
The supervisor is deliberately not a Trio program, and it starts no thread: it takes the
data directory's lock, makes sure the development PKI and the admin token exist, binds every
listening socket once (``gateway/frontdoor/bind.py``), then **forks** the store owner
(``owner.py``) and, once the owner is ready, the workers (``worker.py``).  Forking a process
that has no event loop and no thread is safe, and it works the same in the single binary,
where re-executing ``sys.executable`` would unpack the archive again.

Every child asks the kernel for ``SIGKILL`` when the supervisor dies
(``prctl(PR_SET_PDEATHSIG)``) and checks right after that its parent is still the
supervisor, so a supervisor killed with ``kill -9`` leaves no orphan holding a port or the
database.  The supervisor keeps the listening sockets open, so a dying worker never closes a
port: its devices reconnect and the other workers accept them.

Signals are turned into bytes on a wake-up pipe (``signal.set_wakeup_fd``), and the main
loop waits in ``select`` on that pipe and on the children's readiness pipes:

* a child exits → it is restarted; at once if it had run for :data:`STABLE_S`, else after a
  back-off that doubles from :data:`RESTART_FIRST_S` to :data:`RESTART_MAX_S` (a crash loop:
  logged as an error and shown in ``run.json``);
* SIGTERM or SIGINT → every worker is told to drain (SIGTERM: stop accepting, finish
  in-flight acknowledgements) and waited for, then the store owner (its writer commits
  what is queued), then ``run.json`` is removed and the supervisor exits 0;
* SIGHUP → forwarded to every child: each re-reads the node certificate
  (``systemctl reload``).

``run.json`` (``gateway/app.py`` ``RunInfo``) carries the supervisor's pid and lists every
process with its restarts; it is rewritten whenever a process (re)starts.

Disk full (docs/decisions.md "Disk full"): a ``run.json`` the full disk refuses is not
left stale (removed), the ports are logged instead, and the loop tries it again every
``RUN_JSON_RETRY_S`` until it is written.  The store owner opens its database on a full
disk with its space reserve, so an owner restarted then comes back, serving reads and
refusing writes.  An owner that still cannot start reports ``error: cannot start: ...`` on
its readiness pipe: on the node's first start the supervisor stops and
:func:`run_node` raises :class:`StartFailed` with that line (``gateway serve`` prints it,
exit status 1); later it is logged and the owner restarted with the usual back-off, until
space is back.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from gateway.app import (
    RUN_JSON_RETRY_S,
    ProcessInfo,
    RunInfo,
    ensure_admin_token,
    run_info,
    run_json_refused,
    write_run_json,
)
from gateway.config import GatewayConfig
from gateway.frontdoor.bind import BoundSockets, bind_sockets
from gateway.node.lock import lock_data_dir
from gateway.tls.pki import DevPKI, ensure_dev_pki

__all__ = [
    "RESTART_FIRST_S",
    "RESTART_MAX_S",
    "STABLE_S",
    "StartFailed",
    "Supervisor",
    "raise_fd_limit",
    "run_node",
]

log = logging.getLogger("gateway.node")

STABLE_S = 10.0  # a child that ran this long before dying is restarted at once
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
READY_TIMEOUT_S = 120.0  # a child that is not ready by then is killed (and restarted)
WORKER_DRAIN_S = 15.0  # the front door's grace is 5 s; then SIGKILL
OWNER_STOP_S = 60.0  # the writer commits what is queued
_PR_SET_PDEATHSIG = 1
START_ERROR = "error: "  # how a child's readiness line says it cannot start


class StartFailed(Exception):
    """The node's first start ended before it served; ``str()`` is the one line to print
    (the store owner's, e.g. its database cannot be opened on a full disk)."""


class _Child:
    __slots__ = (
        "failed",
        "failures",
        "index",
        "next_start",
        "pid",
        "ready",
        "ready_fd",
        "restarts",
        "role",
        "started",
        "started_wall",
    )

    def __init__(self, role: str, index: int) -> None:
        self.role = role
        self.index = index
        self.pid = 0
        self.ready_fd: int | None = None
        self.ready = False
        self.started = 0.0
        self.started_wall = 0.0
        self.restarts = -1  # the first start is not a restart
        self.failures = 0  # quick exits in a row
        self.failed: str | None = None  # the line of a start that failed (START_ERROR...)
        self.next_start: float | None = time.monotonic()

    @property
    def name(self) -> str:
        return "store owner" if self.role == "store" else f"worker {self.index}"

    def info(self) -> ProcessInfo:
        delay = 0.0
        if self.next_start is not None:
            delay = max(0.0, self.next_start - time.monotonic())
        return ProcessInfo(
            role=self.role,
            index=self.index,
            pid=self.pid,
            started=self.started_wall,
            restarts=max(self.restarts, 0),
            crash_loop=self.failures >= 3,
            next_start_s=round(delay, 3),
        )


def raise_fd_limit() -> None:
    """Use the hard open-file limit (children inherit it): connections are descriptors."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            log.warning("could not raise the open-file limit from %d to %d", soft, hard)


def _die_with_parent(parent: int) -> None:
    """In a child: SIGKILL when the supervisor dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os.write(2, b"gateway: prctl(PR_SET_PDEATHSIG) failed\n")
    if os.getppid() != parent:
        os._exit(1)


class Supervisor:
    def __init__(
        self,
        config: GatewayConfig,
        sockets: BoundSockets,
        workers: int,
        lock_fd: int,
        pki: DevPKI,
    ) -> None:
        self.config = config
        self.sockets = sockets
        self.lock_fd = lock_fd
        self.pki = pki
        self.pid = os.getpid()
        self.owner = _Child("store", 0)
        self.workers = [_Child("worker", i) for i in range(1, workers + 1)]
        self.demo: str | None = None
        self.announced = False
        self._signals: list[int] = []
        self._stopping = False
        self._first_owner_start = True
        self._start_failed: str | None = None  # the node cannot start: this line says why
        self._run_json_retry: float | None = None  # when run.json is tried again (disk full)

    @property
    def children(self) -> list[_Child]:
        return [self.owner, *self.workers]

    # -- signals -----------------------------------------------------------------------

    def _install_signals(self) -> int:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        return r

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    # -- children ----------------------------------------------------------------------

    def _fork(self, child: _Child) -> None:
        r, w = os.pipe()
        reset = self._first_owner_start
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.close(r)
                self._child_setup()
                code = self._child_body(child, w, reset=reset)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(w)
        if child.role == "store":
            self._first_owner_start = False
        child.pid = pid
        child.ready_fd = r
        child.ready = False
        child.started = time.monotonic()
        child.started_wall = time.time()
        child.restarts += 1
        child.next_start = None
        child.failed = None
        log.info("%s started (pid %d)", child.name, pid)

    def _child_setup(self) -> None:
        _die_with_parent(self.pid)
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor orders the shutdown
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the child's Trio run handles it
        os.close(self.lock_fd)  # the lock stays with the supervisor's descriptor
        for other in self.children:
            if other.ready_fd is not None:
                os.close(other.ready_fd)
                other.ready_fd = None

    def _child_body(self, child: _Child, ready_fd: int, *, reset: bool) -> int:
        if child.role == "store":
            from gateway.node.owner import owner_main

            owner_main(self.config, self.sockets, ready_fd, reset=reset)
        else:
            from gateway.node.worker import worker_main

            worker_main(self.config, child.index, self.sockets, ready_fd)
        return 0

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = next((c for c in self.children if c.pid == pid), None)
            if child is None:
                continue
            self._exited(child, status)

    def _exited(self, child: _Child, status: int) -> None:
        how = (
            f"signal {signal.Signals(os.WTERMSIG(status)).name}"
            if os.WIFSIGNALED(status)
            else f"exit status {os.waitstatus_to_exitcode(status)}"
        )
        if child.ready_fd is not None:
            self._ready(child)  # a line it wrote before exiting (why it could not start)
        child.pid = 0
        child.ready = False
        if child.ready_fd is not None:
            os.close(child.ready_fd)
            child.ready_fd = None
        if self._stopping:
            log.info("%s stopped (%s)", child.name, how)
            return
        if child.failed is not None and not self.announced:
            self._start_failed = child.failed  # the first start: give up with its line
            return
        now = time.monotonic()
        if now - child.started < STABLE_S:
            child.failures += 1
        else:
            child.failures = 0
        delay = 0.0 if child.failures == 0 else RESTART_FIRST_S * 2 ** (child.failures - 1)
        delay = min(delay, RESTART_MAX_S)
        child.next_start = now + delay
        if child.failures >= 3:
            log.error(
                "%s is crash-looping (%d quick exits in a row, last: %s); next start in %.1f s",
                child.name,
                child.failures,
                how,
                delay,
            )
        else:
            log.warning("%s (pid exited: %s); restarting in %.1f s", child.name, how, delay)
        self._publish()

    def _ready(self, child: _Child) -> None:
        assert child.ready_fd is not None
        try:
            data = os.read(child.ready_fd, 4096)
        except BlockingIOError:
            return
        if not data:  # died before it was ready: the SIGCHLD path restarts it
            os.close(child.ready_fd)
            child.ready_fd = None
            return
        os.close(child.ready_fd)
        child.ready_fd = None
        line = data.decode(errors="replace").strip()
        if line.startswith(START_ERROR):  # it exits next: the SIGCHLD path handles that
            child.failed = line
            log.log(
                logging.INFO if not self.announced else logging.ERROR,
                "%s cannot start: %s",
                child.name,
                line.removeprefix(START_ERROR),
            )
            return
        child.ready = True
        if child.role == "store":
            self.demo = data.decode().strip() or None
        log.info("%s ready (pid %d)", child.name, child.pid)
        self._publish()

    def _due(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.pid or child.next_start is None or child.next_start > now:
                continue
            if child.role == "worker" and not (self.owner.ready or self.announced):
                continue  # the first workers start once the store owner is ready
            self._fork(child)
        for child in self.children:
            if child.pid and not child.ready and now - child.started > READY_TIMEOUT_S:
                log.error("%s not ready after %.0f s: killing it", child.name, READY_TIMEOUT_S)
                self._kill(child, signal.SIGKILL)

    def _kill(self, child: _Child, signum: int) -> None:
        if child.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    # -- run.json ----------------------------------------------------------------------

    def info(self) -> RunInfo:
        return run_info(
            self.config,
            self.pki,
            self.sockets.ports,
            self.demo,
            workers=len(self.workers),
            processes=[c.info() for c in self.children],
        )

    def _publish(self) -> None:
        """Write ``run.json`` (once announced); on a full disk warn once with the ports
        and try again every ``RUN_JSON_RETRY_S`` (see the module docstring)."""
        if not self.announced:
            return
        info = self.info()
        if write_run_json(self.config.data_dir, info):
            if self._run_json_retry is not None:
                log.info("%s written: space is back", self.config.data_dir / "run.json")
            self._run_json_retry = None
            return
        if self._run_json_retry is None:
            run_json_refused(self.config.data_dir, info)
        self._run_json_retry = time.monotonic() + RUN_JSON_RETRY_S

    # -- the loop ----------------------------------------------------------------------

    def run(self, on_ready: Callable[[RunInfo], None]) -> int:
        wake = self._install_signals()
        try:
            while True:
                if self._start_failed is not None:
                    self._shutdown(wake)
                    raise StartFailed(self._start_failed)
                self._due()
                retry = self._run_json_retry
                if retry is not None and retry <= time.monotonic():
                    self._publish()
                if not self.announced and all(c.ready for c in self.children):
                    self.announced = True
                    self._publish()
                    on_ready(self.info())
                if not self.announced and self.owner.failures >= 3:
                    log.error("the store owner cannot start; giving up (see the errors above)")
                    self._shutdown(wake)
                    return 1
                self._wait(wake, self._timeout())
                signals, self._signals = self._signals, []
                if signal.SIGCHLD in signals:
                    self._reap()
                if signal.SIGHUP in signals:
                    log.info("SIGHUP: every process re-reads the node certificate")
                    for child in self.children:
                        self._kill(child, signal.SIGHUP)
                stop = [s for s in signals if s not in (signal.SIGCHLD, signal.SIGHUP)]
                if stop:
                    log.info("%s: shutting down", signal.Signals(stop[0]).name)
                    self._shutdown(wake)
                    return 0
        finally:
            signal.set_wakeup_fd(-1)
            os.close(wake)
            (self.config.data_dir / "run.json").unlink(missing_ok=True)
            self.sockets.close()

    def _timeout(self) -> float:
        now = time.monotonic()
        starts = [c.next_start - now for c in self.children if c.next_start is not None]
        if self._run_json_retry is not None:
            starts.append(self._run_json_retry - now)
        return max(0.0, min([1.0, *starts]))

    def _wait(self, wake: int, timeout: float) -> None:
        fds = [wake] + [c.ready_fd for c in self.children if c.ready_fd is not None]
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:  # pragma: no cover (PEP 475 retries)
            readable = []
        if wake in readable:
            try:
                while os.read(wake, 512):
                    pass
            except BlockingIOError:
                pass
        for child in self.children:
            if child.ready_fd is not None and child.ready_fd in readable:
                self._ready(child)

    def _shutdown(self, wake: int) -> None:
        """Drain the workers, then stop the store owner (see the module docstring)."""
        self._stopping = True
        for group, grace in ((self.workers, WORKER_DRAIN_S), ([self.owner], OWNER_STOP_S)):
            for child in group:
                self._kill(child, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while any(c.pid for c in group):
                left = deadline - time.monotonic()
                if left <= 0:
                    for child in group:
                        if child.pid:
                            log.error("%s did not stop in %.0f s: killing it", child.name, grace)
                            self._kill(child, signal.SIGKILL)
                    deadline = time.monotonic() + 5.0
                self._wait(wake, min(max(left, 0.05), 0.5))
                self._signals.clear()
                self._reap()


def _prepare_files(config: GatewayConfig) -> DevPKI:
    data = config.data_dir
    pki = ensure_dev_pki(data / "tls", config.base_domain)
    ensure_admin_token(data)
    return pki


def run_node(config: GatewayConfig, workers: int, on_ready: Callable[[RunInfo], None]) -> int:
    """Run a node of ``workers`` workers until SIGTERM/SIGINT; the exit status.  Raises
    :class:`~gateway.node.lock.DataDirLocked` and :class:`~gateway.frontdoor.bind.BindError`
    before anything starts, ``OSError`` when the development PKI or the admin token cannot
    be written (``ENOSPC`` on a full disk), and :class:`StartFailed` when the store owner
    cannot start (its one line)."""
    data = Path(config.data)
    lock_fd = lock_data_dir(data)
    try:
        raise_fd_limit()
        pki = _prepare_files(config)
        sockets = bind_sockets(config)
        return Supervisor(config, sockets, workers, lock_fd, pki).run(on_ready)
    finally:
        try:
            os.close(lock_fd)
        except OSError as exc:  # pragma: no cover
            if exc.errno != errno.EBADF:
                raise
