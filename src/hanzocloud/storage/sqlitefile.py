"""Read an open database's files through SQLite's own handle, never a descriptor of our own.

POSIX record locks belong to a process and a file, not to a descriptor: when a process
closes *any* descriptor of a file, every lock it holds on that file is gone, SQLite's
included. Code that opens `<db>-shm` to read the wal-index header, or the main file to copy
it, and closes it again, silently drops the locks of every connection this process has on
that database. Another process could then take the file for its own first connection and
reset the wal-index under this one's readers, or change its journal mode under them.

`SqliteFile` reads through the `sqlite3_file` that SQLite opened for one connection
(`SQLITE_FCNTL_FILE_POINTER`): the main file with its `xRead`, and the wal-index through the
mapping its `xShmMap` returns, which is the one SQLite's readers use. The method table is
SQLite's public, versioned VFS interface; the connection's `sqlite3 *` is reached as in
`hanzocloud.storage.walfiles`, and only where its probe passed.

The `-wal` file carries no locks (SQLite locks the main file and the `-shm` only), so it can
be read with an ordinary open.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable
from pathlib import Path

import sqlcipher3
import structlog

from hanzocloud.storage import walfiles

log = structlog.get_logger("hanzocloud.storage")

_FILE_POINTER = 7  # SQLITE_FCNTL_FILE_POINTER
_WAL_INDEX_REGION = 32768  # the wal-index is mapped in regions of this size
_CHUNK = 1 << 20  # bytes per xRead when copying the main file

_File = ctypes.c_void_p
_Size = ctypes.c_int64


class _Methods(ctypes.Structure):
    """The head of `sqlite3_io_methods`, up to `xShmMap` (version 2 and later)."""

    _fields_ = [
        ("iVersion", ctypes.c_int),
        ("xClose", ctypes.c_void_p),
        ("xRead", ctypes.CFUNCTYPE(ctypes.c_int, _File, ctypes.c_void_p, ctypes.c_int, _Size)),
        ("xWrite", ctypes.c_void_p),
        ("xTruncate", ctypes.c_void_p),
        ("xSync", ctypes.c_void_p),
        ("xFileSize", ctypes.CFUNCTYPE(ctypes.c_int, _File, ctypes.POINTER(_Size))),
        ("xLock", ctypes.c_void_p),
        ("xUnlock", ctypes.c_void_p),
        ("xCheckReservedLock", ctypes.c_void_p),
        ("xFileControl", ctypes.c_void_p),
        ("xSectorSize", ctypes.c_void_p),
        ("xDeviceCharacteristics", ctypes.c_void_p),
        ("xShmMap", ctypes.CFUNCTYPE(ctypes.c_int, _File, ctypes.c_int, ctypes.c_int,
                                     ctypes.c_int, ctypes.POINTER(ctypes.c_void_p))),
    ]


class SqliteFile:
    """The main file of one connection, read through SQLite's handle of it.

    It owns the connection from here on: `close` closes both, after a read in progress,
    and no read starts once it has begun, so none follows the handle into freed memory.
    The connection must have read the database once (so its wal-index is mapped) before
    `wal_index` is asked.
    """

    def __init__(self, conn: sqlcipher3.Connection) -> None:
        lib = walfiles.sqlite_library()
        if lib is None:
            raise OSError("SQLite's own file handles cannot be reached from this binding")
        pointer = ctypes.c_void_p()
        code = lib.sqlite3_file_control(walfiles.connection_pointer(conn), b"main",
                                        _FILE_POINTER, ctypes.byref(pointer))
        if code != 0 or not pointer.value:
            raise OSError(f"SQLITE_FCNTL_FILE_POINTER failed (code {code})")
        methods_at = ctypes.c_void_p.from_address(pointer.value).value
        if not methods_at:
            raise OSError("the database file is not open")
        methods = _Methods.from_address(methods_at)
        if methods.iVersion < 2:  # no shared-memory methods
            raise OSError(f"the VFS's io methods are version {methods.iVersion}, not 2+")
        self._conn: sqlcipher3.Connection | None = conn
        self._file = pointer.value
        self._methods = methods
        self._lock = threading.Lock()

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            raise sqlcipher3.OperationalError(f"{what} failed (SQLite code {code})")

    def _open_file(self) -> int:
        if self._conn is None:
            raise sqlcipher3.ProgrammingError("the connection is closed")
        return self._file

    def wal_index(self, size: int) -> bytes | None:
        """The first `size` bytes of the wal-index, or None when it has no region yet."""
        with self._lock:
            region = ctypes.c_void_p()
            self._check(self._methods.xShmMap(self._open_file(), 0, _WAL_INDEX_REGION, 0,
                                              ctypes.byref(region)), "xShmMap")
            return None if not region.value else ctypes.string_at(region.value, size)

    def read_all(self) -> bytes:
        """The main file's bytes as they are on disk (SQLCipher's pages stay encrypted)."""
        with self._lock:
            file = self._open_file()
            size = _Size()
            self._check(self._methods.xFileSize(file, ctypes.byref(size)), "xFileSize")
            image = bytearray(size.value)
            buffer = (ctypes.c_char * len(image)).from_buffer(image)
            for offset in range(0, len(image), _CHUNK):
                amount = min(_CHUNK, len(image) - offset)
                self._check(self._methods.xRead(file, ctypes.byref(buffer, offset), amount,
                                                offset), "xRead")
            del buffer  # release the export before the bytearray is converted
            return bytes(image)

    def close(self) -> None:
        """Close the connection, once a read in progress has finished. Reads from then on
        raise ProgrammingError at once: they never wait for the close itself (a last
        connection's close checkpoints, which may take a while)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def shm_file(db: Path) -> Callable[[int], bytes | None]:
    """A wal-index reader that opens `<db>-shm` itself (its first n bytes; None if there is
    no `-shm`): for a database no connection of this process has open, or the fallback."""

    def read(size: int) -> bytes | None:
        try:
            with open(f"{db}-shm", "rb") as fh:
                return fh.read(size)
        except FileNotFoundError:
            return None

    return read


class OpenedFile:
    """The fallback where SQLite's handles cannot be reached: the same reads, done by
    opening the files. Each close drops this process's SQLite locks on the file (see
    above), which is only harmless while no other process opens the database."""

    def __init__(self, conn: sqlcipher3.Connection, path: Path) -> None:
        self._conn, self.path = conn, path
        self.wal_index = shm_file(path)

    def read_all(self) -> bytes:
        return self.path.read_bytes()

    def close(self) -> None:
        self._conn.close()


def file_of(conn: sqlcipher3.Connection, path: Path) -> SqliteFile | OpenedFile:
    """`SqliteFile(conn)` for the database at `path`, or the `OpenedFile` fallback (with a
    warning, once per process) where this binding does not allow it."""
    try:
        return SqliteFile(conn)
    except OSError as exc:
        _warn_fallback(str(exc))
        return OpenedFile(conn, path)


@functools.cache
def _warn_fallback(reason: str) -> None:
    log.warning("sqlite_file_handles_unavailable", reason=reason,
                consequence="database files are read by opening them, which drops this "
                            "process's locks on them: no other process may open them")
