"""Keep a database's `-wal` and `-shm` files between opens (SQLITE_FCNTL_PERSIST_WAL).

By default the last connection to close a WAL database deletes its `-wal` and `-shm`, and
the next open creates both again. On a tenant's cold open those two file creations, and the
two unlinks at its close, cost more than everything else in the open together, and nearly
all of its spread: creating an inode waits on the filesystem's journal, which every other
writer on the disk shares. With persistence on, the last close still checkpoints, then
truncates the WAL to zero bytes (`journal_size_limit` is set for that) instead of deleting
it; the `-shm` stays too (emptied once no connection is left: see `hanzocloud.storage.shm`),
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
import functools
import os
import tempfile
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
