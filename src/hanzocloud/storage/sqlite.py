"""One SQLCipher connection: how it is opened, budgeted, and what its errors mean."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import sqlcipher3
from sqlalchemy import exc as sa_exc

from hanzocloud import sqlfunctions
from hanzocloud.inline_sqlite import sqlite_code
from hanzocloud.storage.shm import Connection, connect_counted
from hanzocloud.storage.walfiles import WAL_SIZE_LIMIT, keep_wal_files

# Tenant engines run sqlcipher3 connections, whose DB-API exception classes SQLAlchemy's
# adapters do not recognise: they arrive unwrapped. Catch these tuples, never one family alone.
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sa_exc.IntegrityError, sqlcipher3.IntegrityError)
OPERATIONAL_ERRORS: tuple[type[Exception], ...] = (sa_exc.OperationalError,
                                                   sqlcipher3.OperationalError)
# A WAL up to this size is checkpointed on close within about a millisecond.
SHORT_WAL_BYTES = 256 * 1024
# How often (in SQLite VM steps) a transaction with a time budget checks the clock: a short
# statement finishes before the first check; a long one is checked about every 0.1 ms.
PROGRESS_STEPS = 10_000
_SQLITE_INTERRUPT = 9
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6



def is_busy(exc: BaseException) -> bool:
    """Whether a DB error means another connection holds the lock (worth a retry): its
    SQLite result code, extended codes included, is BUSY or LOCKED."""
    code = sqlite_code(exc)
    return code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def interrupted(exc: Exception) -> bool:
    """Whether `exc` is SQLite's "interrupted" (a transaction that outran its budget)."""
    return isinstance(exc, OPERATIONAL_ERRORS) and sqlite_code(exc) == _SQLITE_INTERRUPT


class Budget:
    """`with Budget(raw, seconds):` interrupts the block's statements on the driver
    connection `raw` once the block has run `seconds` (None: never).

    SQLite's progress handler makes the statement running then fail with "interrupted". A
    block that swallowed that error gets it again at its end, so a transaction cut short is
    never taken for a whole one (and committed). A class rather than a generator: every
    inline transaction enters one, and this costs less than half as much."""

    __slots__ = ("raw", "seconds", "deadline", "fired")

    def __init__(self, raw: Any, seconds: float | None) -> None:
        self.raw, self.seconds = raw, seconds
        self.deadline, self.fired = 0.0, False

    def __enter__(self) -> None:
        if self.seconds is not None:
            self.deadline = time.monotonic() + self.seconds
            self.raw.set_progress_handler(self._check, PROGRESS_STEPS)

    def _check(self) -> bool:
        self.fired = self.fired or time.monotonic() > self.deadline
        return self.fired

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self.seconds is None:
            return
        self.raw.set_progress_handler(None, 0)
        if self.fired and exc_type is None:
            exc = sqlcipher3.OperationalError("interrupted")
            exc.sqlite_errorcode = _SQLITE_INTERRUPT
            raise exc


def busy_error(exc: Exception) -> bool:
    """Whether `exc` is a driver error saying the file is locked (worth a retry)."""
    return isinstance(exc, OPERATIONAL_ERRORS) and is_busy(exc)


def _quiet_cipher_log() -> None:
    """SQLCipher writes its own plain-text warnings to stderr (a wrong key, a page failing its
    HMAC), which would break the JSON log stream; the same failures reach the caller as
    exceptions, which are logged. The level is process-wide: set it once."""
    with contextlib.closing(sqlcipher3.connect(":memory:")) as conn:
        conn.execute("PRAGMA cipher_log_level = NONE")


_quiet_cipher_log()


def connect_sqlcipher(path: Path, dek: bytes, *, busy_ms: int = 10_000) -> Connection:
    """Open one SQLCipher connection with a raw key, the standard pragmas and the SQL
    functions of `hanzocloud.sqlfunctions`. Its `-wal` and `-shm` outlive it (see
    `hanzocloud.storage.walfiles`): the WAL is emptied, not deleted, by the last close."""
    conn = connect_counted(path, check_same_thread=False)  # counted: see storage.shm
    try:
        conn.execute(f"PRAGMA key = \"x'{dek.hex()}'\"")
        # Touch the schema so a wrong key fails here, not at the first query.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        conn.executescript("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; "
                           f"PRAGMA busy_timeout = {int(busy_ms)}; PRAGMA synchronous = NORMAL; "
                           f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};")
        keep_wal_files(conn)  # no file created or deleted per open and close (see walfiles)
        sqlfunctions.install(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def wal_is_short(db: Path) -> bool:
    """Whether closing `db` now is cheap enough for the loop thread: closing the last
    connection checkpoints the WAL into the file, and a long WAL means disk writes."""
    try:
        return os.path.getsize(f"{db}-wal") <= SHORT_WAL_BYTES
    except OSError:
        return True
