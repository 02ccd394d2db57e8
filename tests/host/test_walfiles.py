"""A database's -wal and -shm outlive its connections, and the file stays complete."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hanzocloud.storage import connect_sqlcipher, walfiles

DEK = bytes(range(32))


@pytest.fixture
def fresh_probe() -> Iterator[None]:
    walfiles.sqlite_library.cache_clear()
    yield
    walfiles.sqlite_library.cache_clear()


def sizes(db: Path) -> dict[str, int | None]:
    found = {}
    for suffix in ("-wal", "-shm"):
        side = db.with_name(db.name + suffix)
        found[suffix] = side.stat().st_size if side.exists() else None
    return found


def test_the_installed_binding_passes_the_layout_probe() -> None:
    # If this fails, tenants still open, but every cold open creates and deletes two files.
    assert walfiles.sqlite_library() is not None


def test_the_last_close_empties_the_wal_and_keeps_both_files(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    first, second = connect_sqlcipher(db, DEK), connect_sqlcipher(db, DEK)
    first.execute("CREATE TABLE t (v TEXT)")
    first.executemany("INSERT INTO t VALUES (?)", [(f"row {i}",) for i in range(500)])
    first.commit()
    first.close()
    assert sizes(db)["-wal"] > 0  # another connection is open: nothing is checkpointed yet
    second.close()
    assert sizes(db) == {"-wal": 0, "-shm": 32768}
    # The main file alone holds every row: copied without its -wal and -shm, it reads whole.
    copy = tmp_path / "copy" / "a.db"
    copy.parent.mkdir()
    shutil.copy(db, copy)
    conn = connect_sqlcipher(copy, DEK)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (500,)
    conn.close()
    # And the original reopens over the files it left (the stale -shm is rebuilt).
    conn = connect_sqlcipher(db, DEK)
    assert conn.execute("SELECT count(*), max(v) FROM t").fetchone() == (500, "row 99")
    conn.close()


def test_a_crashed_writer_leaves_a_wal_the_next_open_replays(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from hanzocloud.storage import connect_sqlcipher\n"
        "conn = connect_sqlcipher(Path(sys.argv[1]), bytes(range(32)))\n"
        "conn.execute('CREATE TABLE t (v TEXT)')\n"
        "conn.execute(\"INSERT INTO t VALUES ('committed')\")\n"
        "conn.commit()\n"
        "os._exit(0)  # no close, no checkpoint\n")
    subprocess.run([sys.executable, "-c", script, str(db)], check=True, timeout=60)
    assert sizes(db)["-wal"] > 0
    conn = connect_sqlcipher(db, DEK)
    assert conn.execute("SELECT v FROM t").fetchall() == [("committed",)]
    conn.close()
    assert sizes(db)["-wal"] == 0


def test_without_the_library_sqlite_deletes_the_files_as_usual(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walfiles, "sqlite_library", lambda: None)
    db = tmp_path / "a.db"
    conn = connect_sqlcipher(db, DEK)
    assert walfiles.keep_wal_files(conn) is False
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.commit()
    conn.close()
    assert sizes(db) == {"-wal": None, "-shm": None}
    conn = connect_sqlcipher(db, DEK)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    conn.close()


def test_a_connection_layout_that_does_not_match_turns_persistence_off(
        fresh_probe: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # A pointer that is not a `sqlite3` (zeros: no VFS pointer first) fails the probe before
    # SQLite is ever handed it.
    zeros = ctypes.create_string_buffer(64)
    monkeypatch.setattr(walfiles, "connection_pointer", lambda conn: ctypes.addressof(zeros))
    assert walfiles.sqlite_library() is None


def test_a_probe_that_cannot_run_turns_persistence_off(
        fresh_probe: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only_tmp(**_: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(walfiles.tempfile, "TemporaryDirectory", read_only_tmp)
    assert walfiles.sqlite_library() is None
