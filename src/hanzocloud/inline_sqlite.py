"""A connection with aiosqlite's shape that runs every statement on the event loop thread.

SQLAlchemy's `sqlite+aiosqlite` dialect drives a connection through awaitables. aiosqlite
answers each one from a worker thread of its own: two thread hops per statement, several per
cold open. Tenant statements are short, so the store hands the dialect this class instead:
each awaitable runs its statement at once, on the loop thread, and returns.

What the thread used to absorb is a wait on another writer's lock. The connection's busy
timeout is 0, so SQLite never waits inside a call (that would block the loop, and could wait
on a session of this very loop). A statement that finds the file locked raises BUSY; it is
retried after an `asyncio.sleep` back-off (1 → 50 ms) for up to `busy_seconds`, and the loop
runs meanwhile. BUSY_SNAPSHOT is not retried: the transaction read a snapshot another writer
has since replaced, and only a rollback cures that.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from typing import Any

import sqlcipher3

from hanzocloud.errors import Busy

# Result codes worth a retry: BUSY, BUSY_RECOVERY (another connection is rebuilding the WAL
# index), LOCKED. BUSY_SNAPSHOT (517) is deliberately absent.
_RETRYABLE = frozenset({5, 261, 6})
_BUSY_SNAPSHOT = 517


async def patiently(call: Callable[[], Any], *, retry: Callable[[Exception], bool],
                    seconds: float, offload: bool = False,
                    executor: Executor | None = None) -> Any:
    """Return `call()` (run in a worker thread of `executor`, or the loop's default one, if
    `offload`; with the caller's context variables). While it raises an error that
    `retry` accepts (another writer holds the file), back off 1 → 50 ms on the loop and call
    again, for up to `seconds` after the first refusal; then `Busy` (503, retry) is raised
    from the last error, as it is at once for a stale snapshot (BUSY_SNAPSHOT) that `retry`
    does not accept. Both the store's `run_sync` and every inline statement wait for locks
    this way.

    A caller cancelled while `call` runs in its thread still waits for the thread to finish
    before the cancellation goes on: what the caller holds meanwhile (a lock that orders
    writes, a slot that bounds threads and connections) is held for as long as the work
    really runs. If `call` then returned, the cancellation is raised as `CancelledAfterCall`,
    which carries its result."""
    delay, deadline = 0.001, 0.0
    while True:
        try:  # the common case: no lock in the way, no timing
            if not offload:
                return call()
            context = contextvars.copy_context()
            running = asyncio.get_running_loop().run_in_executor(executor, context.run, call)
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                await asyncio.wait([running])
                if running.cancelled() or running.exception() is not None:
                    raise
                raise CancelledAfterCall(running.result()) from None
        except Exception as exc:
            if not retry(exc):
                if _stale_snapshot(exc):  # only a new transaction cures it: the client's
                    raise _gave_up() from exc
                raise
            deadline = deadline or time.monotonic() + seconds
            if time.monotonic() + delay > deadline:
                raise _gave_up() from exc
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


def _gave_up() -> Busy:
    return Busy("this org's database is busy with another writer; retry shortly",
                retry_after=1)


def sqlite_code(exc: BaseException) -> int | None:
    """SQLite's result code of a driver error, or of the one SQLAlchemy wraps."""
    code = getattr(getattr(exc, "orig", None) or exc, "sqlite_errorcode", None)
    return code if isinstance(code, int) else None


def _stale_snapshot(exc: Exception) -> bool:
    """SQLITE_BUSY_SNAPSHOT: a transaction that read an older snapshot cannot write now."""
    return sqlite_code(exc) == _BUSY_SNAPSHOT


class CancelledAfterCall(asyncio.CancelledError):
    """A cancellation that arrived while an offloaded call ran, raised once the call had
    returned `result` (its effects, a commit say, took place)."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result


def _locked(exc: Exception) -> bool:
    return isinstance(exc, sqlcipher3.OperationalError) and sqlite_code(exc) in _RETRYABLE


class InlineCursor:
    """The awaitable cursor SQLAlchemy's adapter expects, over a plain sqlcipher3 cursor."""

    __slots__ = ("_cursor", "_busy_seconds")

    def __init__(self, cursor: sqlcipher3.Cursor, busy_seconds: float) -> None:
        self._cursor = cursor
        self._busy_seconds = busy_seconds

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    @property
    def lastrowid(self) -> Any:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return int(self._cursor.arraysize)

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        await patiently(lambda: self._cursor.execute(sql, parameters), retry=_locked,
                        seconds=self._busy_seconds)
        return self

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> InlineCursor:
        rows = list(rows)  # a retry must see the same rows again
        await patiently(lambda: self._cursor.executemany(sql, rows), retry=_locked,
                        seconds=self._busy_seconds)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> Any:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> Any:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _RunNow:
    """SQLAlchemy sets the isolation level by queueing `(future, fn)` on aiosqlite's worker
    queue; here there is no worker, so the call runs at once."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting caller
            future.set_exception(exc)


class InlineConnection:
    """What the dialect calls on an aiosqlite connection, answered on the loop thread."""

    def __init__(self, conn: sqlcipher3.Connection, *, busy_seconds: float,
                 close_inline: Callable[[], bool]) -> None:
        self._conn = conn
        self._close_inline = close_inline
        self._connection: sqlcipher3.Connection | None = conn  # the dialect checks it is open
        self._busy_seconds = busy_seconds
        self._tx = _RunNow()

    @property
    def isolation_level(self) -> Any:
        return self._conn.isolation_level

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor(), self._busy_seconds)

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        return await self.cursor().execute(sql, parameters)

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)

    async def commit(self) -> None:
        await patiently(self._conn.commit, retry=_locked, seconds=self._busy_seconds)

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        conn, self._connection = self._connection, None
        if conn is None:
            return
        if self._close_inline():
            conn.close()
        else:  # closing the last connection checkpoints a long WAL: off the loop
            await asyncio.to_thread(conn.close)

    def stop(self) -> None:
        """Close at once (the dialect's forced terminate)."""
        conn, self._connection = self._connection, None
        if conn is not None:
            conn.close()
