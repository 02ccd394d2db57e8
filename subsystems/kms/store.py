"""The kms tables in each org's `kms.db`, the sessions that reach them, and the org's seal
root (derived from the file's page key, see seal.py).

Concurrency: SQLite has one writer per file. Every write transaction starts with a data
change (the driver's implicit BEGIN runs right before it), so the read that follows it sees
a state no other writer can change before commit: check-and-set and version numbering are
atomic even across processes. In this process a per-org lock taken BEFORE a pooled
connection queues writers without spinning in SQLite's busy handler; read-only sessions
never take it, so no task can hold a connection while waiting for the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from hanzocloud.keys import lp
from hanzocloud.storage import TenantHandle, TenantStore

SERVICE = "kms"
ROOT_INFO = b"hanzocloud/v1/kms/seal-root"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS secrets (
        path            TEXT PRIMARY KEY,
        current_version INTEGER NOT NULL DEFAULT 0,
        max_versions    INTEGER NOT NULL DEFAULT 0,
        cas_required    INTEGER NOT NULL DEFAULT 0,
        created_time    TEXT NOT NULL,
        updated_time    TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS secret_versions (
        path          TEXT NOT NULL REFERENCES secrets(path) ON DELETE CASCADE,
        version       INTEGER NOT NULL,
        sealed        BLOB,
        created_time  TEXT NOT NULL,
        created_by    TEXT NOT NULL DEFAULT '',
        deleted_time  TEXT,
        destroyed     INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (path, version))""",
    """CREATE TABLE IF NOT EXISTS transit_keys (
        name                   TEXT PRIMARY KEY,
        type                   TEXT NOT NULL,
        latest_version         INTEGER NOT NULL,
        min_decryption_version INTEGER NOT NULL DEFAULT 1,
        min_encryption_version INTEGER NOT NULL DEFAULT 0,
        deletion_allowed       INTEGER NOT NULL DEFAULT 0,
        created_time           TEXT NOT NULL,
        updated_time           TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS transit_key_versions (
        name          TEXT NOT NULL REFERENCES transit_keys(name) ON DELETE CASCADE,
        version       INTEGER NOT NULL,
        sealed        BLOB NOT NULL,
        public_key    TEXT NOT NULL DEFAULT '',
        created_time  TEXT NOT NULL,
        PRIMARY KEY (name, version))""",
    """CREATE TABLE IF NOT EXISTS audit (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        time        TEXT NOT NULL,
        actor       TEXT NOT NULL,
        org         TEXT NOT NULL,
        action      TEXT NOT NULL,
        kind        TEXT NOT NULL,
        target      TEXT NOT NULL,
        version     INTEGER,
        outcome     TEXT NOT NULL,
        request_id  TEXT NOT NULL,
        via         TEXT NOT NULL)""",
)


def now() -> str:
    """The current UTC time as ISO 8601 with microseconds and a Z."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _create_schema(conn: object) -> None:
    for statement in SCHEMA:
        conn.exec_driver_sql(statement)  # type: ignore[attr-defined]


def seal_root(page_key: bytes, org: str) -> bytes:
    """The org's seal root: HKDF-SHA256 of kms.db's page key (see seal.py for why)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=ROOT_INFO + lp(org)).derive(page_key)


class KmsDb:
    """Sessions on an org's kms.db: `read` for lookups, `write` for anything that changes it."""

    def __init__(self, tenants: TenantStore) -> None:
        self._tenants = tenants
        # Per open handle, so memory follows the store's LRU and a reopened file (evicted,
        # or restored by replication) is set up again from what is on disk now.
        self._roots: weakref.WeakKeyDictionary[TenantHandle, bytes] = (
            weakref.WeakKeyDictionary())
        self._current: weakref.WeakValueDictionary[str, TenantHandle] = (
            weakref.WeakValueDictionary())
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        self._reopened: list[Callable[[str], None]] = []

    def on_reopen(self, listener: Callable[[str], None]) -> None:
        """Call `listener(org)` whenever an org's file is (re)opened: caches must be dropped."""
        self._reopened.append(listener)

    async def _ensure_schema(self, org: str) -> None:
        handle = await self._tenants.open(org, SERVICE)
        if handle not in self._roots:
            await self._tenants.run_sync(org, SERVICE, _create_schema)
            # The file and its sidecar exist now: never create a page key from here.
            key = self._tenants.load_dek(org, SERVICE, create=False)
            self._roots[handle] = seal_root(key, org)
            self._current[org] = handle
            for listener in self._reopened:
                listener(org)

    def root(self, org: str) -> bytes:
        """The seal root of an org whose kms.db is open (called inside a session)."""
        handle = self._current.get(org)
        if handle is None or handle not in self._roots:
            raise RuntimeError(f"kms.db of {org} is not open; seal inside a session")
        return self._roots[handle]

    def _lock(self, org: str) -> asyncio.Lock:
        lock = self._locks.get(org)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[org] = lock
        return lock

    @contextlib.asynccontextmanager
    async def read(self, org: str) -> AsyncIterator[AsyncSession]:
        """A session for lookups only (never commits)."""
        await self._ensure_schema(org)
        async with self._tenants.session(org, SERVICE) as session:
            yield session

    @contextlib.asynccontextmanager
    async def write(self, org: str, *, erase: bool = False) -> AsyncIterator[AsyncSession]:
        """A session for one write transaction; the caller commits, anything else rolls back.

        `erase` for transactions that remove values or key material: freed pages are then
        overwritten with zeros, not merely unlinked (the setting stays on that connection).
        """
        await self._ensure_schema(org)
        async with self._lock(org), self._tenants.session(org, SERVICE) as session:
            if erase:
                await session.execute(text("PRAGMA secure_delete = ON"))
            yield session
