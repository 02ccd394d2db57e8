"""A closed database keeps an empty wal-index (`-shm`), and this process counts its connections.

The first connection to open a WAL database truncates its `-shm` and writes it out again
(32 KiB), which frees and reallocates the file's blocks: once a closed file's `-shm` has
been written back to disk, that is most of a cold open's filesystem time, and its spread.
`trim_wal_index` empties the `-shm` once the last connection has closed, so a file at rest
keeps no blocks there, and a cold open allocates blocks that are not written back unless the
file stays open. It follows SQLite's own first-connection protocol: a write lock on the
wal-index's "in use" byte, which every connection holds a read lock on while it has the
file open, then the truncation. SQLite's openers treat that lock as another opener at work
and retry.

Two guards, one per kind of neighbour:
- Connections of other processes: the lock is an open-file-description lock, which the
  kernel refuses while any process-owned lock (SQLite's) is held on the byte.
- Connections of this process: closing any descriptor of a file drops every process-owned
  lock this process holds on it (see `hanzocloud.storage.sqlitefile`), so the `-shm` is not
  even opened while one of them has the database open. `Connection` counts them: every
  connection this process makes to a tenant file comes from `connect_sqlcipher`, which
  uses it. The count is taken before the connection first reads (which is when SQLite
  opens the `-shm`), and dropped after it closes, under the same lock a trim holds.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from pathlib import Path
from typing import Any

import sqlcipher3

_DMS_BYTE = 128  # SQLite's "in use" byte of the wal-index (UNIX_SHM_DMS)
_DMS_WRITE_LOCK = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, _DMS_BYTE, 1, 0)
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)  # Linux 3.15+
# (device, inode) of a database -> connections this process has open on it.
_open_here: dict[tuple[int, int], int] = {}
_lock = threading.Lock()


class Connection(sqlcipher3.Connection):  # type: ignore[misc]  # untyped binding
    """A sqlcipher3 connection that this process counts while it is open (pass it as
    `sqlcipher3.connect(..., factory=Connection)`, then call `count`)."""

    _counted: tuple[int, int] | None = None

    def count(self, path: Path) -> None:
        """Count this connection against the database file at `path` (call before its
        first statement)."""
        info = os.stat(path)
        key = (info.st_dev, info.st_ino)
        with _lock:
            _open_here[key] = _open_here.get(key, 0) + 1
        self._counted = key

    def close(self) -> None:
        try:
            super().close()
        finally:
            key, self._counted = self._counted, None
            if key is not None:
                with _lock:
                    left = _open_here.pop(key) - 1
                    if left:
                        _open_here[key] = left

    def __del__(self) -> None:  # dropped without a close: close (as the binding would) first
        if self._counted is not None:
            self.close()


def open_here(db: Path) -> int:
    """How many counted connections this process has open on `db`."""
    try:
        info = os.stat(db)
    except OSError:
        return 0
    with _lock:
        return _open_here.get((info.st_dev, info.st_ino), 0)


def trim_wal_index(db: Path) -> bool:
    """Empty `db`'s `-shm` if no connection (of any process) has the database open; True if
    it was emptied. Call after closing connections; harmless at any time."""
    if _OFD_SETLK is None:
        return False
    with _lock:  # no connection of this process starts to count (or open) meanwhile
        try:
            info = os.stat(db)
        except OSError:
            return False
        if _open_here.get((info.st_dev, info.st_ino)):
            return False  # one of ours has it: its locks must not be touched
        try:
            fd = os.open(f"{db}-shm", os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.fcntl(fd, _OFD_SETLK, _DMS_WRITE_LOCK)  # refused: another process has it
            os.ftruncate(fd, 0)
        except OSError:
            return False
        finally:
            os.close(fd)  # no connection of this process has the file: no lock here to drop
        return True


def connect_counted(path: Path, **options: Any) -> Connection:
    """`sqlcipher3.connect` for a tenant file, counted (see `Connection`)."""
    conn: Connection = sqlcipher3.connect(str(path), factory=Connection, **options)
    try:
        conn.count(path)
    except BaseException:
        conn.close()
        raise
    return conn
