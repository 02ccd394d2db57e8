"""Transactions on an org's base.db and the in-memory cache of each org's schema.

Every request is one `TenantStore.run_sync` call (one transaction). Writes take a per-org
asyncio lock and start with `BEGIN IMMEDIATE`: SQLite has one writer per file anyway, and
queuing writers here (rather than in SQLite's busy handler, inside worker threads) keeps
100 concurrent writers fair and lossless, and makes DDL transactional (the sqlite3 driver does
not open a transaction before DDL by itself). Reads share the handle's connection pool.

The schema cache is valid because one process serves each tenant: every schema change goes
through `write`, which installs the new schema only after its transaction committed.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa

from hanzocloud.errors import InvalidArgument
from hanzocloud.identity import Identity
from hanzocloud.routing import has_role
from hanzocloud.storage import INTEGRITY_ERRORS, OPERATIONAL_ERRORS, TenantStore
from subsystems.base.collections import Collection, Schema, from_store
from subsystems.base.ddl import ensure_meta, has_meta, load_collections
from subsystems.base.filter_sql import RuleContext

SERVICE = "base"
T = TypeVar("T")
# The ASGI scope of the HTTP request base is serving (set by its middleware), for rules that
# read `@request.headers.*` and `@request.query.*`; None outside one.
REQUEST_SCOPE: ContextVar[Any] = ContextVar("base_request_scope", default=None)
_UNIQUE = re.compile(r"UNIQUE constraint failed: ([\w.,\s]+)")
_CACHE_SIZE = 4096


def is_admin(identity: Identity) -> bool:
    """Admins bypass API rules: platform admins and the org's owners and admins."""
    return identity.is_admin or bool(has_role(identity, "admin"))


def rule_context(identity: Identity, *, body: dict[str, Any] | None = None,
                 method: str = "GET", request: Any = None,
                 context: str = "default") -> RuleContext:
    """The `@request.*` values of one identity (and of the HTTP request `request`, a scope)."""
    auth = {"id": identity.user, "email": identity.email, "org": identity.org,
            "roles": list(identity.roles), "isAdmin": is_admin(identity),
            "collectionName": "users" if identity.user else ""}
    return RuleContext(auth=auth, is_admin=is_admin(identity), body=body, method=method,
                       request=request, context=context)


@dataclass(frozen=True, slots=True)
class Event:
    """A record change to announce over realtime once its transaction commits."""

    action: str
    collection: Collection
    record: dict[str, Any]
    # (identity, subscription check) pairs that may view the record as the write left it
    # (the check: the subscription's filter, query and headers; see realtime.Topic)
    allowed: frozenset[tuple[Identity, Any]] | None = None


# (transaction, collection, record) -> the (identity, check) subscriptions that may view it
Viewers = Callable[["Tx", Collection, dict[str, Any]], frozenset[tuple[Identity, Any]]]


@dataclass
class Tx:
    """One transaction: connection, org, identity, schema, and what to do after commit."""

    conn: sa.Connection
    org: str
    identity: Identity
    schema: Schema
    events: list[Event] = field(default_factory=list)
    new_schema: Schema | None = None
    # Set by realtime: which subscriptions may view a record as this write leaves it.
    viewers: Viewers | None = None
    # The HTTP request this transaction serves (its ASGI scope), if any: `@request.headers`
    # and `@request.query` read it. A transaction built for someone else (realtime checking
    # a subscriber) leaves it None.
    request: Any = None
    # `@request.context`: "realtime" while realtime checks or renders for a subscriber.
    context: str = "default"

    @property
    def admin(self) -> bool:
        return is_admin(self.identity)

    def ctx(self, **kw: Any) -> RuleContext:
        """The rule context of this transaction's caller."""
        return rule_context(self.identity, request=self.request, context=self.context, **kw)

    def set_schema(self, collections: list[Collection]) -> None:
        """Replace the schema for the rest of the transaction (and after commit)."""
        self.schema = Schema(collections)
        self.new_schema = self.schema


class BaseStore:
    """Runs base transactions for orgs and keeps their schemas cached."""

    def __init__(self, tenants: TenantStore) -> None:
        self.tenants = tenants
        self._schemas: OrderedDict[str, Schema] = OrderedDict()
        self._schema_lock = threading.Lock()  # reads moved to worker threads cache schemas too
        self._locks: dict[str, asyncio.Lock] = {}
        self.on_commit: list[Callable[[str, list[Event]], None]] = []
        self.viewers: Viewers | None = None
        # Orgs whose schema change is committing in a worker thread: their reads wait until
        # the new schema is installed, rather than compile against the one it replaces.
        self._settling: dict[str, asyncio.Event] = {}

    def _schema(self, conn: sa.Connection, org: str, *, create: bool = True) -> Schema:
        """The org's collections (cached). A read (`create=False`) of a base.db that has no
        meta table yet sees no collections; a write creates the table."""
        schema = self._schemas.get(org)
        if schema is None:
            if not create and not has_meta(conn):
                return Schema([])
            ensure_meta(conn)
            loaded = Schema([from_store(d) for d in load_collections(conn)])
            schema = self._remember(org, loaded, replace=False)
        return schema

    def _remember(self, org: str, schema: Schema, *, replace: bool = True) -> Schema:
        """Cache `schema` as the org's; returns the cached one. A schema read from the file
        (`replace=False`) does not displace one already cached: a read moved to a worker
        thread may have loaded it from a snapshot older than a schema change that committed
        (and was cached) meanwhile."""
        with self._schema_lock:
            if not replace and org in self._schemas:
                return self._schemas[org]
            self._schemas[org] = schema
            self._schemas.move_to_end(org)
            while len(self._schemas) > _CACHE_SIZE:
                self._schemas.popitem(last=False)
            return schema

    async def read(self, org: str, identity: Identity, fn: Callable[[Tx], T]) -> T:
        """Run `fn` in a read-only snapshot of `org`'s base.db (every query of a request
        sees the same moment: a list page agrees with its total and its expansions)."""
        request = REQUEST_SCOPE.get()
        settling = self._settling.get(org)
        if settling is not None:
            await settling.wait()

        def run(conn: sa.Connection) -> T:
            return fn(Tx(conn, org, identity, self._schema(conn, org, create=False),
                         request=request))

        try:
            return await self.tenants.run_sync(  # type: ignore[no-any-return]
                org, SERVICE, run, read_only=True)
        except OPERATIONAL_ERRORS as exc:
            if "no such" not in str(exc):
                raise
            # A schema change committed between loading the cached schema and the query.
            self._schemas.pop(org, None)
            return await self.tenants.run_sync(  # type: ignore[no-any-return]
                org, SERVICE, run, read_only=True)

    async def write(self, org: str, identity: Identity, fn: Callable[[Tx], T], *,
                    offload: bool = False) -> T:
        """Run `fn` in one write transaction; publish its events after it commits.

        `offload=True` runs it in a worker thread (see `TenantStore.run_sync`): for schema
        changes, which may rewrite a whole table and announce no record events. Any other
        write moves to a worker thread once it outruns the store's write budget."""
        lock = self._locks.setdefault(org, asyncio.Lock())
        holder: list[Tx] = []
        request = REQUEST_SCOPE.get()
        fresh: list[bool] = []  # whether this transaction loaded (or created) the schema

        def run(conn: sa.Connection) -> T:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            fresh[:] = [org not in self._schemas]
            tx = Tx(conn, org, identity, self._schema(conn, org), viewers=self.viewers,
                    request=request)
            holder[:] = [tx]  # run_sync may retry a busy transaction
            try:
                result = fn(tx)
            except INTEGRITY_ERRORS as exc:
                raise unique_violation(tx.schema, str(exc)) from None
            if tx.new_schema is not None:  # it commits next: hold reads until installed
                self._settling[org] = asyncio.Event()  # (this org's lock is ours: no other)
            return result

        def announce(_: Any) -> None:  # once committed, even if our caller was cancelled
            tx = holder[0]
            if tx.new_schema is not None:
                self._remember(org, tx.new_schema)
            if tx.events:
                for listener in self.on_commit:
                    listener(org, tx.events)

        async with lock:
            try:
                # A record write that outruns the write budget on the loop (a cascade over
                # many rows, say) is rolled back and runs again in a worker thread: `run`
                # touches only the connection, the locked caches and realtime's snapshot of
                # its subscribers, and this org's lock stays held until it committed.
                return await self.tenants.run_sync(  # type: ignore[no-any-return]
                    org, SERVICE, run, offload=offload, movable=True, committed=announce)
            except BaseException:
                # A failed schema change, or a failed first write (whose meta table and
                # empty schema rolled back with it), must not leave its schema cached.
                if (holder and holder[0].new_schema is not None) or (fresh and fresh[0]):
                    self._schemas.pop(org, None)
                raise
            finally:
                settling = self._settling.pop(org, None)
                if settling is not None:
                    settling.set()


def unique_violation(schema: Schema, message: str) -> InvalidArgument:
    """Turn SQLite's unique-constraint message into a PocketBase-style 400."""
    data: dict[str, Any] = {}
    m = _UNIQUE.search(message)
    if m:
        for item in m.group(1).split(","):
            table, _, column = item.strip().partition(".")
            data[column or table] = {"code": "validation_not_unique",
                                     "message": "Value must be unique."}
    names = ", ".join(data) or "a unique field"
    return InvalidArgument(f"Failed to save record: {names} must be unique.",
                           details={"fields": data} if data else None)
