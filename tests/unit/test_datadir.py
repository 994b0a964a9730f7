"""The data directory is private (gateway/datadir.py): created 0700 with a 0600 database
whatever the umask, and an existing one with loose modes tightened, never loosened."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.datadir import secure_data_dir, write_file_atomic


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask of a careless service manager: everything world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_a_new_data_directory_is_private(tmp_path: Path) -> None:
    data = tmp_path / "a" / "var"
    assert secure_data_dir(data) == []
    assert mode(data) == 0o700
    assert mode(data / "tls") == 0o700
    assert mode(data / "content") == 0o700
    assert mode(data / "gateway.db") == 0o600
    assert (data / "gateway.db").stat().st_size == 0  # an empty SQLite database


@pytest.mark.usefixtures("open_umask")
def test_loose_modes_are_tightened_and_strict_ones_kept(tmp_path: Path) -> None:
    data = tmp_path / "var"
    (data / "tls").mkdir(parents=True)
    (data / "content").mkdir()
    loose = {
        "gateway.db": 0o644,
        "gateway.db-wal": 0o644,
        "gateway.db-shm": 0o664,
        "admin.token": 0o640,
        "integrations.key": 0o644,
        "tls/server.key": 0o644,
        "tls/ca.key": 0o604,
        "content/5fca17e9": 0o644,
    }
    for name, bits in loose.items():
        (data / name).write_bytes(b"x")
        os.chmod(data / name, bits)
    (data / "secrets.key").write_bytes(b"x")
    os.chmod(data / "secrets.key", 0o400)  # stricter than needed: stays
    (data / "tls" / "ca.pem").write_text("public")
    os.chmod(data / "tls" / "ca.pem", 0o644)
    os.chmod(data, 0o755)
    changed = secure_data_dir(data)
    assert set(changed) == {".", "tls", "content", *loose}
    for name in loose:
        assert mode(data / name) == 0o600, name
    assert mode(data / "secrets.key") == 0o400
    assert mode(data / "tls" / "ca.pem") == 0o644  # public, and unreachable inside 0700
    assert mode(data) == 0o700
    assert secure_data_dir(data) == []  # idempotent


def test_sqlite_gives_its_wal_the_database_mode(tmp_path: Path) -> None:
    """Why creating gateway.db 0600 up front is enough: SQLite copies its mode to the
    -wal and -shm files it creates (checked here with the real library)."""
    import sqlite3

    data = tmp_path / "var"
    old = os.umask(0o022)
    try:
        secure_data_dir(data)
        conn = sqlite3.connect(data / "gateway.db")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        assert mode(data / "gateway.db-wal") == 0o600
        assert mode(data / "gateway.db-shm") == 0o600
        conn.close()
    finally:
        os.umask(old)


def test_files_are_written_whole_or_not_at_all(tmp_path: Path) -> None:
    """write_file_atomic: a rename replaces, ``exclusive`` never does, and a failure leaves
    the old file and no temporary file (a full disk fails the same way, at the write)."""
    path = tmp_path / "admin.token"
    write_file_atomic(path, b"first\n", exclusive=True)
    assert path.read_bytes() == b"first\n"
    assert mode(path) == 0o600
    with pytest.raises(FileExistsError):
        write_file_atomic(path, b"second\n", exclusive=True)
    assert path.read_bytes() == b"first\n"
    write_file_atomic(path, b"third\n", mode=0o644, sync=False)
    assert (path.read_bytes(), mode(path)) == (b"third\n", 0o644)
    (tmp_path / "a-directory").mkdir()
    with pytest.raises(IsADirectoryError):
        write_file_atomic(tmp_path / "a-directory", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory", "admin.token"]
