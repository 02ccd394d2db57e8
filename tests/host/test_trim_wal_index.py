"""A closed database's -shm is emptied for its rest (storage.shm.trim_wal_index), only when no
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
from hanzocloud.storage import TenantStore, connect_sqlcipher, shm

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


def own_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_an_open_connection_keeps_its_wal_index_and_its_locks(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    written(db)
    before = own_descriptors()
    conn = connect_sqlcipher(db, DEK)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (200,)
    assert shm.open_here(db) == 1
    assert shm.trim_wal_index(db) is False
    assert shm_size(db) == 32768
    assert sqlite_locks_held(db) == (True, True)  # the -shm was not even opened
    conn.execute("INSERT INTO t VALUES ('after')")
    conn.commit()
    conn.close()
    assert shm.open_here(db) == 0 and own_descriptors() == before
    assert shm.trim_wal_index(db) is True
    assert shm_size(db) == 0 and own_descriptors() == before
    conn = connect_sqlcipher(db, DEK)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (201,)
    del conn  # dropped without a close: the count goes with it
    assert shm.open_here(db) == 0


def test_a_connection_that_dropped_its_locks_is_still_counted(tmp_path: Path) -> None:
    # Where SQLite's handles cannot be reached, the replicator reads the -shm by opening it
    # (sqlitefile.OpenedFile), which drops this process's lock on the "in use" byte: only
    # the count then keeps a trim from truncating the -shm under the open connection (whose
    # next access would die of SIGBUS). Run in a child, so a crash fails this test only.
    db = tmp_path / "a.db"
    written(db)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from hanzocloud.replicate import wal\n"
        "from hanzocloud.storage import connect_sqlcipher, shm\n"
        "from hanzocloud.storage.sqlitefile import OpenedFile\n"
        "db = Path(sys.argv[1])\n"
        "conn = connect_sqlcipher(db, bytes(range(32)))\n"
        "opened = OpenedFile(connect_sqlcipher(db, bytes(range(32))), db)\n"
        "assert wal.read_state(db, opened.wal_index) is None\n"
        "conn.close()\n"
        "print(shm.trim_wal_index(db), opened.read_all() == db.read_bytes())\n"
        "opened.close()\n"
        "print(shm.trim_wal_index(db))\n")
    done = subprocess.run([sys.executable, "-c", script, str(db)], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout.split()) == (0, ["False", "True", "True"]), done.stderr


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
        before = own_descriptors()
        for _ in range(3):  # refused: and nothing of it is kept open here
            assert shm.trim_wal_index(db) is False
        assert shm_size(db) == 32768 and own_descriptors() == before
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "200"
    finally:
        holder.communicate(timeout=30)
    assert shm.trim_wal_index(db) is True


def test_opens_racing_the_trim_still_read_every_row(tmp_path: Path) -> None:
    # A trim holds the wal-index's "in use" byte as SQLite's own first opener does, and an
    # opener that meets it retries: never an error, never a lost row.
    db = tmp_path / "a.db"
    written(db)
    stop, errors, trims = threading.Event(), [], [0]

    def trimmer() -> None:
        while not stop.is_set():
            trims[0] += shm.trim_wal_index(db)

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
    assert shm.open_here(db) == 0 and shm.trim_wal_index(db) is True


def test_no_shm_no_trim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert shm.trim_wal_index(tmp_path / "absent.db") is False
    db = tmp_path / "a.db"
    written(db)
    os.symlink(tmp_path / "elsewhere", tmp_path / "b.db-shm")  # never followed
    assert shm.trim_wal_index(tmp_path / "b.db") is False
    monkeypatch.setattr(shm, "_OFD_SETLK", None)  # a system without OFD locks
    assert shm.trim_wal_index(db) is False and shm_size(db) == 32768
