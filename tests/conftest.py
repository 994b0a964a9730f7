"""Shared fixtures: a real store (SQLite in tmp_path, and PostgreSQL: every test using
``store`` or ``services`` runs against both backends), services over it; one development
PKI per test session and a whole gateway using it (``gw``).

PostgreSQL: one throwaway cluster per session (``gateway/testing/postgres.py``), started by
the first test that needs it, and one database per test copied from a migrated template.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import open_services
from gateway.config import GatewayConfig
from gateway.services.bundle import Services
from gateway.store.factory import open_store
from gateway.testing.hosts import HostMap, mapped_hosts
from gateway.testing.postgres import PgCluster, pg_bin_dir
from gateway.testing.server import TestGateway, open_test_gateway
from gateway.tls.pki import ensure_dev_pki


class PgDatabases:
    """The session's PostgreSQL cluster and a fresh database per call of :meth:`new`."""

    TEMPLATE = "gw_template"

    def __init__(self, cluster: PgCluster) -> None:
        import psycopg

        from gateway.store.postgresql.migrations import migrate

        self.cluster = cluster
        self._n = itertools.count(1)
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.TEMPLATE}")
        with psycopg.connect(cluster.url(self.TEMPLATE), autocommit=True) as conn:
            migrate(conn)

    def new(self) -> str:
        """A ``postgresql://`` URL of a new, migrated, empty database."""
        import psycopg

        name = f"t{next(self._n)}"
        with psycopg.connect(self.cluster.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {self.TEMPLATE}")
        return self.cluster.url(name)


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgDatabases]:
    """The session's PostgreSQL (skips the test when the server binaries are missing)."""
    if pg_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries missing (scripts/bootstrap --system)")
    cluster = PgCluster()
    try:
        cluster.start()
        yield PgDatabases(cluster)
    finally:
        cluster.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The ``store`` setting of one backend: "" (SQLite in the data directory) or the URL
    of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return ""
    databases: PgDatabases = request.getfixturevalue("pg")
    return databases.new()


@pytest.fixture
async def store(tmp_path: Path, store_url: str) -> AsyncIterator[Any]:
    """A :class:`~gateway.store.api.Store` of each backend (typed ``Any``: tests reach the
    backend's own attributes, such as ``path`` or ``url``, for their oracles)."""
    async with open_store(store_url, data_dir=tmp_path, synchronous="NORMAL") as s:
        yield s


@pytest.fixture
async def services(tmp_path: Path, store_url: str) -> AsyncIterator[Services]:
    config = GatewayConfig(data=str(tmp_path), synchronous="NORMAL", store=store_url)
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
