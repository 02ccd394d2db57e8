"""Reading the wal-index header: a torn header is re-read, but never waited on after the
last attempt (the replicator's idle check reads it once, on the event loop); an empty WAL
has no state."""

from __future__ import annotations

from pathlib import Path

import pytest

from hanzocloud.replicate import wal
from hanzocloud.replicate.errors import ContinuityLost
from hanzocloud.storage import connect_sqlcipher
from hanzocloud.storage.sqlitefile import SqliteFile, shm_file


def test_a_torn_header_is_reread_without_a_last_wait(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "x.db"
    copy = wal._SHM_COPY
    wal.wal_path(db).write_bytes(b"\0" * 4096)  # a WAL with frames in it
    wal.shm_path(db).write_bytes(b"\1" * copy + b"\2" * copy)  # the two copies disagree
    naps: list[float] = []
    monkeypatch.setattr(wal.time, "sleep", naps.append)
    with pytest.raises(ContinuityLost):
        wal.read_state(db, shm_file(db), attempts=1)
    assert naps == []
    with pytest.raises(ContinuityLost):
        wal.read_state(db, shm_file(db), attempts=3)
    assert len(naps) == 2


def test_no_wal_index_means_no_wal(tmp_path: Path) -> None:
    absent = tmp_path / "absent.db"
    assert wal.read_state(absent, shm_file(absent), attempts=1) is None
    db = tmp_path / "short.db"
    wal.wal_path(db).write_bytes(b"\0" * 4096)
    wal.shm_path(db).write_bytes(b"\0" * 10)
    assert wal.read_state(db, shm_file(db), attempts=1) is None


def test_a_closed_or_empty_wal_has_no_state(tmp_path: Path) -> None:
    # The last close empties the WAL but leaves the -shm, whose header still describes the
    # last session: that is no WAL in use, not frames to ship.
    db = tmp_path / "a.db"
    conn = connect_sqlcipher(db, bytes(32))
    own = SqliteFile(conn)  # closes `conn` with it
    conn.execute("CREATE TABLE t (v)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    state = wal.read_state(db, own.wal_index)
    assert state is not None and state.frames >= 2
    own.close()
    assert wal.wal_path(db).stat().st_size == 0 and wal.shm_path(db).exists()
    assert wal.read_state(db, shm_file(db)) is None  # closed: the file may be opened
    # Reopened and read only: the WAL is still empty (its header has no frames either).
    conn = connect_sqlcipher(db, bytes(32))
    assert conn.execute("SELECT v FROM t").fetchall() == [(1,)]
    own = SqliteFile(conn)
    assert wal.read_state(db, own.wal_index) is None
    conn.execute("INSERT INTO t VALUES (2)")
    conn.commit()
    state = wal.read_state(db, own.wal_index)
    assert state is not None and state.frames >= 1
    own.close()


def _wal_index(frames: int) -> bytes:
    header = bytearray(wal._SHM_HEADER.pack(3007000, 0, 1, 1, 0, 4096, frames, 2, bytes(8),
                                            b"saltsalt", bytes(8)))
    header[40:48] = wal.struct.pack("=II", *wal._native_checksum(bytes(header[:40])))
    return bytes(header) * 2


def test_a_wal_index_with_no_frames_is_no_wal(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    wal.wal_path(db).write_bytes(b"\0" * 4096)  # old frames a restarted WAL has not reused
    wal.shm_path(db).write_bytes(_wal_index(0))
    assert wal.read_state(db, shm_file(db), attempts=1) is None
    wal.shm_path(db).write_bytes(_wal_index(5))
    assert wal.read_state(db, shm_file(db), attempts=1) == wal.WalState(b"saltsalt", 5, 4096)
