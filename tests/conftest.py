"""Shared fixtures: a real SQLite store in tmp_path, services over it; one development PKI
per test session and a whole gateway using it (``gw``)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from gateway.app import open_services
from gateway.config import GatewayConfig
from gateway.services.bundle import Services
from gateway.store.sqlite import SqliteStore, open_store
from gateway.testing.hosts import HostMap, mapped_hosts
from gateway.testing.server import TestGateway, open_test_gateway
from gateway.tls.pki import ensure_dev_pki


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store(tmp_path / "gateway.db", synchronous="NORMAL") as s:
        yield s


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    config = GatewayConfig(data=str(tmp_path), synchronous="NORMAL")
    async with open_services(config) as svc:
        yield svc


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One development PKI (CA + server certificate for ``localhost``) for the whole run:
    key generation is the slow part of a gateway start.  Copy it, never use it in place
    (a gateway may write into its ``tls`` directory)."""
    path = tmp_path_factory.mktemp("pki") / "tls"
    ensure_dev_pki(path, "localhost")
    return path


@pytest.fixture
async def gw(tmp_path: Path, pki_dir: Path) -> AsyncIterator[TestGateway]:
    """A whole gateway in the test's Trio run (ephemeral ports on 127.0.0.1), data in
    ``tmp_path/"data"`` with a copy of the session's PKI as ``data/tls``."""
    data = tmp_path / "data"
    shutil.copytree(pki_dir, data / "tls")
    async with open_test_gateway(data) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def hosts() -> Iterator[HostMap]:
    """Connector names mapped to 127.0.0.1 for the test session (``/etc/hosts`` as root);
    the lines are removed when the session ends."""
    with mapped_hosts() as mapped:
        yield mapped


@pytest.fixture
def resolve(hosts: HostMap) -> Callable[..., None]:
    """``resolve(name, ...)`` maps names for clients that connect by host name (SNI and the
    certificate check need it), or skips the test when they cannot be mapped."""

    def need(*names: str) -> None:
        if not hosts.map(*names):
            pytest.skip(f"{', '.join(names)} cannot be mapped to 127.0.0.1 (needs root)")

    return need
