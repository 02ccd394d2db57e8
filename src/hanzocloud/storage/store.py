"""TenantStore: one SQLCipher file per (org, service), opened lazily, kept in a bounded LRU."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlcipher3
import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.ext.asyncio import AsyncSession

from hanzocloud import metrics
from hanzocloud.errors import Overloaded
from hanzocloud.inline_sqlite import CancelledAfterCall, patiently
from hanzocloud.keys import KeyUnwrapError, MasterKey, lp, new_dek, unwrap_dek, wrap_dek
from hanzocloud.storage.engines import Engines
from hanzocloud.storage.files import (
    GLOBAL_ORG,
    _GlobalOrg,
    validate_service,
    validate_slug,
    write_file_atomic,
)
from hanzocloud.storage.handle import StorageHooks, TenantHandle
from hanzocloud.storage.sqlite import (
    OPERATIONAL_ERRORS,
    Budget,
    busy_error,
    connect_sqlcipher,
    interrupted,
)

log = structlog.get_logger("hanzocloud.storage")
_CACHE_HIT = metrics.TENANT_CACHE.labels("hit")  # counted on every open: look the children up once
_CACHE_MISS = metrics.TENANT_CACHE.labels("miss")

# Worker threads the store runs tenant transactions in when they leave the loop.
SQL_THREADS = 4
# Evicted handles whose close may be pending before the next open waits for them.
MAX_PENDING_CLOSES = 16
# Transactions that may be in, or waiting for, the store's worker threads at once (moved
# reads and writes, offloaded ones); past that, moving one more is refused with Overloaded.
THREAD_BACKLOG = 64


class TenantStore:
    """Opens tenant databases on demand and keeps at most `max_open` of them open."""

    def __init__(
        self,
        data_dir: Path,
        master: MasterKey,
        *,
        max_open: int = 256,
        idle_seconds: float = 300.0,
        pool_size: int = 4,
        read_budget: float = 0.02,
        write_budget: float = 0.02,
    ) -> None:
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self.data_dir = data_dir
        self.master = master
        # How long a read-only run_sync, or a movable write, may hold the loop thread before
        # it moves to a worker thread (0: never moves).
        self.read_budget = read_budget
        self.write_budget = write_budget
        self._in_threads = 0  # transactions in or waiting for the store's threads
        self.max_open = max_open
        self.idle_seconds = idle_seconds
        self.pool_size = pool_size
        self._open: OrderedDict[tuple[str, str], TenantHandle] = OrderedDict()
        self._locks: dict[tuple[str, str], list[Any]] = {}  # key -> [lock, users]
        self._closed = False
        self.engines = Engines(pool_size=pool_size)
        self.busy_seconds = 10.0  # how long a statement or run_sync retries a locked file
        self._closing: set[asyncio.Task[None]] = set()
        # Worker threads for transactions that leave the loop (moved reads, schema changes):
        # their own, so heavy SQL never takes the default pool's threads, which the replicator
        # needs (its lease heartbeat among them) and tenant closes use.
        self._sql_threads = ThreadPoolExecutor(SQL_THREADS, thread_name_prefix="hanzocloud-sql")
        self._releasing: set[asyncio.Future[None]] = set()  # evicted, connections still open
        self.opens = 0  # cold opens, for metrics and tests
        self.peak_open = 0
        # Set by the replicator: it then owns checkpoints (wal_autocheckpoint=0 here) and is
        # told about opens, sessions and closes so it can ship the WAL and hydrate files.
        self.replicator: StorageHooks | None = None

    # -- paths ---------------------------------------------------------------------------

    def path_for(self, org: str, service: str) -> Path:
        """The database path for (org, service); org GLOBAL only through the *_global calls."""
        validate_service(service)
        if isinstance(org, _GlobalOrg):
            return self.data_dir / "global" / f"{service}.db"
        return self.data_dir / "orgs" / validate_slug(org) / f"{service}.db"

    def exists(self, org: str, service: str) -> bool:
        """Whether this tenant's file (or its sidecar) has been created."""
        path = self.path_for(org, service)
        return path.exists() or path.with_name(path.name + ".dek").exists()

    # -- keys ----------------------------------------------------------------------------

    def load_dek(self, org: str, service: str, *, create: bool = True) -> bytes:
        """Unwrap (or on first use create) the page key of one file."""
        return self._dek_at(self.path_for(org, service), org, service, create=create)

    def _dek_at(self, path: Path, org: str, service: str, *, create: bool = True) -> bytes:
        sidecar = path.with_name(path.name + ".dek")
        try:
            return unwrap_dek(self.master, org, service, sidecar.read_bytes(), source=sidecar)
        except FileNotFoundError:
            if not create:
                raise
        if path.exists() and path.stat().st_size > 0:
            # A database without its key is not something to overwrite silently; the client
            # learns only that its data cannot be opened (not where it lives).
            log.warning("tenant_key_missing", org=org, service=service, path=str(path))
            raise KeyUnwrapError(f"{path} exists but its key sidecar is missing")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        file_id, dek = new_dek()
        if not write_file_atomic(sidecar, wrap_dek(self.master, org, service, dek, file_id),
                                 exclusive=True):
            # Another process created it first: use theirs.
            return unwrap_dek(self.master, org, service, sidecar.read_bytes(), source=sidecar)
        return dek

    def file_key(self, org: str, service: str, purpose: str) -> bytes:
        """A 32-byte key bound to one database file: HKDF of its page key.

        Use it to seal values stored inside that file. Unlike `Deps.derive_key` (rooted in
        the master key) it survives master-key rotation and travels with the file when the
        file is replicated or restored.
        """
        dek = self.load_dek(org, service)
        info = b"hanzocloud/v1/file-key" + lp(purpose)
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(dek)

    def global_file_key(self, service: str, purpose: str) -> bytes:
        """`file_key` of the platform-wide database of `service`."""
        return self.file_key(GLOBAL_ORG, service, purpose)

    def connect_sync(self, org: str, service: str) -> sqlcipher3.Connection:
        """A plain synchronous connection, for CLI tools and maintenance jobs.

        Blocking. With a replicator it first takes the lease and restores a file missing (or
        superseded) here, as `open` does, and raises TenantUnavailable where an open would:
        a file created empty here would otherwise be shipped over the sink's history.
        """
        path = self.path_for(org, service)
        if self.replicator is not None:
            self.replicator.before_connect(org, service, path)
        conn = connect_sqlcipher(path, self._dek_at(path, org, service))
        if self.replicator is not None:
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            self.replicator.touched(org, service)
        return conn

    # -- handles -------------------------------------------------------------------------

    def _build(self, org: str, service: str, path: Path) -> TenantHandle:
        dek = self._dek_at(path, org, service)

        replicated = self.replicator is not None

        def connector(busy_ms: int = 10_000) -> sqlcipher3.Connection:
            conn = connect_sqlcipher(path, dek, busy_ms=busy_ms)
            if replicated:  # frames stay in the WAL until the replicator has shipped them
                conn.execute("PRAGMA wal_autocheckpoint = 0")
            return conn

        return TenantHandle(org, service, path, connector, self)

    async def open(self, org: str, service: str) -> TenantHandle:
        """Return the open handle for (org, service), opening it (cold) if needed."""
        if self._closed:
            raise RuntimeError("TenantStore is closed")
        key = (org, service)
        handle = self._open.get(key)
        if handle is not None:
            self._open.move_to_end(key)
            handle.last_used = time.monotonic()
            _CACHE_HIT.inc()
            return handle
        path = self.path_for(org, service)  # a bad slug is refused before anything is kept
        # One opener per key at a time; the entry lives while anyone waits on it, so a
        # failed or cancelled open leaves nothing behind, and no second lock can appear
        # while a first one still has waiters.
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                handle = self._open.get(key)
                if handle is None:
                    _CACHE_MISS.inc()
                    if self.replicator is not None:  # lease, and restore a missing file first
                        await self.replicator.before_open(org, service, path)
                    handle = self._build(org, service, path)
                    if self.replicator is not None:
                        await self.replicator.opened(org, service, handle.path)
                    await self._make_room()
                    if self._closed:  # closed while this open waited: keep nothing open
                        await self._dispose(handle)
                        raise RuntimeError("TenantStore is closed")
                    self._open[key] = handle
                    self.opens += 1
                    self.peak_open = max(self.peak_open, len(self._open))
                    metrics.TENANT_HANDLES.set(len(self._open))
        finally:
            entry[1] -= 1
            if entry[1] == 0 and self._locks.get(key) is entry:
                del self._locks[key]
        return handle

    @contextlib.asynccontextmanager
    async def session(self, org: str, service: str) -> AsyncIterator[AsyncSession]:
        """`async with store.session(org, svc) as s:`, pinning the handle while in use."""
        handle = await self.open(org, service)
        handle.users += 1
        session = handle.session()
        try:
            yield session
        finally:
            try:
                # Not `async with session`: its exit runs close() in a task of its own, two
                # more loop steps per session, so that a cancellation cannot cut the close
                # short. Over inline connections close() does not suspend (the rollback and
                # the return to the pool run at once), so nothing can cut it short.
                await session.close()
            finally:
                handle.users -= 1
                handle.last_used = time.monotonic()
                if self.replicator is not None:
                    self.replicator.touched(org, service)

    async def run_sync(self, org: str, service: str, fn: Callable[[Any], Any], *,
                       offload: bool = False, read_only: bool = False,
                       movable: bool = False,
                       committed: Callable[[Any], None] | None = None) -> Any:
        """Run `fn(sync_connection)` on the tenant's database inside one transaction.

        By default `fn` runs on the event loop thread, start to commit, with no thread hop per
        statement: right for the short transactions of a request, but the loop waits for as
        long as the SQL runs. Pass `offload=True` for work that may take long (a schema change
        that rewrites a big table): the transaction then runs in a worker thread, and `fn`
        must only touch the connection and thread-safe state.

        If the file is locked by another writer (another process, or an `AsyncSession` of
        this one), the transaction is rolled back and `fn` is called again after a short
        back-off, for up to `busy_seconds`: so `fn` must not have effects outside the database
        that a retry would repeat.

        `read_only=True` runs `fn` in a snapshot (`TenantHandle.snapshot`): all its reads see
        the database at one moment, nothing is committed, and a change raises. An inline read
        that takes longer than `read_budget` is interrupted and run again from the start in a
        worker thread, so one tenant's heavy query does not stall every other request: `fn`
        must then also be safe to call from a worker thread.

        `movable=True` gives a write the same treatment under `write_budget`: interrupted on
        the loop, rolled back, and run again from the start in a worker thread. The caller
        vouches that `fn` is safe there; the caller's own ordering (a per-org lock held across
        this call, say) still holds, since the call returns only once the write committed.

        Moving to a thread is refused with `Overloaded` (503) while `THREAD_BACKLOG`
        transactions are already in or waiting for the store's threads.

        `committed(result)` is called on the loop once the transaction has committed, before
        this returns; also when the caller was cancelled while the transaction ran in a
        worker thread and it committed anyway (the cancellation is raised afterwards). What
        must follow a commit (announcing it) goes there.
        """
        handle = await self.open(org, service)
        handle.users += 1
        wrote = not read_only
        seconds = self.read_budget if read_only else self.write_budget if movable else 0.0
        budget = seconds if seconds > 0 else None

        def attempt(inline: bool) -> Any:
            nonlocal wrote
            if read_only:  # on the loop, within the budget; in a thread, as long as it takes
                with handle.snapshot(inline=inline, budget=budget if inline else None) as conn:
                    return fn(conn)
            with handle.transaction(inline=inline) as conn:
                raw = conn.connection.dbapi_connection
                before = raw.total_changes  # type: ignore[union-attr]
                with Budget(raw, budget if inline else None):  # not the commit: it must end
                    result = fn(conn)
                # A write opened a transaction (DML, or an explicit BEGIN) or changed rows.
                # DDL run outside a transaction is not seen here; the replicator's periodic
                # pass ships it.
                wrote = bool(raw.in_transaction  # type: ignore[union-attr]
                             or raw.total_changes != before)  # type: ignore[union-attr]
                return result

        async def run(in_thread: bool) -> Any:
            if not in_thread:
                return await patiently(lambda: attempt(True), retry=busy_error,
                                       seconds=self.busy_seconds)
            if self._in_threads >= THREAD_BACKLOG:
                metrics.THREAD_REFUSALS.inc()
                log.warning("tenant_threads_overloaded", org=org, service=service,
                            backlog=self._in_threads)
                raise Overloaded("too many long-running database transactions are queued; "
                                 "retry shortly", retry_after=1)
            self._in_threads += 1
            try:
                async with handle.threads:
                    return await patiently(lambda: attempt(False), retry=busy_error,
                                           seconds=self.busy_seconds, offload=True,
                                           executor=self._sql_threads)
            finally:
                self._in_threads -= 1

        try:
            try:
                return self._committed(await run(offload), committed)
            except OPERATIONAL_ERRORS as exc:
                if offload or budget is None or not interrupted(exc):
                    raise
            # A transaction that outran its budget on the loop thread (a scan of a big table,
            # a cascade over many rows): every other request waited meanwhile. It was rolled
            # back, and runs again in a worker thread, where it may take as long as it needs
            # while the loop serves the others.
            (metrics.SLOW_READS if read_only else metrics.SLOW_WRITES).inc()
            log.info("read_moved_to_thread" if read_only else "write_moved_to_thread",
                     org=org, service=service, budget_ms=round(seconds * 1000, 1))
            return self._committed(await run(True), committed)
        except CancelledAfterCall as exc:
            self._committed(exc.result, committed)
            raise
        finally:
            handle.users -= 1
            handle.last_used = time.monotonic()
            if self.replicator is not None and wrote:  # a read leaves nothing to ship
                self.replicator.touched(org, service)

    @staticmethod
    def _committed(result: Any, committed: Callable[[Any], None] | None) -> Any:
        if committed is not None:
            committed(result)
        return result

    async def _make_room(self) -> None:
        while len(self._open) >= self.max_open:
            victim = next((k for k, h in self._open.items() if h.users == 0), None)
            if victim is None:
                log.warning("tenant_lru_all_in_use", open=len(self._open), bound=self.max_open)
                return
            await self._close_handle(victim, wait=False)
        if len(self._releasing) >= MAX_PENDING_CLOSES:
            # Evicted handles close in tasks of their own, which run when the loop gets a
            # turn. A caller that opens tenant after tenant without ever yielding (a script,
            # a loop of inline transactions) would pile them up, each still holding its
            # connections: wait until they let go of them (not for the replicator's shipping
            # that follows), so connections stay bounded as handles are.
            await asyncio.wait(set(self._releasing))

    async def _close_handle(self, key: tuple[str, str], *, wait: bool = True) -> None:
        handle = self._open.pop(key)
        metrics.TENANT_HANDLES.set(len(self._open))
        if wait:
            await self._dispose(handle)
            return
        # An eviction on the open path should not make the caller wait for thread joins.
        loop = asyncio.get_running_loop()
        released: asyncio.Future[None] = loop.create_future()
        self._releasing.add(released)
        released.add_done_callback(self._releasing.discard)
        task = loop.create_task(self._dispose(handle, released))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _dispose(self, handle: TenantHandle,
                       released: asyncio.Future[None] | None = None) -> None:
        try:
            await handle.dispose()
        finally:  # the connections are closed (or failed to): no longer counted as pending
            if released is not None and not released.done():
                released.set_result(None)
        if self.replicator is not None:  # ship the tail now that no connection can write
            await self.replicator.closed(handle.org, handle.service)

    async def evict_idle(self, *, now: float | None = None) -> int:
        """Close handles unused for longer than `idle_seconds`; returns how many closed."""
        now = time.monotonic() if now is None else now
        stale = [k for k, h in self._open.items()
                 if h.users == 0 and now - h.last_used >= self.idle_seconds]
        for key in stale:
            await self._close_handle(key)
        return len(stale)

    async def evict(self, org: str, service: str) -> None:
        """Close one tenant's handle if open (for tools that replace the file)."""
        if (org, service) in self._open:
            await self._close_handle((org, service))

    async def open_global(self, service: str) -> TenantHandle:
        """The platform-wide database of a service (`global/{service}.db`)."""
        return await self.open(GLOBAL_ORG, service)

    def global_session(self, service: str) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        """`async with store.global_session(svc) as s:` on the platform-wide database."""
        return self.session(GLOBAL_ORG, service)

    @property
    def open_count(self) -> int:
        return len(self._open)

    async def janitor(self, interval: float | None = None) -> None:
        """Background task: evict idle handles periodically until cancelled."""
        period = interval or max(1.0, min(self.idle_seconds / 4, 30.0))
        while True:
            await asyncio.sleep(period)
            await self.evict_idle()

    async def close(self) -> None:
        """Close every open handle; the store refuses new opens afterwards."""
        self._closed = True
        for key in list(self._open):
            await self._close_handle(key)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self._sql_threads.shutdown(wait=False)  # work still running finishes; none starts
