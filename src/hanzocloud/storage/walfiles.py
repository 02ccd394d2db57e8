"""Keep a database's `-wal` and `-shm` files between opens (SQLITE_FCNTL_PERSIST_WAL).

By default the last connection to close a WAL database deletes its `-wal` and `-shm`, and
the next open creates both again. On a tenant's cold open those two file creations, and the
two unlinks at its close, cost more than everything else in the open together, and nearly
all of its spread: creating an inode waits on the filesystem's journal, which every other
writer on the disk shares. With persistence on, the last close still checkpoints, then
truncates the WAL to zero bytes (`journal_size_limit` is set for that) instead of deleting
it; the `-shm` stays too (emptied by `trim_wal_index`, below, once no connection is left),
and the next open resets it as SQLite always does for a first connection. A closed database
is as complete in its main file as before.

The `sqlcipher3` binding offers no file-control call, but its library exports
`sqlite3_file_control`, and its connection object holds the `sqlite3 *` handle as its first
field after the object header (the layout of every pysqlite release). That is checked once
per process on a probe connection, against `sqlite3_db_filename`; if any part of the check
fails, connections keep SQLite's default, and only the cold opens are slower.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import os
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

import sqlcipher3
import structlog
from sqlcipher3 import _sqlite3

log = structlog.get_logger("hanzocloud.storage")

_PERSIST_WAL = 10  # SQLITE_FCNTL_PERSIST_WAL
_HANDLE_OFFSET = object.__basicsize__  # the connection's first field: its `sqlite3 *`
# The WAL's size once a checkpoint restarts it: a bound on the disk it keeps between bursts,
# and, being set (not -1), what makes the last close truncate it to zero bytes.
WAL_SIZE_LIMIT = 8 * 1024 * 1024


def connection_pointer(conn: sqlcipher3.Connection) -> int:
    return ctypes.c_void_p.from_address(id(conn) + _HANDLE_OFFSET).value or 0


@functools.cache
def sqlite_library() -> Any | None:
    """The sqlite3 library inside sqlcipher3, if a probe shows its handles can be reached."""
    try:
        lib = ctypes.CDLL(_sqlite3.__file__)
        lib.sqlite3_file_control.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                             ctypes.c_void_p]
        lib.sqlite3_file_control.restype = ctypes.c_int
        lib.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.sqlite3_db_filename.restype = ctypes.c_char_p
        lib.sqlite3_vfs_find.argtypes = [ctypes.c_char_p]
        lib.sqlite3_vfs_find.restype = ctypes.c_void_p
    except (OSError, AttributeError) as exc:
        log.warning("persistent_wal_unavailable", reason=str(exc))
        return None
    try:
        with tempfile.TemporaryDirectory(prefix="hanzocloud-probe-") as folder:
            path = os.path.realpath(os.path.join(folder, "probe.db"))
            with contextlib.closing(sqlcipher3.connect(path)) as probe:
                handle = connection_pointer(probe)
                # A `sqlite3` begins with its VFS pointer: check that before SQLite sees it.
                ok = (handle > 4096 and handle % ctypes.alignment(ctypes.c_void_p) == 0
                      and ctypes.c_void_p.from_address(handle).value
                      == lib.sqlite3_vfs_find(None)
                      and lib.sqlite3_db_filename(handle, b"main") == os.fsencode(path))
    except (OSError, sqlcipher3.Error) as exc:  # no writable temp folder, say
        log.warning("persistent_wal_unavailable", reason=f"probe failed: {exc}")
        return None
    if not ok:
        log.warning("persistent_wal_unavailable",
                    reason="the sqlcipher3 connection layout is not the expected one")
        return None
    return lib


def keep_wal_files(conn: sqlcipher3.Connection) -> bool:
    """Make `conn`'s close keep the `-wal` (emptied) and `-shm` files; True if it will.

    Call on a fresh connection, before another thread can use it, that has
    `journal_size_limit` set (`WAL_SIZE_LIMIT`): without a limit the last close would keep
    the WAL's frames rather than empty it."""
    lib = sqlite_library()
    if lib is None:
        return False
    flag = ctypes.c_int(1)
    code: int = lib.sqlite3_file_control(connection_pointer(conn), b"main", _PERSIST_WAL,
                                         ctypes.byref(flag))
    return code == 0


# -- an empty wal-index at rest ---------------------------------------------------------------
#
# The first connection to open a WAL database truncates its `-shm` and writes it out again
# (32 KiB), which frees and reallocates the file's blocks: once a closed file's `-shm` has
# been written back to disk, that is most of a cold open's filesystem time, and its spread.
# `trim_wal_index` empties the `-shm` when the last connection has closed, so a file at rest
# keeps none, and a cold open allocates blocks that are not written back unless it stays
# open. It follows SQLite's own first-connection protocol: a write lock on the wal-index's
# "in use" byte, which every connection holds a read lock on while it has the file open,
# then the truncation. SQLite's openers treat that lock as another opener at work, and retry.
#
# The lock is an open-file-description lock: those conflict with SQLite's (process-owned)
# locks even within this process, so taking it proves that no connection, here or anywhere,
# has the file open. A descriptor whose lock was refused is kept, never closed: closing any
# descriptor of a file drops every process-owned lock this process holds on it (see
# `hanzocloud.storage.sqlitefile`). The next trim of that file reuses it, and closes it once
# its lock is granted, so at most one is kept per file some connection here still has open.

_DMS_BYTE = 128  # SQLite's "in use" byte of the wal-index (UNIX_SHM_DMS)
_DMS_WRITE_LOCK = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, _DMS_BYTE, 1, 0)
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)  # Linux 3.15+
# (device, inode) of a -shm -> descriptors of it that could not be closed safely yet. A file
# replaced while one is kept (a restore) keeps it until the process exits.
_kept: dict[tuple[int, int], list[int]] = {}
_kept_lock = threading.Lock()


def trim_wal_index(db: Path) -> bool:
    """Empty `db`'s `-shm` if no connection (of any process) has the database open; True if
    it was emptied. Call after closing connections; harmless at any time."""
    if _OFD_SETLK is None:
        return False
    shm = f"{db}-shm"
    with _kept_lock:
        try:
            info = os.stat(shm, follow_symlinks=False)
        except OSError:
            return False
        key = (info.st_dev, info.st_ino)
        fds = _kept.pop(key, [])
        if not fds:
            try:
                fd = os.open(shm, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
                opened = os.fstat(fd)
            except OSError:
                return False
            key = (opened.st_dev, opened.st_ino)  # replaced since the stat: take its kept too
            fds = [*_kept.pop(key, []), fd]
        try:
            fcntl.fcntl(fds[0], _OFD_SETLK, _DMS_WRITE_LOCK)
        except OSError:  # a connection has the file open: keep the descriptors for next time
            _kept[key] = fds
            return False
        try:
            os.ftruncate(fds[0], 0)
        except OSError:
            return False
        finally:
            for fd in fds:  # no connection holds a lock on the file (ours was granted)
                os.close(fd)
        return True
