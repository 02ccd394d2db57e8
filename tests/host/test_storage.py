"""TenantStore: encrypted per-tenant files, key binding, slugs and the bounded LRU."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlcipher3
from sqlalchemy import text

from hanzocloud.errors import Busy, InvalidArgument
from hanzocloud.keys import KeyUnwrapError, MasterKey
from hanzocloud.storage import TenantStore, connect_sqlcipher, validate_slug

PLAINTEXT = "tenant-a-plaintext-marker-7f3a"


async def write(store: TenantStore, org: str, value: str) -> None:
    async with store.session(org, "notes") as s:
        await s.execute(text("CREATE TABLE IF NOT EXISTS t (v TEXT)"))
        await s.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})
        await s.commit()


async def read(store: TenantStore, org: str) -> list[str]:
    async with store.session(org, "notes") as s:
        return [r[0] for r in (await s.execute(text("SELECT v FROM t ORDER BY rowid"))).all()]


@contextlib.asynccontextmanager
async def loop_turns(period: float) -> AsyncIterator[list[int]]:
    """Count the loop's free turns (one per `period`) while the block runs: [count]."""
    ticks, done = [0], asyncio.Event()

    async def ticker() -> None:  # runs only while the loop is free
        while not done.is_set():
            await asyncio.sleep(period)
            ticks[0] += 1

    running = asyncio.create_task(ticker())
    try:
        yield ticks
    finally:
        done.set()
        await running


class Gate:
    """Holds a transaction inside its worker thread (never on the loop) until opened."""

    def __init__(self) -> None:
        self.entered, self.opened = threading.Event(), threading.Event()

    def hold(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.entered.set()
            self.opened.wait(30)

    async def reached(self) -> None:
        await asyncio.to_thread(self.entered.wait, 30)


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


async def test_survives_reopen_and_holds_no_plaintext(tmp_path: Path,
                                                      master: MasterKey) -> None:
    store = TenantStore(tmp_path, master)
    await write(store, "acme", PLAINTEXT)
    await store.close()
    db = tmp_path / "orgs" / "acme" / "notes.db"
    assert PLAINTEXT.encode() not in all_bytes(db.parent)
    assert not db.read_bytes().startswith(b"SQLite format 3\x00")
    reopened = TenantStore(tmp_path, master)
    assert await read(reopened, "acme") == [PLAINTEXT]
    await reopened.close()


async def test_file_does_not_open_without_key_or_with_other_orgs_key(
        tmp_path: Path, master: MasterKey) -> None:
    store = TenantStore(tmp_path, master)
    await write(store, "acme", PLAINTEXT)
    await write(store, "globex", "other")
    await store.close()
    db = tmp_path / "orgs" / "acme" / "notes.db"
    no_key = sqlcipher3.connect(str(db))
    with pytest.raises(sqlcipher3.DatabaseError):
        no_key.execute("SELECT * FROM t").fetchall()
    no_key.close()
    with pytest.raises(sqlcipher3.DatabaseError):
        connect_sqlcipher(db, store.load_dek("globex", "notes"))
    import sqlite3

    plain = sqlite3.connect(str(db))
    with pytest.raises(sqlite3.DatabaseError):
        plain.execute("SELECT * FROM sqlite_master").fetchall()
    plain.close()


async def test_swapped_sidecars_do_not_open(tmp_path: Path, master: MasterKey) -> None:
    store = TenantStore(tmp_path, master)
    await write(store, "acme", PLAINTEXT)
    await write(store, "globex", "other")
    await store.close()
    a = tmp_path / "orgs" / "acme" / "notes.db.dek"
    b = tmp_path / "orgs" / "globex" / "notes.db.dek"
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    fresh = TenantStore(tmp_path, master)
    for org in ("acme", "globex"):
        with pytest.raises(KeyUnwrapError) as failed:
            await read(fresh, org)
        assert "does not open" in failed.value.reason
    await fresh.close()


async def test_other_master_key_does_not_open(tmp_path: Path, master: MasterKey) -> None:
    store = TenantStore(tmp_path, master)
    await write(store, "acme", PLAINTEXT)
    await store.close()
    other = TenantStore(tmp_path, MasterKey(os.urandom(32), "other"))
    with pytest.raises(KeyUnwrapError) as failed:
        await read(other, "acme")
    assert "does not open" in failed.value.reason
    await other.close()


async def test_missing_sidecar_is_never_overwritten(tmp_path: Path, master: MasterKey) -> None:
    store = TenantStore(tmp_path, master)
    await write(store, "acme", PLAINTEXT)
    await store.close()
    (tmp_path / "orgs" / "acme" / "notes.db.dek").unlink()
    before = (tmp_path / "orgs" / "acme" / "notes.db").read_bytes()
    fresh = TenantStore(tmp_path, master)
    with pytest.raises(KeyUnwrapError) as raised:  # a 500 that names no path to the client
        await read(fresh, "acme")
    assert "sidecar is missing" in raised.value.reason
    assert str(tmp_path) not in raised.value.message
    await fresh.close()
    assert (tmp_path / "orgs" / "acme" / "notes.db").read_bytes() == before


BAD_SLUGS = ["../x", "A", "a/b", "a" * 64, "аcme", "", "-lead", "a b", "a\n", ".", "x\x00",
             "ａcme", None, 7]


@pytest.mark.parametrize("slug", BAD_SLUGS,
                         ids=["dotdot", "upper", "slash", "64-chars", "cyrillic-a", "empty",
                              "leading-dash", "space", "newline", "dot", "nul", "fullwidth",
                              "none", "int"])
async def test_bad_slugs_rejected_before_any_path(tmp_path: Path, master: MasterKey,
                                                  slug: object) -> None:
    store = TenantStore(tmp_path / "data", master)
    with pytest.raises(InvalidArgument):
        await store.open(slug, "notes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        validate_slug(slug)
    assert not (tmp_path / "data").exists()
    await store.close()


async def test_the_empty_org_never_reaches_the_global_file_even_while_it_is_open(
        tmp_path: Path, master: MasterKey) -> None:
    """A request naming the org "" is refused however warm the platform-wide file is: the
    open handles are keyed by org, and the global file's key must not answer to ""."""
    from hanzocloud.storage import GLOBAL_ORG

    store = TenantStore(tmp_path, master)
    async with store.global_session("notes") as s:
        await s.execute(text("CREATE TABLE t (v TEXT)"))
        await s.execute(text("INSERT INTO t VALUES ('platform-secret')"))
        await s.commit()
    with pytest.raises(InvalidArgument):
        await store.open("", "notes")
    with pytest.raises(InvalidArgument):
        async with store.session("", "notes"):
            pass
    with pytest.raises(InvalidArgument):
        await store.run_sync("", "notes", lambda c: c.exec_driver_sql("SELECT v FROM t").all(),
                             read_only=True)
    assert GLOBAL_ORG != "" and "" != GLOBAL_ORG and not GLOBAL_ORG == ""  # noqa: SIM201,SIM300
    assert {GLOBAL_ORG: 1}.get("") is None
    assert str(GLOBAL_ORG) == "" and GLOBAL_ORG == GLOBAL_ORG
    assert (await store.open_global("notes")).path == tmp_path / "global" / "notes.db"
    await store.close()


async def test_an_open_finishing_after_close_leaves_nothing_open(
        tmp_path: Path, master: MasterKey, monkeypatch: pytest.MonkeyPatch) -> None:
    store = TenantStore(tmp_path, master)
    entered, gate = asyncio.Event(), asyncio.Event()
    make_room = store._make_room

    async def slow_room() -> None:  # the open is parked here while the store closes
        entered.set()
        await gate.wait()
        await make_room()

    monkeypatch.setattr(store, "_make_room", slow_room)
    opening = asyncio.create_task(store.open("acme", "notes"))
    await entered.wait()
    await store.close()
    gate.set()
    with pytest.raises(RuntimeError, match="closed"):
        await opening
    assert store.open_count == 0


def test_good_slugs() -> None:
    for slug in ("a", "acme", "acme-2", "0", "a" * 63):
        assert validate_slug(slug) == slug


async def test_lru_bound_holds_over_2000_tenants(tmp_path: Path, master: MasterKey) -> None:
    from hanzocloud.storage import MAX_PENDING_CLOSES

    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    store = TenantStore(tmp_path, master, max_open=16)
    before, most = open_files(), 0
    for i in range(2000):  # sessions and transactions in turn, never yielding to the loop
        async with store.session(f"org-{i}", "notes") as s:
            await s.execute(text("SELECT 1"))
        await store.run_sync(f"org-{i}", "notes", lambda c: c.exec_driver_sql("SELECT 1"))
        assert store.open_count <= 16
        most = max(most, open_files() - before)
    assert store.peak_open <= 16 and store.opens == 2000
    # Evicted handles' connections close too: each open handle holds at most two connections
    # of three files (database, WAL, WAL index), and only a few closes may be pending.
    assert most <= (16 + MAX_PENDING_CLOSES) * 2 * 3
    await store.close()
    assert store.open_count == 0


async def test_idle_handles_are_evicted(tmp_path: Path, master: MasterKey) -> None:
    import time

    store = TenantStore(tmp_path, master, idle_seconds=10)
    await write(store, "acme", "x")
    assert store.open_count == 1
    assert await store.evict_idle(now=time.monotonic() + 5) == 0
    assert await store.evict_idle(now=time.monotonic() + 11) == 1
    assert store.open_count == 0
    assert await read(store, "acme") == ["x"]
    await store.close()


async def test_concurrent_first_open_creates_one_key(tmp_path: Path, master: MasterKey) -> None:

    store = TenantStore(tmp_path, master)
    handles = await asyncio.gather(*(store.open("acme", "notes") for _ in range(20)))
    assert len({id(h) for h in handles}) == 1
    await write(store, "acme", "x")
    await store.close()
    copy = tmp_path.parent / "copy"
    shutil.copytree(tmp_path, copy)
    again = TenantStore(copy, master)
    assert await read(again, "acme") == ["x"]
    await again.close()


async def test_run_sync_waits_out_another_writer_without_blocking_the_loop(
        tmp_path: Path, master: MasterKey) -> None:

    store = TenantStore(tmp_path, master)
    await write(store, "acme", "first")
    blocker = store.connect_sync("acme", "notes")
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    calls = 0

    def insert(conn: object) -> None:
        nonlocal calls
        calls += 1
        conn.exec_driver_sql("INSERT INTO t VALUES ('second')")  # type: ignore[attr-defined]

    task = asyncio.create_task(store.run_sync("acme", "notes", insert))
    ticks = 0
    while calls < 3:  # the loop keeps running while run_sync backs off
        await asyncio.sleep(0.001)
        ticks += 1
    assert not task.done() and ticks >= 3
    blocker.rollback()
    blocker.close()
    await task
    assert await read(store, "acme") == ["first", "second"]
    await store.close()


@pytest.mark.parametrize("way", ["run_sync", "session"])
async def test_a_writer_gives_up_on_a_lock_after_busy_seconds(tmp_path: Path, master: MasterKey,
                                                              way: str) -> None:
    store = TenantStore(tmp_path, master)
    store.busy_seconds = 0.2
    await write(store, "acme", "first")
    blocker = store.connect_sync("acme", "notes")
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(Busy) as raised:  # a 503 with Retry-After over HTTP
        if way == "session":
            await write(store, "acme", "lost")
        else:
            await store.run_sync("acme", "notes", lambda c: c.exec_driver_sql(
                "INSERT INTO t VALUES ('lost')"))
    assert raised.value.status == 503 and raised.value.retry_after == 1
    assert isinstance(raised.value.__cause__, sqlcipher3.OperationalError)
    blocker.rollback()
    blocker.close()
    assert await read(store, "acme") == ["first"]  # nothing half-written
    await store.close()


async def test_a_connection_that_found_its_file_read_only_is_not_kept(tmp_path: Path,
                                                                       master: MasterKey) -> None:
    store = TenantStore(tmp_path, master)
    await write(store, "acme", "first")
    insert = "INSERT INTO t VALUES ('x')"
    await store.run_sync("acme", "notes", lambda c: c.exec_driver_sql("SELECT 1").all())
    handle = await store.open("acme", "notes")
    assert handle._held is not None
    # As if the file had been read-only when this connection met it: SQLITE_READONLY.
    handle._held.connection.dbapi_connection.execute("PRAGMA query_only = 1")
    with pytest.raises(sqlcipher3.OperationalError, match="readonly"):
        await store.run_sync("acme", "notes", lambda c: c.exec_driver_sql(insert))
    await store.run_sync("acme", "notes", lambda c: c.exec_driver_sql(insert))  # afresh
    assert await read(store, "acme") == ["first", "x"]
    await store.close()


async def test_failed_and_cancelled_opens_leave_no_lock_behind(tmp_path: Path,
                                                                master: MasterKey) -> None:
    store = TenantStore(tmp_path, master)
    for slug in ("../x", "A", "x" * 64):
        with pytest.raises(InvalidArgument):
            await store.open(slug, "notes")
    gate = asyncio.Event()

    class SlowLease:  # holds every open in its first step until let go
        async def before_open(self, org: str, service: str, path: Path) -> None:
            await gate.wait()

        async def opened(self, org: str, service: str, path: Path) -> None: ...
        def touched(self, org: str, service: str) -> None: ...
        async def closed(self, org: str, service: str) -> None: ...

    store.replicator = SlowLease()  # type: ignore[assignment]
    waiting = [asyncio.create_task(store.open("acme", "notes")) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert len(store._locks) == 1
    waiting[0].cancel()  # the one inside the lock
    await asyncio.sleep(0)
    gate.set()
    assert len({id(h) for h in await asyncio.gather(*waiting[1:])}) == 1  # one handle
    assert store._locks == {}
    await store.close()


async def test_run_sync_tells_the_replicator_about_writes_only(tmp_path: Path,
                                                                master: MasterKey) -> None:
    touched: list[tuple[str, str]] = []

    class Hooks:
        async def before_open(self, org: str, service: str, path: Path) -> None: ...
        async def opened(self, org: str, service: str, path: Path) -> None: ...
        def touched(self, org: str, service: str) -> None:
            touched.append((org, service))
        async def closed(self, org: str, service: str) -> None: ...

    store = TenantStore(tmp_path, master)
    store.replicator = Hooks()
    await store.run_sync("acme", "notes", lambda c: c.exec_driver_sql(
        "CREATE TABLE t (v TEXT)"))
    touched.clear()
    await store.run_sync("acme", "notes", lambda c: c.exec_driver_sql("SELECT * FROM t").all())
    assert touched == []  # a read leaves nothing to ship
    await store.run_sync("acme", "notes", lambda c: c.exec_driver_sql(
        "INSERT INTO t VALUES ('x')"))
    assert touched == [("acme", "notes")]
    await store.run_sync("acme", "notes", lambda c: c.exec_driver_sql(
        "UPDATE t SET v = 'y' WHERE v = 'nothing'"))  # a write transaction, no rows changed
    assert touched == [("acme", "notes")] * 2
    await store.close()


async def test_offloaded_run_sync_leaves_the_loop_free(tmp_path: Path, master: MasterKey) -> None:
    import time as clock

    store = TenantStore(tmp_path, master)
    await write(store, "acme", "first")
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def slow(conn: object) -> str:
        seen.append(threading.get_ident())
        conn.exec_driver_sql("INSERT INTO t VALUES ('second')")  # type: ignore[attr-defined]
        clock.sleep(0.3)  # a long migration, say
        return "done"

    def values(conn: object) -> list[str]:
        rows = conn.exec_driver_sql("SELECT v FROM t ORDER BY rowid")  # type: ignore[attr-defined]
        return [r[0] for r in rows]

    task = asyncio.create_task(store.run_sync("acme", "notes", slow, offload=True))
    ticks, during = 0, []
    while not task.done():
        await asyncio.sleep(0.01)
        ticks += 1
        if ticks == 5:  # a read on the loop thread while the write is still open
            during = await store.run_sync("acme", "notes", values)
    assert await task == "done"
    assert ticks >= 10 and seen and seen[0] != loop_thread
    assert during == ["first"]
    assert await store.run_sync("acme", "notes", values) == ["first", "second"]
    await store.close()


async def test_inline_transactions_share_one_connection(tmp_path: Path,
                                                        master: MasterKey) -> None:
    store = TenantStore(tmp_path, master)
    await write(store, "acme", "first")

    def driver(conn: Any) -> int:
        return id(conn.connection.dbapi_connection)

    handle = await store.open("acme", "notes")
    held = await store.run_sync("acme", "notes", driver)
    assert await store.run_sync("acme", "notes", driver) == held
    assert handle.sync_engine.pool.checkedout() == 1  # kept out of the pool in between

    def nested_insert(conn: Any) -> None:  # a transaction begun inside another one
        conn.exec_driver_sql("INSERT INTO t VALUES ('outer')")
        with handle.transaction(inline=True) as other:
            assert driver(other) != held
            other.exec_driver_sql("SELECT count(*) FROM t").all()

    await store.run_sync("acme", "notes", nested_insert)

    def fail(conn: Any) -> None:
        conn.exec_driver_sql("INSERT INTO t VALUES ('rolled back')")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await store.run_sync("acme", "notes", fail)

    def state(conn: Any) -> tuple[int, bool, list[str]]:
        raw = conn.connection.dbapi_connection
        return driver(conn), raw.in_transaction, [
            r[0] for r in conn.exec_driver_sql("SELECT v FROM t ORDER BY rowid")]

    # The failed transaction was rolled back and the held connection is clean and reused.
    assert await store.run_sync("acme", "notes", state) == (held, False, ["first", "outer"])
    await store.close()
    assert handle._held is None



@pytest.mark.parametrize("offload", [False, True])
async def test_a_read_only_run_sees_one_snapshot(tmp_path: Path, master: MasterKey,
                                                 offload: bool) -> None:
    store = TenantStore(tmp_path, master)
    await write(store, "acme", "first")
    handle = await store.open("acme", "notes")

    def count(conn: Any) -> int:
        return int(conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one())

    def read_around_a_commit(conn: Any) -> tuple[int, int, int]:
        before = count(conn)
        with handle.sync_engine.begin() as writer:  # another connection commits meanwhile
            writer.exec_driver_sql("INSERT INTO t VALUES ('meanwhile')")
        rows = len(conn.exec_driver_sql("SELECT v FROM t").all())  # through the driver…
        return before, rows, count(conn)                          # …and SQLAlchemy

    assert await store.run_sync("acme", "notes", read_around_a_commit, read_only=True,
                                offload=offload) == (1, 1, 1)
    # The snapshot ended; the next read sees the commit, and the held connection is clean.
    assert await store.run_sync("acme", "notes", count, read_only=True) == 2
    clean = await store.run_sync("acme", "notes", lambda c: c.connection.dbapi_connection
                                 .in_transaction)
    assert clean is False
    await store.close()


async def test_a_read_only_run_that_writes_raises_and_keeps_nothing(
        tmp_path: Path, master: MasterKey) -> None:
    store = TenantStore(tmp_path, master)
    await write(store, "acme", "first")

    def sneaky(conn: Any) -> None:
        conn.exec_driver_sql("INSERT INTO t VALUES ('sneaky')")

    with pytest.raises(RuntimeError, match="read-only"):
        await store.run_sync("acme", "notes", sneaky, read_only=True)
    assert await read(store, "acme") == ["first"]

    def nested(conn: Any) -> list[str]:  # a snapshot inside a write transaction
        conn.exec_driver_sql("INSERT INTO t VALUES ('outer')")
        handle = store._open[("acme", "notes")]
        with handle.snapshot(inline=True) as other:
            assert other is not conn
            return [r[0] for r in other.exec_driver_sql("SELECT v FROM t ORDER BY rowid")]

    assert await store.run_sync("acme", "notes", nested) == ["first"]  # not yet committed
    assert await read(store, "acme") == ["first", "outer"]
    await store.close()

async def test_an_evicted_handle_is_freed_without_a_collection(tmp_path: Path,
                                                               master: MasterKey) -> None:
    import gc
    import weakref

    store = TenantStore(tmp_path, master, max_open=1)
    # (The very first async engine is built by create_async_engine, whose own reference
    # cycle keeps that one until a collection; the later ones are built without it.)
    await write(store, "initech", "probe")
    await write(store, "acme", "x")  # a session: the async engine refers back to its handle
    assert await read(store, "acme") == ["x"]
    gone = weakref.ref(await store.open("acme", "notes"))
    gc.disable()
    try:
        await write(store, "globex", "y")  # evicts acme's handle
        for _ in range(100):
            if gone() is None:
                break
            await asyncio.sleep(0.01)
        assert gone() is None  # freed by reference counting alone
    finally:
        gc.enable()
    await store.close()


async def test_sessions_run_on_the_loop_thread_without_threads_of_their_own(
        tmp_path: Path, master: MasterKey) -> None:

    store = TenantStore(tmp_path, master)
    await write(store, "warm", "x")  # the first engine probes the dialect
    before = threading.active_count()
    for i in range(20):
        await write(store, f"org-{i}", f"v{i}")
        assert await read(store, f"org-{i}") == [f"v{i}"]
    assert threading.active_count() == before  # no connection thread per tenant
    await store.close()


async def test_a_session_closes_without_a_loop_step_and_when_cancelled(
        tmp_path: Path, master: MasterKey) -> None:

    store = TenantStore(tmp_path, master)
    await write(store, "acme", "first")
    handle = await store.open("acme", "notes")
    ran: list[str] = []
    async with store.session("acme", "notes") as s:
        await s.execute(text("INSERT INTO t VALUES ('uncommitted')"))
        asyncio.get_running_loop().call_soon(ran.append, "loop step")
    # Closed (rolled back, connection back in the pool) before the loop ran anything else.
    assert ran == [] and handle.users == 0 and handle.engine.pool.checkedout() == 0
    await asyncio.sleep(0)
    assert ran == ["loop step"]

    entered = asyncio.Event()

    async def stuck() -> None:
        async with store.session("acme", "notes") as s:
            await s.execute(text("INSERT INTO t VALUES ('cancelled')"))
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(stuck())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handle.users == 0 and handle.engine.pool.checkedout() == 0
    assert await read(store, "acme") == ["first"]
    await store.close()


async def test_a_session_waits_out_another_sessions_write_lock(tmp_path: Path,
                                                                master: MasterKey) -> None:

    store = TenantStore(tmp_path, master)
    await write(store, "acme", "first")
    holder_has_lock = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:  # holds the write lock across awaits
        async with store.session("acme", "notes") as s:
            await s.execute(text("INSERT INTO t VALUES ('held')"))
            holder_has_lock.set()
            await release.wait()
            await s.commit()

    task = asyncio.create_task(holder())
    await holder_has_lock.wait()
    waiter = asyncio.create_task(write(store, "acme", "waited"))
    ticks = 0
    for _ in range(20):  # the loop keeps running while the second writer backs off
        await asyncio.sleep(0.002)
        ticks += 1
    assert not waiter.done() and ticks == 20
    release.set()
    await asyncio.gather(task, waiter)
    assert await read(store, "acme") == ["first", "held", "waited"]
    await store.close()


async def test_every_tenant_engine_gets_the_dialects_sql_functions(tmp_path: Path,
                                                                  master: MasterKey) -> None:
    # Later engines are assembled without create_engine; they must still run the dialect's
    # per-connection setup (it registers REGEXP), on both ways in.
    store = TenantStore(tmp_path, master)
    for org in ("first", "second"):
        await write(store, org, "abc123")
        async with store.session(org, "notes") as s:
            found = (await s.execute(text("SELECT v REGEXP '[0-9]+$' FROM t"))).scalar()
        assert found == 1
        assert await store.run_sync(org, "notes", lambda c: c.exec_driver_sql(
            "SELECT v REGEXP '^[a-z]+$' FROM t").scalar()) == 0
    await store.close()


async def test_closing_checkpoints_a_short_or_long_wal(tmp_path: Path, master: MasterKey) -> None:
    store = TenantStore(tmp_path, master)
    for org, size in (("short", 100), ("long", 1_000_000)):  # closed on the loop / in a thread
        await write(store, org, "x" * size)
        handle = await store.open(org, "notes")
        assert handle.wal_is_short() == (size < 1000)
        await store.evict(org, "notes")
        assert Path(f"{handle.path}-wal").stat().st_size == 0  # checkpointed into the file
        assert await read(store, org) == ["x" * size]
    await store.close()


HEAVY = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
         "SELECT count(*) FROM c")


async def test_a_read_over_budget_moves_to_a_thread_and_the_loop_keeps_serving(
        tmp_path: Path, master: MasterKey) -> None:

    from hanzocloud import metrics

    store = TenantStore(tmp_path, master, read_budget=0.005)
    await write(store, "acme", "first")
    threads: list[str] = []

    def heavy(conn: Any) -> tuple[int, list[str]]:
        threads.append(threading.current_thread().name)
        rows = [r[0] for r in conn.exec_driver_sql("SELECT v FROM t")]
        return int(conn.exec_driver_sql(HEAVY).scalar_one()), rows

    before = metrics.SLOW_READS._value.get()
    async with loop_turns(0.002) as ticks:
        result = await store.run_sync("acme", "notes", heavy, read_only=True)
    assert result == (2000000, ["first"])  # the whole read ran again, from the start
    main = threading.main_thread().name
    assert threads[0] == main and threads[-1] != main and len(threads) == 2
    assert metrics.SLOW_READS._value.get() == before + 1
    assert ticks[0] >= 5  # the loop served others while the read ran in its thread

    # A short read stays on the loop; with no budget a long one does too; writes never move.
    assert await store.run_sync("acme", "notes", lambda c: threading.current_thread().name,
                                read_only=True) == main
    store.read_budget = 0
    threads.clear()
    assert (await store.run_sync("acme", "notes", heavy, read_only=True))[0] == 2000000
    assert threads == [main]
    store.read_budget = 0.005
    threads.clear()
    assert (await store.run_sync("acme", "notes", heavy))[0] == 2000000
    assert threads == [main] and metrics.SLOW_READS._value.get() == before + 1
    # The held connection is clean after the interrupted attempt.
    assert await store.run_sync("acme", "notes", lambda c: c.connection.dbapi_connection
                                .in_transaction) is False
    await store.close()


async def test_reads_moved_to_threads_queue_for_the_tenants_thread_connections(
        tmp_path: Path, master: MasterKey) -> None:

    from hanzocloud.storage import THREAD_CONNECTIONS

    store = TenantStore(tmp_path, master, read_budget=0.001)
    await write(store, "acme", "first")
    lock = threading.Lock()
    running, most = 0, 0
    query = HEAVY.replace("2000000", "300000")

    def heavy(conn: Any) -> int:
        nonlocal running, most
        in_thread = threading.current_thread() is not threading.main_thread()
        with lock:
            running += in_thread
            most = max(most, running)
        try:
            return int(conn.exec_driver_sql(query).scalar_one())
        finally:
            with lock:
                running -= in_thread

    results = await asyncio.gather(*(store.run_sync("acme", "notes", heavy, read_only=True)
                                     for _ in range(3 * THREAD_CONNECTIONS)))
    assert results == [300000] * (3 * THREAD_CONNECTIONS)
    assert 1 <= most <= THREAD_CONNECTIONS
    # Meanwhile the loop's own transactions, nested ones included, never waited on the pool.
    def nested(conn: Any) -> int:
        handle = store._open[("acme", "notes")]
        with handle.transaction(inline=True) as other:
            return int(other.exec_driver_sql("SELECT count(*) FROM t").scalar_one())

    assert await store.run_sync("acme", "notes", nested) == 1
    await store.close()


async def test_moved_reads_run_on_the_stores_threads_not_the_default_pool(
        tmp_path: Path, master: MasterKey) -> None:

    from hanzocloud.storage import SQL_THREADS

    store = TenantStore(tmp_path, master, read_budget=0.001)
    orgs = [f"org-{i}" for i in range(SQL_THREADS)]
    for org in orgs:
        await write(store, org, "x")
    names: list[str] = []
    started = threading.Barrier(SQL_THREADS + 1)

    def heavy(conn: Any) -> int:
        if threading.current_thread() is not threading.main_thread():
            names.append(threading.current_thread().name)
            started.wait(timeout=30)  # every store thread busy at once
            started.wait(timeout=30)  # …until the default pool has answered
        return int(conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one()
                   + conn.exec_driver_sql(HEAVY).scalar_one())

    reads = [asyncio.create_task(store.run_sync(org, "notes", heavy, read_only=True))
             for org in orgs]
    await asyncio.to_thread(started.wait, 30)
    # The store's threads are all taken; the default pool (the replicator's) still answers.
    assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 5) == "free"
    await asyncio.to_thread(started.wait, 30)
    assert await asyncio.gather(*reads) == [2000001] * SQL_THREADS
    assert len(names) == SQL_THREADS and all(n.startswith("hanzocloud-sql") for n in names)
    await store.close()


BULK = ("INSERT INTO t SELECT 'bulk' FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
        "SELECT x + 1 FROM c WHERE x < 300000) SELECT x FROM c)")


async def test_a_movable_write_over_budget_is_rolled_back_and_moves_to_a_thread(
        tmp_path: Path, master: MasterKey) -> None:

    from hanzocloud import metrics

    store = TenantStore(tmp_path, master, write_budget=0.002)
    await write(store, "acme", "first")
    threads: list[str] = []

    def bulk(conn: Any) -> int:
        threads.append(threading.current_thread().name)
        conn.exec_driver_sql("INSERT INTO t VALUES ('marker')")
        conn.exec_driver_sql(BULK)
        return int(conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one())

    before = metrics.SLOW_WRITES._value.get()
    async with loop_turns(0.001) as ticks:
        assert await store.run_sync("acme", "notes", bulk, movable=True) == 300002
    main = threading.main_thread().name
    assert threads[0] == main and threads[-1].startswith("hanzocloud-sql") and len(threads) == 2
    assert metrics.SLOW_WRITES._value.get() == before + 1
    assert ticks[0] >= 3  # the loop served others while the write ran in its thread

    def count(conn: Any) -> list[tuple[str, int]]:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT v, count(*) FROM t GROUP BY v ORDER BY v")]

    # The interrupted attempt left nothing behind: each row is there once.
    assert await store.run_sync("acme", "notes", count, read_only=True) == [
        ("bulk", 300000), ("first", 1), ("marker", 1)]
    # A write not marked movable, or any write with no budget, stays on the loop.
    threads.clear()
    await store.run_sync("acme", "notes", bulk)
    store.write_budget = 0
    await store.run_sync("acme", "notes", bulk, movable=True)
    assert threads == [main, main] and metrics.SLOW_WRITES._value.get() == before + 1
    assert await store.run_sync("acme", "notes", lambda c: c.connection.dbapi_connection
                                .in_transaction) is False
    await store.close()


async def test_a_write_that_swallows_the_interruption_is_not_committed_half_done(
        tmp_path: Path, master: MasterKey) -> None:
    # SQLite rolls the whole transaction back when it interrupts a write; a block that
    # catches the error and goes on would commit only what follows. The budget raises again
    # at the block's end, so the attempt is rolled back and runs whole in a thread.

    from hanzocloud.storage import OPERATIONAL_ERRORS

    store = TenantStore(tmp_path, master, write_budget=0.002)
    await write(store, "acme", "first")
    attempts: list[bool] = []

    def careless(conn: Any) -> None:
        attempts.append(threading.current_thread() is threading.main_thread())
        with contextlib.suppress(OPERATIONAL_ERRORS):
            conn.exec_driver_sql(BULK)
        conn.exec_driver_sql("INSERT INTO t VALUES ('after')")

    await store.run_sync("acme", "notes", careless, movable=True)
    assert attempts == [True, False]
    rows = await store.run_sync("acme", "notes", lambda c: [tuple(r) for r in c.exec_driver_sql(
        "SELECT v, count(*) FROM t GROUP BY v ORDER BY v")], read_only=True)
    assert rows == [("after", 1), ("bulk", 300000), ("first", 1)]
    await store.close()


async def test_moving_is_refused_with_overloaded_when_the_thread_backlog_is_full(
        tmp_path: Path, master: MasterKey, monkeypatch: pytest.MonkeyPatch) -> None:

    from hanzocloud import metrics
    from hanzocloud.errors import Overloaded
    from hanzocloud.storage import store as store_module

    monkeypatch.setattr(store_module, "THREAD_BACKLOG", 2)
    store = TenantStore(tmp_path, master, read_budget=0.001)
    await write(store, "acme", "first")
    gate = Gate()

    def held(conn: Any) -> int:
        gate.hold()  # in its thread: stays there until opened
        return int(conn.exec_driver_sql(HEAVY).scalar_one())

    before = metrics.THREAD_REFUSALS._value.get()
    first = [asyncio.create_task(store.run_sync("acme", "notes", held, read_only=True))
             for _ in range(2)]
    while store._in_threads < 2:
        await asyncio.sleep(0.01)
    with pytest.raises(Overloaded) as refused:
        await store.run_sync("acme", "notes", held, read_only=True)
    with pytest.raises(Overloaded):  # offloaded work shares the backlog
        await store.run_sync("acme", "notes", held, offload=True)
    assert refused.value.status == 503 and refused.value.retry_after == 1
    assert metrics.THREAD_REFUSALS._value.get() == before + 2
    # Short work still runs on the loop meanwhile, and the backlog drains.
    assert await store.run_sync("acme", "notes", lambda c: 1, read_only=True) == 1
    gate.opened.set()
    assert await asyncio.gather(*first) == [2000000, 2000000]
    assert store._in_threads == 0
    assert await store.run_sync("acme", "notes", held, read_only=True) == 2000000
    await store.close()


async def test_a_cancelled_caller_waits_for_its_transaction_thread_to_finish(
        tmp_path: Path, master: MasterKey) -> None:
    # The caller's slot in the thread backlog (and a lock it holds across the call, as base
    # writers do) must last as long as the SQL really runs, cancellation or not.

    store = TenantStore(tmp_path, master, read_budget=0.001)
    await write(store, "acme", "first")
    gate = Gate()

    def held(conn: Any) -> int:
        gate.hold()
        return int(conn.exec_driver_sql(HEAVY).scalar_one())

    lock = asyncio.Lock()

    async def locked_read() -> int:
        async with lock:
            return int(await store.run_sync("acme", "notes", held, read_only=True))

    task = asyncio.create_task(locked_read())
    await gate.reached()
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done() and lock.locked() and store._in_threads == 1
    gate.opened.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not lock.locked() and store._in_threads == 0
    await store.close()


async def test_committed_runs_once_a_transaction_commits_even_if_the_caller_is_cancelled(
        tmp_path: Path, master: MasterKey) -> None:

    store = TenantStore(tmp_path, master, write_budget=0.001)
    await write(store, "acme", "first")
    seen: list[Any] = []
    # Inline, and moved to a thread after outrunning the budget: called with fn's result.
    assert await store.run_sync("acme", "notes", lambda c: "short", committed=seen.append,
                                movable=True) == "short"
    assert await store.run_sync("acme", "notes", lambda c: c.exec_driver_sql(BULK).rowcount,
                                committed=seen.append, movable=True) == 300000
    assert seen == ["short", 300000]
    # A failed transaction commits nothing and calls nothing.
    with pytest.raises(ValueError):
        await store.run_sync("acme", "notes", lambda c: int("x"), committed=seen.append)
    assert seen == ["short", 300000]

    gate = Gate()

    def slow(conn: Any) -> str:
        conn.exec_driver_sql("INSERT INTO t VALUES ('late')")
        gate.hold()
        conn.exec_driver_sql(BULK)
        return "late"

    task = asyncio.create_task(store.run_sync("acme", "notes", slow, committed=seen.append,
                                              movable=True))
    await gate.reached()
    task.cancel()
    gate.opened.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen[-1] == "late"  # it committed after all, and the caller's follow-up ran
    assert "late" in await read(store, "acme")
    await store.close()
