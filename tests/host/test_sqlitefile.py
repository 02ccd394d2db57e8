"""Reading an open database's files through SQLite's own handle (hanzocloud.storage.sqlitefile):
the same bytes as the files hold, and SQLite's locks survive it, where opening and closing
the files drops them."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlcipher3
import structlog

from conftest import sqlite_locks_held
from hanzocloud.replicate import wal
from hanzocloud.storage import connect_sqlcipher, walfiles
from hanzocloud.storage.sqlitefile import OpenedFile, SqliteFile, file_of

KEY = bytes(range(32))


def _written(db: Path) -> sqlcipher3.Connection:
    conn = connect_sqlcipher(db, KEY)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [("x" * 3000,)] * 50)  # several pages
    conn.commit()
    return conn


def test_reads_match_the_files_and_keep_sqlites_locks(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    writer = _written(db)
    own = SqliteFile(connect_sqlcipher(db, KEY))
    state = wal.read_state(db, own.wal_index)
    assert state is not None and state.page_size == 4096
    # The wal-index says what SQLite says: as many frames as a checkpoint finds in the log.
    busy, log, done = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert (busy, log, done) == (0, state.frames, state.frames)
    image = own.read_all()
    assert len(image) == db.stat().st_size > 4096 and b"xxxx" not in image
    assert sqlite_locks_held(db) == (True, True)
    writer.close()
    own.close()
    assert image == db.read_bytes()  # nothing open now: reading the file drops no lock


def test_opening_the_files_instead_drops_the_locks(tmp_path: Path) -> None:
    # What SqliteFile avoids, shown on the fallback: each close of a descriptor of the
    # file drops every lock this process holds on it.
    db = tmp_path / "a.db"
    writer = _written(db)
    opened = OpenedFile(connect_sqlcipher(db, KEY), db)
    assert wal.read_state(db, opened.wal_index) is not None
    assert sqlite_locks_held(db) == (False, True)
    opened.read_all()
    assert sqlite_locks_held(db) == (False, False)
    opened.close()
    writer.close()


def test_a_closed_file_refuses_reads(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    conn = _written(db)
    own = SqliteFile(conn)
    own.close()
    own.close()  # twice is fine
    with pytest.raises(sqlcipher3.ProgrammingError):
        own.wal_index(96)
    with pytest.raises(sqlcipher3.ProgrammingError):
        own.read_all()
    with pytest.raises(sqlcipher3.ProgrammingError):
        conn.execute("SELECT 1")  # the connection went with it


def test_without_the_library_the_fallback_is_used_and_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "a.db"
    conn = _written(db)
    assert isinstance(file_of(conn, db), SqliteFile)
    monkeypatch.setattr(walfiles, "sqlite_library", lambda: None)
    with structlog.testing.capture_logs() as logs:
        fallback = file_of(conn, db)
    assert isinstance(fallback, OpenedFile)
    assert wal.read_state(db, fallback.wal_index) is not None
    assert fallback.read_all() == db.read_bytes()
    assert [e["event"] for e in logs] == ["sqlite_file_handles_unavailable"]
    fallback.close()
