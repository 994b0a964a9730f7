"""Run a real gateway for tests and benchmarks: in-process (fast, services reachable) or as
a subprocess (kill -9, the single binary).  Every port is ephemeral on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import msgspec
import trio

from gateway.app import RunInfo, run_gateway
from gateway.config import GatewayConfig
from gateway.services.bundle import Services

__all__ = ["TestGateway", "gateway_process", "open_test_gateway"]

EPHEMERAL = {
    "host": "127.0.0.1",
    "tls_port": 0,
    "mqtt_tls_port": 0,
    "dev_http_port": 0,
    "dev_mqtt_port": 0,
    "api_port": 0,
}


class TestGateway:
    """Handles for a running gateway: ports, the admin token, the CA file."""

    __test__ = False  # not a pytest class

    def __init__(self, info: RunInfo, services: Services | None) -> None:
        self.info = info
        self._services = services

    @property
    def services(self) -> Services:
        assert self._services is not None, "a subprocess gateway has no in-process services"
        return self._services

    @property
    def ports(self) -> dict[str, int]:
        return self.info.ports

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}/api/v1"

    @property
    def admin_token(self) -> str:
        return Path(self.info.admin_token_file).read_text().strip()

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    @property
    def ca(self) -> str:
        return self.info.ca

    async def long_poll_waiting(
        self, identity: str, cid: str | None = None, timeout_s: float = 10.0
    ) -> None:
        """Return once a long-poll of ``identity`` waits in this process's control hub: a
        value set afterwards must wake it (the wake-up path, not the at-once answer)."""
        connector = cid or self.info.demo_connector
        assert connector is not None, "no connector given and no demo connector"
        key = (connector, identity)
        with trio.fail_after(timeout_s):
            while not self.services.control.long_polls(key):  # noqa: ASYNC110 - no event to await
                await trio.sleep(0.005)

    def fqdn(self, cid: str | None = None) -> str:
        return f"{cid or self.info.demo_connector}.m2.{self.info.base_domain}"

    def devmode_fqdn(self, cid: str | None = None) -> str:
        return f"{cid or self.info.demo_connector}.devmode-m2.{self.info.base_domain}"


@asynccontextmanager
async def open_test_gateway(
    data: Path, *, dev: bool = True, synchronous: str = "NORMAL", **overrides: Any
) -> AsyncIterator[TestGateway]:
    """Start the whole gateway inside the current Trio run; stop it on exit."""
    values: dict[str, Any] = {
        **EPHEMERAL,
        "data": str(data),
        "dev": dev,
        "synchronous": synchronous,
        **overrides,
    }
    config = msgspec.convert(values, GatewayConfig)
    async with trio.open_nursery() as nursery:
        running = await nursery.start(run_gateway, config)
        try:
            yield TestGateway(running.info, running.services)
        finally:
            nursery.cancel_scope.cancel()


@contextmanager
def gateway_process(
    data: Path,
    *,
    command: list[str] | None = None,
    dev: bool = True,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    workers: int = 1,
) -> Iterator[tuple[subprocess.Popen[bytes], TestGateway]]:
    """Start ``gateway serve`` (or ``command``) as a child with ephemeral ports and wait for
    its ``run.json`` (a multi-process node writes it once every process is ready).  Yields
    the process and its handles; terminates it on exit.  ``workers`` > 1 runs the node of
    docs/architecture.md "The node" (``info.processes`` lists its processes)."""
    run_json = data / "run.json"
    run_json.unlink(missing_ok=True)
    cmd = command or [sys.executable, "-m", "gateway"]
    args = [
        *cmd,
        "serve",
        "--data",
        str(data),
        "--host",
        "127.0.0.1",
        "--tls-port",
        "0",
        "--mqtt-tls-port",
        "0",
        "--api-port",
        "0",
        "--workers",
        str(workers),
        *(["--dev", "--dev-http-port", "0", "--dev-mqtt-port", "0"] if dev else []),
        *extra,
    ]
    # stderr goes to a file, not a pipe: nobody drains a pipe while the test runs, and a
    # full pipe would block every process of the gateway in its next log line
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env if env is not None else os.environ.copy(),
        )
        try:
            deadline = time.monotonic() + timeout
            while not run_json.exists():
                if proc.poll() is not None:
                    err.seek(0)
                    text = err.read().decode(errors="replace")
                    raise RuntimeError(f"gateway exited with {proc.returncode}: {text[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError("gateway did not start in time")
                time.sleep(0.05)
            info = msgspec.convert(json.loads(run_json.read_text()), RunInfo)
            yield proc, TestGateway(info, None)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
