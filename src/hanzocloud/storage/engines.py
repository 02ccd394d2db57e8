"""The SQLAlchemy engines of tenant handles, built without `create_engine` per tenant.

The first engine of each kind is made by `create_engine` / `create_async_engine`, which
probes the dialect; every later one reuses that dialect, its per-connection setup and one
compiled-statement cache (tenants run the same statements), so a cold open pays for its
connection, not for engine construction.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlcipher3
from sqlalchemy import Engine, create_engine, make_url, pool
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hanzocloud.inline_sqlite import InlineConnection
from hanzocloud.storage.handle import THREAD_CONNECTIONS
from hanzocloud.storage.sqlite import wal_is_short


class Engines:
    """Builds the async and the inline engine of each tenant handle."""

    def __init__(self, *, pool_size: int) -> None:
        self.pool_size = pool_size
        self._dialect: Any = None
        self._sync_dialect: Any = None
        self._sync_cache: Any = None
        self._async_cache: Any = None
        self._sync_url = make_url("sqlite://")
        self._async_url = make_url("sqlite+aiosqlite://")
        self._sync_hook: Callable[[Any], None] | None = None
        self._async_hook: Callable[[Any], None] | None = None

    def asynchronous(self, connector: Callable[..., sqlcipher3.Connection], path: Path,
                     busy_seconds: Callable[[], float]) -> AsyncEngine:
        """The engine of a handle's sessions. Nothing here refers back to the handle (which
        holds the engine): an evicted handle is then freed by reference counting, not left
        to the cycle collector."""

        # The aiosqlite dialect, over connections that answer on the loop thread (see
        # hanzocloud.inline_sqlite): busy timeout 0, lock waits become asyncio back-offs.
        async def connect() -> InlineConnection:
            return InlineConnection(connector(busy_ms=0), busy_seconds=busy_seconds(),
                                    close_inline=lambda: wal_is_short(path))

        if self._dialect is None:
            first = create_async_engine("sqlite+aiosqlite://", async_creator=connect,
                                        poolclass=pool.AsyncAdaptedQueuePool,
                                        pool_size=self.pool_size, max_overflow=0,
                                        pool_timeout=30)
            self._dialect = first.sync_engine.dialect
            self._async_cache = first.sync_engine._compiled_cache
            self._async_hook = self._dialect.on_connect_url(first.url)
            return first
        dialect, hook = self._dialect, self._async_hook

        def creator() -> Any:
            conn = dialect.dbapi.connect(async_creator_fn=connect)
            if hook is not None:  # the dialect's own per-connection setup (SQL functions)
                hook(conn)
            return conn

        # As for the inline engines below: the probed dialect, one statement cache, no
        # create_engine per tenant.
        engine = Engine(pool.AsyncAdaptedQueuePool(creator, pool_size=self.pool_size,
                                                   max_overflow=0, timeout=30, dialect=dialect),
                        dialect, self._async_url, query_cache_size=0)
        engine._compiled_cache = self._async_cache
        return AsyncEngine(engine)

    def inline(self, connector: Callable[..., sqlcipher3.Connection]) -> Engine:
        """The engine `run_sync` uses, on the loop thread and in worker threads."""
        # run_sync never waits on a lock inside SQLite (that would block the loop): busy
        # timeout 0, and run_sync backs off and retries instead.
        if self._sync_dialect is None:
            engine = create_engine("sqlite://", creator=lambda: connector(busy_ms=0),
                                   poolclass=pool.QueuePool, pool_size=1,
                                   max_overflow=THREAD_CONNECTIONS + 1,
                                   pool_timeout=10)
            self._sync_dialect = engine.dialect
            self._sync_cache = engine._compiled_cache
            self._sync_hook = self._sync_dialect.on_connect_url(engine.url)
            return engine
        hook = self._sync_hook

        def creator() -> sqlcipher3.Connection:
            conn = connector(busy_ms=0)
            if hook is not None:
                hook(conn)
            return conn

        # Every later engine shares the probed dialect and the compiled-statement cache
        # (tenants run the same statements), and skips create_engine's per-call setup.
        # One connection serves the loop thread: an inline transaction never yields, so two
        # never overlap there. Overflow serves offloaded transactions still running in a
        # worker thread, and a nested call from inside `fn`.
        engine = Engine(pool.QueuePool(creator, pool_size=1,
                                       max_overflow=THREAD_CONNECTIONS + 1, timeout=10,
                                       dialect=self._sync_dialect),
                        self._sync_dialect, self._sync_url, query_cache_size=0)
        engine._compiled_cache = self._sync_cache
        return engine
