"""A closed database's -shm is emptied for its rest (walfiles.trim_wal_index), only when no
connection of any process has the file open, and without dropping SQLite's locks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import sqlite_locks_held
from hanzocloud.keys import MasterKey
from hanzocloud.storage import TenantStore, connect_sqlcipher, walfiles

DEK = bytes(range(32))


def shm_size(db: Path) -> int:
    return db.with_name(db.name + "-shm").stat().st_size


def written(db: Path) -> None:
    conn = connect_sqlcipher(db, DEK)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [(f"row {i}",) for i in range(200)])
    conn.commit()
    conn.close()


async def test_a_closed_tenant_rests_with_an_empty_wal_index(tmp_path: Path,
                                                             master: MasterKey) -> None:
    store = TenantStore(tmp_path, master)
    async with store.session("acme", "notes") as s:
        await s.execute(text("CREATE TABLE t (v TEXT)"))
        await s.execute(text("INSERT INTO t VALUES ('kept')"))
        await s.commit()
    db = store.path_for("acme", "notes")
    assert shm_size(db) == 32768  # open: SQLite's wal-index is in use
    await store.evict("acme", "notes")
    assert shm_size(db) == 0 and db.with_name("notes.db-wal").stat().st_size == 0
    assert await store.run_sync("acme", "notes", lambda c: c.exec_driver_sql(
        "SELECT v FROM t").scalar_one()) == "kept"
    await store.close()
    assert shm_size(db) == 0


def test_an_open_connection_keeps_its_wal_index_and_its_locks(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    written(db)
    conn = connect_sqlcipher(db, DEK)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (200,)
    for _ in range(2):  # the second attempt reuses the kept descriptor
        assert walfiles.trim_wal_index(db) is False
    assert shm_size(db) == 32768
    assert sqlite_locks_held(db) == (True, True)  # the refused attempt closed nothing
    conn.execute("INSERT INTO t VALUES ('after')")
    conn.commit()
    conn.close()
    assert walfiles.trim_wal_index(db) is True
    assert shm_size(db) == 0 and not walfiles._kept  # the kept descriptor is closed too
    conn = connect_sqlcipher(db, DEK)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (201,)
    conn.close()


def test_another_process_with_the_file_open_keeps_it(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    written(db)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\nfrom pathlib import Path\nfrom hanzocloud.storage import connect_sqlcipher\n"
         "conn = connect_sqlcipher(Path(sys.argv[1]), bytes(range(32)))\n"
         "print(conn.execute('SELECT count(*) FROM t').fetchone()[0], flush=True)\n"
         "sys.stdin.readline()\n"
         "print(conn.execute('SELECT count(*) FROM t').fetchone()[0], flush=True)\n",
         str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "200"
        assert walfiles.trim_wal_index(db) is False
        assert shm_size(db) == 32768
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "200"
    finally:
        holder.communicate(timeout=30)
    assert walfiles.trim_wal_index(db) is True and not walfiles._kept


def test_opens_racing_the_trim_still_read_every_row(tmp_path: Path) -> None:
    # A trim holds the wal-index's "in use" byte as SQLite's own first opener does, and an
    # opener that meets it retries: never an error, never a lost row.
    db = tmp_path / "a.db"
    written(db)
    stop, errors, trims = threading.Event(), [], [0]

    def trimmer() -> None:
        while not stop.is_set():
            trims[0] += walfiles.trim_wal_index(db)

    def reader() -> None:
        try:
            for _ in range(150):
                conn = connect_sqlcipher(db, DEK, busy_ms=0)
                assert conn.execute("SELECT count(*) FROM t").fetchone() == (200,)
                conn.close()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=trimmer)] + [threading.Thread(target=reader)
                                                     for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads[1:]:
        thread.join()
    stop.set()
    threads[0].join()
    assert errors == [] and trims[0] > 0
    assert walfiles.trim_wal_index(db) is True and not walfiles._kept


def test_no_shm_no_trim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert walfiles.trim_wal_index(tmp_path / "absent.db") is False
    db = tmp_path / "a.db"
    written(db)
    os.symlink(tmp_path / "elsewhere", tmp_path / "b.db-shm")  # never followed
    assert walfiles.trim_wal_index(tmp_path / "b.db") is False
    monkeypatch.setattr(walfiles, "_OFD_SETLK", None)  # a system without OFD locks
    assert walfiles.trim_wal_index(db) is False and shm_size(db) == 32768
