"""Prepared reads: a record query compiled to SQL once, then run on the driver directly.

A GET by id or a list page goes through the same steps on every request: build the rule's
expression, build the SELECT, let SQLAlchemy find its compiled form and set up an execution
context. For a given collection, caller and query that work always gives the same SQL and
the same parameters, so it is done once: `prepare` compiles the statement to its SQL text
and positional parameters, and `Prepared.rows` hands them to the SQLCipher cursor of the
transaction's connection.

The cache lives on the org's `Schema`, so a schema change (which installs a new `Schema`,
rules included) starts a fresh one. Within a schema a key must name everything else the SQL
depends on: the caller (the rule context is a pure function of the identity; `caller_key`
says how much of it matters) and the query parameters. A rule or filter that reads the
clock (`@now`, `@todayStart`, …) changes with time and is never cached; neither is one
that reads the request's headers or query, nor anything that depends on a request body.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hanzocloud.identity import Identity
from subsystems.base.collections import Schema
from subsystems.base.filter_parse import varies

# Prepared statements kept per org schema; the oldest goes first when it is full.
CACHE_SIZE = 1024
_PLAIN = (str, int, float, bytes, type(None))
_FILLING = threading.Lock()
_ABSENT = object()


def caller_key(identity: Identity, admin: bool, texts: tuple[str | None, ...]) -> tuple[Any, ...]:
    """What of the caller a statement compiled from `texts` (its rules and filters) depends
    on. Without `@request` in them, only whether the caller is an admin (`admin`: rules
    bypassed, hidden fields usable), so every member shares one statement; with it, the
    whole identity the rule context is built from (`store.rule_context`), as `@request.auth.*`
    values are compiled in."""
    # A plain substring test: identifiers are case-sensitive, so every `@request` macro
    # contains it; a false hit (the text inside a string literal) only keys more narrowly.
    if any(text and "@request" in text for text in texts):
        return ("caller", identity.org, identity.user, identity.email, identity.roles,
                identity.is_admin, admin)
    return ("admin" if admin else "member",)


@dataclass(frozen=True, slots=True)
class Prepared:
    """SQL text and its parameters; `slots` marks the ones given at each run."""

    sql: str
    params: tuple[Any, ...]
    slots: tuple[tuple[int, str], ...] = ()

    def tuples(self, conn: sa.Connection,
               **given: Any) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        """Run on `conn`'s driver connection (inside its transaction): the column names and
        the rows as tuples."""
        params = list(self.params)
        for index, name in self.slots:
            params[index] = given[name]
        driver = conn.connection.dbapi_connection
        assert driver is not None
        cursor = driver.execute(self.sql, params)
        return tuple(d[0] for d in cursor.description), cursor.fetchall()

    def rows(self, conn: sa.Connection, **given: Any) -> list[dict[str, Any]]:
        """As `tuples`, the rows as dicts."""
        names, rows = self.tuples(conn, **given)
        return [dict(zip(names, row, strict=True)) for row in rows]


def prepare(query: sa.Select[Any], dialect: sa.Dialect, *,
            slots: tuple[str, ...] = ()) -> Prepared | None:
    """Compile `query` for `dialect`; None if it cannot run as plain positional SQL.

    Each name in `slots` must be a `bindparam` of `query` (with a placeholder value) whose
    value is given at each run."""
    compiled = query.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    order = compiled.positiontup
    if order is None or compiled.escaped_bind_names:
        return None
    values = compiled.params
    params: list[Any] = []
    for name in order:
        value = values[name]
        # An expanded IN list renders as `<name>_<n>`, typed by the `<name>` parameter.
        bind = compiled.binds.get(name)
        if bind is None:
            bind = compiled.binds.get(name.rpartition("_")[0])
        if bind is not None:
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None and value is not None:
                value = process(value)
        if not isinstance(value, _PLAIN):
            return None
        params.append(value)
    where = tuple((i, name) for i, name in enumerate(order) if name in slots)
    if {name for _, name in where} != set(slots):
        return None
    return Prepared(compiled.string, tuple(params), where)


def cached(schema: Schema, key: Hashable, texts: tuple[str | None, ...],
           build: Callable[[], Prepared | None]) -> Prepared | None:
    """The prepared statement under `key`, built (and kept unless one of `texts`, the
    rules and filters it compiles, reads the clock or the request's headers or query) on
    first use."""
    store: dict[Hashable, Prepared | None] = schema.prepared
    found = store.get(key, _ABSENT)
    if found is not _ABSENT:
        return found  # type: ignore[return-value]
    found = build()
    if not any(varies(text) for text in texts):
        with _FILLING:  # a read moved to a worker thread may fill the cache too
            if len(store) >= CACHE_SIZE:
                del store[next(iter(store))]
            store[key] = found
    return found
