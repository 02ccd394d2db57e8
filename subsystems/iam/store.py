"""iam's SQL: the platform-wide database (orgs, signing keys) and one database per org.

Per-org data (users, applications, roles, API keys, refresh-token families, codes) lives in
`orgs/<org>/iam.db`, so one org's rows are not even in the same file as another's. Every
query binds its parameters; nothing here builds SQL from input.
"""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from hanzocloud.storage import INTEGRITY_ERRORS, TenantHandle, TenantStore

SERVICE = "iam"
DUPLICATE = INTEGRITY_ERRORS

GLOBAL_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS orgs (
        slug TEXT PRIMARY KEY, display_name TEXT NOT NULL, created_at INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS signing_keys (
        kid TEXT PRIMARY KEY, alg TEXT NOT NULL, sealed BLOB NOT NULL,
        public_jwk TEXT NOT NULL, created_at INTEGER NOT NULL,
        retired_at INTEGER, publish_until INTEGER)""",
)

ORG_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS users (
        id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
        password_hash TEXT NOT NULL, roles TEXT NOT NULL, is_admin INTEGER NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS apps (
        client_id TEXT PRIMARY KEY, name TEXT NOT NULL, public INTEGER NOT NULL,
        secret_hash TEXT NOT NULL, redirect_uris TEXT NOT NULL, grants TEXT NOT NULL,
        roles TEXT NOT NULL, first_party INTEGER NOT NULL, created_at INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS roles (
        name TEXT PRIMARY KEY, description TEXT NOT NULL, created_at INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
        name TEXT NOT NULL, roles TEXT NOT NULL, scopes TEXT NOT NULL,
        created_by TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER,
        last_used_at INTEGER, revoked_at INTEGER)""",
    """CREATE TABLE IF NOT EXISTS families (
        id TEXT PRIMARY KEY, client_id TEXT NOT NULL, user_id TEXT NOT NULL,
        created_at INTEGER NOT NULL, revoked_at INTEGER)""",
    """CREATE TABLE IF NOT EXISTS refresh_tokens (
        hash TEXT PRIMARY KEY, family TEXT NOT NULL REFERENCES families(id),
        client_id TEXT NOT NULL, user_id TEXT NOT NULL, scope TEXT NOT NULL,
        created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER)""",
    """CREATE TABLE IF NOT EXISTS auth_codes (
        hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, user_id TEXT NOT NULL,
        redirect_uri TEXT NOT NULL, scope TEXT NOT NULL, challenge TEXT NOT NULL,
        nonce TEXT NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER,
        family TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS revoked_jti (
        jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL)""",
)


def dumps(value: Sequence[str]) -> str:
    """Lists of names are stored as JSON text."""
    return json.dumps(list(value))


def loads(raw: str | None) -> list[str]:
    """The inverse of `dumps`."""
    return [str(v) for v in json.loads(raw or "[]")]


class IamStore:
    """Sessions on iam's databases, creating each schema once per open handle."""

    def __init__(self, tenants: TenantStore) -> None:
        self.tenants = tenants
        self._ready: weakref.WeakSet[TenantHandle] = weakref.WeakSet()

    async def _ensure(self, handle: TenantHandle, schema: Sequence[str]) -> None:
        if handle in self._ready:
            return
        async with handle.engine.begin() as conn:
            for stmt in schema:
                await conn.execute(text(stmt))
        self._ready.add(handle)

    @contextlib.asynccontextmanager
    async def platform(self) -> AsyncIterator[AsyncSession]:
        """A session on the platform-wide iam database."""
        await self._ensure(await self.tenants.open_global(SERVICE), GLOBAL_SCHEMA)
        async with self.tenants.global_session(SERVICE) as session:
            yield session

    @contextlib.asynccontextmanager
    async def org(self, org: str) -> AsyncIterator[AsyncSession]:
        """A session on one org's iam database (the caller has checked the org exists)."""
        await self._ensure(await self.tenants.open(org, SERVICE), ORG_SCHEMA)
        async with self.tenants.session(org, SERVICE) as session:
            yield session


async def one(session: AsyncSession, sql: str, **params: Any) -> dict[str, Any] | None:
    """The first row of a query as a dict, or None."""
    row = (await session.execute(text(sql), params)).mappings().first()
    return dict(row) if row is not None else None


async def all_rows(session: AsyncSession, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Every row of a query as dicts."""
    return [dict(r) for r in (await session.execute(text(sql), params)).mappings().all()]


async def run(session: AsyncSession, sql: str, **params: Any) -> int:
    """Execute one statement; returns the affected row count."""
    result = await session.execute(text(sql), params)
    return int(getattr(result, "rowcount", 0) or 0)
