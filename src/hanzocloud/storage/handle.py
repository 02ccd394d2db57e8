"""An open tenant database: its engines, its held connection and its transactions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import sqlcipher3
from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.util import greenlet_spawn

from hanzocloud.inline_sqlite import sqlite_code
from hanzocloud.storage.shm import trim_wal_index
from hanzocloud.storage.sqlite import OPERATIONAL_ERRORS, Budget, wal_is_short

if TYPE_CHECKING:
    from hanzocloud.storage.store import TenantStore

# Connections a tenant's worker-thread transactions may use at once. The inline engine's
# pool holds one connection for the loop thread, these, and one more for a transaction
# nested in an inline one (which must never wait on the pool: it runs on the loop).
THREAD_CONNECTIONS = 3
# Result codes after which the loop's held connection is dropped, not reused: a connection
# that found its file read-only, unopenable or failing I/O may stay so when the file is not.
_STALE_CONNECTION = frozenset({8, 10, 14})  # READONLY, IOERR, CANTOPEN (primary codes)


class StorageHooks(Protocol):
    """What the durability replicator (hanzocloud.replicate) learns from the store."""

    async def before_open(self, org: str, service: str, path: Path) -> None: ...
    def before_connect(self, org: str, service: str, path: Path) -> None: ...
    async def opened(self, org: str, service: str, path: Path) -> None: ...
    def touched(self, org: str, service: str) -> None: ...
    async def closed(self, org: str, service: str) -> None: ...


@dataclass(eq=False)
class TenantHandle:
    """An open tenant database.

    Two ways in, each built on first use: an async engine for `AsyncSession`s (a session may
    await between statements; each statement runs on the loop thread, and a wait for another
    writer's lock is an asyncio back-off), and a synchronous engine that `TenantStore.run_sync`
    drives on the event loop thread itself (one whole transaction, retried if locked out).
    """

    org: str
    service: str
    path: Path
    connector: Callable[..., sqlcipher3.Connection]
    store: TenantStore
    last_used: float = field(default_factory=time.monotonic)
    users: int = 0
    _engine: AsyncEngine | None = None
    _sessions: async_sessionmaker[AsyncSession] | None = None
    _sync_engine: Engine | None = None
    _held: Connection | None = None  # the loop thread's connection, kept between transactions
    # Transactions running in worker threads each take one of the pool's overflow
    # connections: they queue here, on the loop, rather than in a thread on the pool.
    threads: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(THREAD_CONNECTIONS))

    @property
    def engine(self) -> AsyncEngine:
        """The async engine (built on first use)."""
        if self._engine is None:
            store = self.store
            self._engine = store.engines.asynchronous(self.connector, self.path,
                                                      lambda: store.busy_seconds)
            self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        return self._engine

    @property
    def sync_engine(self) -> Engine:
        """The engine `run_sync` uses on the loop thread (built on first use)."""
        if self._sync_engine is None:
            self._sync_engine = self.store.engines.inline(self.connector)
        return self._sync_engine

    @contextlib.contextmanager
    def transaction(self, *, inline: bool) -> Iterator[Connection]:
        """One transaction on the synchronous engine, committed when the block ends.

        Inline transactions (on the loop thread, which never runs two at once) reuse one
        connection kept checked out between them, which spares a pool checkout and return
        (about three quarters of an empty transaction's cost). A transaction nested inside
        one, or one in a worker thread, takes a connection from the pool."""
        with self._connection(inline) as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def snapshot(self, *, inline: bool, budget: float | None = None) -> Iterator[Connection]:
        """A read-only transaction: on the held connection when `inline` (as `transaction`),
        else on one from the pool.

        Every statement in the block reads one snapshot of the database (a list page, its
        count and its expansions agree even while another process writes), and the block
        ends in a rollback. It is begun and ended on the driver connection itself:
        SQLAlchemy's transaction bookkeeping costs more than the short read it would wrap.
        A block that changes rows raises `RuntimeError` (the changes are rolled back).

        With a `budget` (seconds), SQLite interrupts a statement still running once the
        block has taken that long (it raises "interrupted"; see `interrupted`)."""
        with self._connection(inline) as conn:
            yield from self._read_only(conn, budget)

    @staticmethod
    def _read_only(conn: Connection, budget: float | None) -> Iterator[Connection]:
        raw: Any = conn.connection.dbapi_connection
        before = raw.total_changes
        raw.execute("BEGIN")
        try:
            with Budget(raw, budget):
                yield conn
        finally:
            if conn.in_transaction():  # a statement through SQLAlchemy joined it
                conn.rollback()
            elif raw.in_transaction:
                raw.rollback()
        if raw.total_changes != before:
            raise RuntimeError("a read-only transaction changed rows (rolled back)")

    @contextlib.contextmanager
    def _connection(self, inline: bool) -> Iterator[Connection]:
        """The connection a transaction runs on: the held one for an inline transaction
        (kept checked out afterwards), else, in a worker thread or nested inside an inline
        transaction, one from the pool (returned afterwards)."""
        held = self._held
        if not inline or (held is not None and held.in_transaction()):
            with self.sync_engine.connect() as conn:
                yield conn
            return
        if held is None or held.invalidated or held.closed:
            held = self._held = self.sync_engine.connect()
        try:
            yield held
        except OPERATIONAL_ERRORS as exc:
            code = sqlite_code(exc)
            if code is not None and code & 0xFF in _STALE_CONNECTION:
                held.invalidate()  # the next inline transaction connects afresh
                self._held = None
            raise

    def session(self) -> AsyncSession:
        """A new session on this tenant's database."""
        self.engine  # noqa: B018 - builds the session factory
        assert self._sessions is not None
        return self._sessions()

    def wal_is_short(self) -> bool:
        """Whether closing now is cheap enough for the loop thread (see `wal_is_short`)."""
        return wal_is_short(self.path)

    async def dispose(self) -> None:
        """Close every connection of both engines: on the loop thread when the WAL is
        short (a thread hop costs the loop more than such a close), else in a thread.
        Then, if no connection is left on the file, its wal-index is emptied for its rest
        (see `trim_wal_index`)."""
        if self._held is not None:
            self._held.close()  # back to the pool, which closes it below
            self._held = None
        # Each engine's pool is closed, not `Engine.dispose`d: that builds a new pool in
        # its place, half the cost of a close, for a handle nobody uses again.
        if self._sync_engine is not None:
            close = self._sync_engine.pool.dispose
            if self.wal_is_short():
                close()
            else:
                await asyncio.to_thread(close)
        if self._engine is not None:  # the aiosqlite adapter's close runs in a greenlet
            await greenlet_spawn(self._engine.sync_engine.pool.dispose)
        trim_wal_index(self.path)
