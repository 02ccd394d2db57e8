"""TenantStore: one SQLCipher file per (org, service), opened lazily, kept in a bounded LRU.

Layout (SPEC §6): `{data_dir}/orgs/{org}/{service}.db` and `{data_dir}/global/{service}.db`,
each with a `.dek` sidecar holding its wrapped page key. Slugs are checked before any path
is built, so a hostile org name never reaches the filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlcipher3
import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, Engine, create_engine, make_url, pool
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from hanzocloud import metrics, sqlfunctions
from hanzocloud.errors import InvalidArgument, Overloaded
from hanzocloud.inline_sqlite import (
    CancelledAfterCall,
    InlineConnection,
    patiently,
    sqlite_code,
)
from hanzocloud.keys import KeyUnwrapError, MasterKey, lp, new_dek, unwrap_dek, wrap_dek
from hanzocloud.walfiles import keep_wal_files

log = structlog.get_logger("hanzocloud.storage")
_CACHE_HIT = metrics.TENANT_CACHE.labels("hit")  # counted on every open: look the children up once
_CACHE_MISS = metrics.TENANT_CACHE.labels("miss")

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}", re.ASCII)
SERVICE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}", re.ASCII)
# Tenant engines run sqlcipher3 connections, whose DB-API exception classes SQLAlchemy's
# adapters do not recognise: they arrive unwrapped. Catch these tuples, never one family alone.
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sa_exc.IntegrityError, sqlcipher3.IntegrityError)
OPERATIONAL_ERRORS: tuple[type[Exception], ...] = (sa_exc.OperationalError,
                                                   sqlcipher3.OperationalError)
# A WAL up to this size is checkpointed on close within about a millisecond.
SHORT_WAL_BYTES = 256 * 1024
# Connections a tenant's worker-thread transactions may use at once. The inline engine's
# pool holds one connection for the loop thread, these, and one more for a transaction
# nested in an inline one (which must never wait on the pool: it runs on the loop).
THREAD_CONNECTIONS = 3
# Worker threads the store runs tenant transactions in when they leave the loop.
SQL_THREADS = 4
# Evicted handles whose close may be pending before the next open waits for them.
MAX_PENDING_CLOSES = 16
# How often (in SQLite VM steps) a transaction with a time budget checks the clock: a short
# statement finishes before the first check; a long one is checked about every 0.1 ms.
PROGRESS_STEPS = 10_000
# Transactions that may be in, or waiting for, the store's worker threads at once (moved
# reads and writes, offloaded ones); past that, moving one more is refused with Overloaded.
THREAD_BACKLOG = 64
# Result codes after which the loop's held connection is dropped, not reused: a connection
# that found its file read-only, unopenable or failing I/O may stay so when the file is not.
_STALE_CONNECTION = frozenset({8, 10, 14})  # READONLY, IOERR, CANTOPEN (primary codes)
_SQLITE_INTERRUPT = 9
GLOBAL = ""  # the org label of platform-wide files in keys and AAD: no slug can be empty


class _GlobalOrg(str):
    """The one value that selects the global folder; a request-supplied "" is a bad slug."""

    __slots__ = ()


GLOBAL_ORG: str = _GlobalOrg(GLOBAL)


def validate_slug(org: object) -> str:
    """Return `org` if it is a valid org slug, else raise InvalidArgument (no path touched)."""
    if not isinstance(org, str) or SLUG_RE.fullmatch(org) is None:
        raise InvalidArgument(
            "invalid org slug: use 1-63 characters of a-z, 0-9 and '-', starting with a "
            "letter or digit",
            details={"field": "org"},
        )
    return org


def validate_service(service: object) -> str:
    """Return `service` if it is a valid service name, else raise InvalidArgument."""
    if not isinstance(service, str) or SERVICE_RE.fullmatch(service) is None:
        raise InvalidArgument("invalid service name", details={"field": "service"})
    return service


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write temp, fsync, then rename (or link when `exclusive`); False if it already existed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
            tmp = path  # nothing left to clean up
        _fsync_dir(path.parent)
        return True
    finally:
        if tmp != path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


def is_busy(exc: BaseException) -> bool:
    """Whether a DB error means another connection holds the lock (worth a retry): its
    SQLite result code, extended codes included, is BUSY or LOCKED."""
    code = sqlite_code(exc)
    return code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def interrupted(exc: Exception) -> bool:
    """Whether `exc` is SQLite's "interrupted" (a transaction that outran its budget)."""
    return isinstance(exc, OPERATIONAL_ERRORS) and sqlite_code(exc) == _SQLITE_INTERRUPT


class Budget:
    """`with Budget(raw, seconds):` interrupts the block's statements on the driver
    connection `raw` once the block has run `seconds` (None: never).

    SQLite's progress handler makes the statement running then fail with "interrupted". A
    block that swallowed that error gets it again at its end, so a transaction cut short is
    never taken for a whole one (and committed). A class rather than a generator: every
    inline transaction enters one, and this costs less than half as much."""

    __slots__ = ("raw", "seconds", "deadline", "fired")

    def __init__(self, raw: Any, seconds: float | None) -> None:
        self.raw, self.seconds = raw, seconds
        self.deadline, self.fired = 0.0, False

    def __enter__(self) -> None:
        if self.seconds is not None:
            self.deadline = time.monotonic() + self.seconds
            self.raw.set_progress_handler(self._check, PROGRESS_STEPS)

    def _check(self) -> bool:
        self.fired = self.fired or time.monotonic() > self.deadline
        return self.fired

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self.seconds is None:
            return
        self.raw.set_progress_handler(None, 0)
        if self.fired and exc_type is None:
            exc = sqlcipher3.OperationalError("interrupted")
            exc.sqlite_errorcode = _SQLITE_INTERRUPT
            raise exc


def _busy(exc: Exception) -> bool:
    return isinstance(exc, OPERATIONAL_ERRORS) and is_busy(exc)


def _quiet_cipher_log() -> None:
    """SQLCipher writes its own plain-text warnings to stderr (a wrong key, a page failing its
    HMAC), which would break the JSON log stream; the same failures reach the caller as
    exceptions, which are logged. The level is process-wide: set it once."""
    with contextlib.closing(sqlcipher3.connect(":memory:")) as conn:
        conn.execute("PRAGMA cipher_log_level = NONE")


_quiet_cipher_log()


def connect_sqlcipher(path: Path, dek: bytes, *, busy_ms: int = 10_000) -> sqlcipher3.Connection:
    """Open one SQLCipher connection with a raw key, the standard pragmas and the SQL
    functions of `hanzocloud.sqlfunctions`. Its `-wal` and `-shm` outlive it (see
    `hanzocloud.walfiles`): the WAL is emptied, not deleted, by the last close."""
    conn = sqlcipher3.connect(str(path), check_same_thread=False)
    try:
        conn.execute(f"PRAGMA key = \"x'{dek.hex()}'\"")
        # Touch the schema so a wrong key fails here, not at the first query.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        conn.executescript("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; "
                           f"PRAGMA busy_timeout = {int(busy_ms)}; PRAGMA synchronous = NORMAL;")
        keep_wal_files(conn)  # no file created or deleted per open and close (see walfiles)
        sqlfunctions.install(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def wal_is_short(db: Path) -> bool:
    """Whether closing `db` now is cheap enough for the loop thread: closing the last
    connection checkpoints the WAL into the file, and a long WAL means disk writes."""
    try:
        return os.path.getsize(f"{db}-wal") <= SHORT_WAL_BYTES
    except OSError:
        return True


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
            self._engine = self.store._async_engine(self)
            self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        return self._engine

    @property
    def sync_engine(self) -> Engine:
        """The engine `run_sync` uses on the loop thread (built on first use)."""
        if self._sync_engine is None:
            self._sync_engine = self.store._inline_engine(self.connector)
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
        short (a thread hop costs the loop more than such a close), else in a thread."""
        if self._held is not None:
            self._held.close()  # back to the pool, which closes it below
            self._held = None
        if self._sync_engine is not None:
            if self.wal_is_short():
                self._sync_engine.dispose()
            else:
                await asyncio.to_thread(self._sync_engine.dispose)
        if self._engine is not None:
            await self._engine.dispose()


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
        self._dialect: Any = None
        self._sync_dialect: Any = None
        self._sync_cache: Any = None
        self._async_cache: Any = None
        self._sync_url = make_url("sqlite://")
        self._async_url = make_url("sqlite+aiosqlite://")
        self._sync_hook: Callable[[Any], None] | None = None
        self._async_hook: Callable[[Any], None] | None = None
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
        path = self.path_for(org, service)
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
        conn = connect_sqlcipher(path, self.load_dek(org, service))
        if self.replicator is not None:
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            self.replicator.touched(org, service)
        return conn

    # -- handles -------------------------------------------------------------------------

    def _build(self, org: str, service: str) -> TenantHandle:
        path = self.path_for(org, service)
        dek = self.load_dek(org, service)

        replicated = self.replicator is not None

        def connector(busy_ms: int = 10_000) -> sqlcipher3.Connection:
            conn = connect_sqlcipher(path, dek, busy_ms=busy_ms)
            if replicated:  # frames stay in the WAL until the replicator has shipped them
                conn.execute("PRAGMA wal_autocheckpoint = 0")
            return conn

        return TenantHandle(org, service, path, connector, self)

    def _async_engine(self, handle: TenantHandle) -> AsyncEngine:
        # Nothing here refers back to the handle (which holds the engine): an evicted
        # handle is then freed by reference counting, not left to the cycle collector.
        connector, path = handle.connector, handle.path

        # The aiosqlite dialect, over connections that answer on the loop thread (see
        # hanzocloud.inline_sqlite): busy timeout 0, lock waits become asyncio back-offs.
        async def connect() -> InlineConnection:
            return InlineConnection(connector(busy_ms=0), busy_seconds=self.busy_seconds,
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

    def _inline_engine(self, connector: Callable[..., sqlcipher3.Connection]) -> Engine:
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
                    handle = self._build(org, service)
                    if self.replicator is not None:
                        await self.replicator.opened(org, service, handle.path)
                    await self._make_room()
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
                return await patiently(lambda: attempt(True), retry=_busy,
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
                    return await patiently(lambda: attempt(False), retry=_busy,
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
