"""The data directory is private to the gateway's user (docs/decisions.md "Private by
default").

It holds the database (device tokens' hashes, passwords' scrypt hashes, set values, the
event log), the admin token, the node's secret key, the TLS private keys and the content
blobs.  :func:`secure_data_dir` runs once at start, before anything in it is opened:

* the directory itself and its ``tls/`` and ``content/`` folders become 0700, so no other
  local user can even list them;
* every file the gateway writes becomes 0600 when it is group- or world-accessible (a data
  directory restored from a backup, copied with ``cp -r``, or written by release 0.1.0,
  whose database files were 0644);
* ``gateway.db`` is created 0600 if it does not exist yet, because SQLite creates its
  ``-wal`` and ``-shm`` files with the database file's permissions.

Files are tightened, never loosened: a mode stricter than 0600 (0400, say) stays.  The
public files (``tls/ca.pem``, ``tls/server.pem``, ``run.json``) keep their modes; they are
unreachable for others inside a 0700 directory anyway, and devices get ``ca.pem`` from the
operator, not from the gateway's disk.

Every file the gateway creates in it is written whole or not at all
(:func:`write_file_atomic`): a full disk or a crash halfway leaves the old file (or none)
and no temporary file, never an empty ``admin.token`` or half a key (docs/decisions.md
"Disk full").
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "secure_data_dir", "write_file_atomic"]

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
DATABASE = "gateway.db"
# What the gateway keeps in the directory's top level and in tls/ that is secret.
_PRIVATE_FILES = (
    DATABASE,
    f"{DATABASE}-wal",
    f"{DATABASE}-shm",
    "admin.token",
    "secrets.key",
    "integrations.key",  # release 0.1.0's name of secrets.key
    "tls/ca.key",
    "tls/server.key",
)
_PRIVATE_DIRS = ("tls", "content")


def _tighten(path: Path, mode: int) -> bool:
    """Remove every permission bit outside ``mode``; True when something changed."""
    try:
        current = stat.S_IMODE(path.lstat().st_mode)
    except FileNotFoundError:
        return False
    if path.is_symlink() or current & ~mode == 0:
        return False
    os.chmod(path, current & mode)
    return True


def secure_data_dir(data: Path) -> list[str]:
    """Create ``data`` (0700) or tighten an existing one as the module docstring says.

    Returns the paths (relative to ``data``) whose permissions changed, which the caller
    logs.  Raises ``OSError`` when the directory cannot be created or changed (not ours).
    """
    data.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    for name in _PRIVATE_DIRS:
        (data / name).mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    wanted = [(".", PRIVATE_DIR_MODE)]
    wanted += [(name, PRIVATE_DIR_MODE) for name in _PRIVATE_DIRS]
    wanted += [(name, PRIVATE_FILE_MODE) for name in _PRIVATE_FILES]
    wanted += [
        (f"content/{blob.name}", PRIVATE_FILE_MODE)
        for blob in (data / "content").iterdir()
        if blob.is_file()
    ]
    changed = [name for name, mode in wanted if _tighten(data / name, mode)]
    db = data / DATABASE
    if not db.exists():
        # An empty file is an empty SQLite database; its mode is what -wal/-shm inherit.
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    if changed:
        log.warning(
            "data directory %s: made private (0700 directories, 0600 files): %s",
            data,
            ", ".join(changed),
        )
    return changed


def write_file_atomic(
    path: Path,
    data: bytes,
    *,
    mode: int = PRIVATE_FILE_MODE,
    exclusive: bool = False,
    sync: bool = True,
) -> None:
    """Make ``path`` hold ``data``, whole or not at all.

    The bytes go to a temporary file next to ``path`` (created with ``mode`` before any
    byte lands in it), are fsynced unless ``sync`` is false, and the file then replaces
    ``path`` by a rename — or, ``exclusive``, becomes it by a hard link, which raises
    ``FileExistsError`` when ``path`` exists (the first creator wins, as with ``O_EXCL``).

    Errors: ``OSError`` as the system reports it (``ENOSPC`` on a full disk, see
    :func:`gateway.errors.is_disk_full`).  Whatever happens the temporary file is removed,
    and ``path`` is either untouched or complete.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a rename
