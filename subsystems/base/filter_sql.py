"""Compile a parsed filter into a SQLAlchemy boolean expression over a collection's table.

Every identifier is resolved against the collection schema (unknown field: 400) and every
literal becomes a bound parameter, so user text never becomes SQL. Paths traverse relations
(`author.org.name`) with correlated EXISTS subqueries; multi-valued fields and relations are
read with `json_each`. A plain operator on a multi-valued operand means "every value
matches", the `?` form means "at least one value matches" (PocketBase's semantics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from starlette.datastructures import Headers, QueryParams

from hanzocloud.errors import InvalidArgument
from subsystems.base.collections import Collection, Schema
from subsystems.base.fields import Field
from subsystems.base.filter_parse import (
    Call,
    Cmp,
    Group,
    Ident,
    Lit,
    Node,
    Operand,
    parse_filter,
)
from subsystems.base.filter_values import (
    Expr,
    Value,
    compare,
    is_number,
    json_extract,
    lowered,
    sql_number,
    within,
)
from subsystems.base.util import format_time

Inner = Callable[[Value], Expr]
MAX_HOPS = 6
AUTH_KEYS = ("id", "email", "org", "roles", "isAdmin", "collectionName")


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What `@request.*` means for one evaluation: the caller, for writes the body, and the
    HTTP request being served (its ASGI scope; None outside one: realtime, Deps calls)."""

    auth: dict[str, Any]
    is_admin: bool = False
    body: dict[str, Any] | None = None
    method: str = "GET"
    request: Any = None
    context: str = "default"  # `@request.context`: "realtime" when checking for a subscriber


def request_value(scope: Any, part: str, name: str) -> str:
    """`@request.headers.<name>` (header names lowercased, `-` read as `_`) or
    `@request.query.<name>` (the first value) of the request `scope`; "" when absent."""
    if scope is None:
        return ""
    if part == "query":
        return str(QueryParams(scope.get("query_string", b"")).get(name, ""))
    for key, value in Headers(scope=scope).items():
        if key.replace("-", "_") == name.lower():
            return str(value)
    return ""


class _Resolved:
    """An operand: how to wrap a condition on its value(s) into a boolean expression."""

    def __init__(self, wrap: Callable[[Inner, bool], Expr], multi: bool) -> None:
        self.wrap = wrap
        self.multi = multi


def _const(value: Any) -> _Resolved:
    values = value if isinstance(value, list) else [value]

    def wrap(inner: Inner, every: bool) -> Expr:
        parts = [inner(Value(sa.literal(v), const=True, py=v)) for v in values]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return sa.true() if every else sa.false()
        return sa.and_(*parts) if every else sa.or_(*parts)

    return _Resolved(wrap, isinstance(value, list))


def _now_macros() -> dict[str, str]:
    now = datetime.now(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    year = month.replace(month=1)
    return {
        "@now": format_time(now), "@yesterday": format_time(now - timedelta(days=1)),
        "@tomorrow": format_time(now + timedelta(days=1)), "@todayStart": format_time(day),
        "@todayEnd": format_time(day + timedelta(days=1, microseconds=-1000)),
        "@monthStart": format_time(month),
        "@monthEnd": format_time(next_month - timedelta(microseconds=1000)),
        "@yearStart": format_time(year),
        "@yearEnd": format_time(year.replace(year=year.year + 1) - timedelta(microseconds=1000)),
    }


_NUMERIC_MACROS = {"@second": "second", "@minute": "minute", "@hour": "hour", "@day": "day",
                   "@month": "month", "@year": "year"}


class Compiler:
    """Compiles filters for one collection under one RuleContext."""

    def __init__(self, schema: Schema, collection: Collection, ctx: RuleContext,
                 table: Any | None = None, *, rule: bool = False) -> None:
        self.schema = schema
        self.collection = collection
        self.ctx = ctx
        self.table = table if table is not None else schema.table(collection)
        self.rule = rule
        self._joins: dict[tuple[str, str], Any] = {}  # (collection id, alias) -> joined table

    def compile(self, text: str | None) -> Expr | None:
        """The boolean expression of `text`; None for an empty filter."""
        node = parse_filter(text or "")
        if node is None:
            return None
        expr = self.node(node)
        if not self._joins:
            return expr
        # `@collection` joins: the whole expression must hold for one combination of joined
        # rows. The joins hang off a one-row table with LEFT JOINs, so an empty collection
        # still yields a (NULL) row and `x = 1 || @collection.c.f ?= 2` can hold on `x` alone.
        joined: Any = sa.select(sa.literal(1).label("one")).subquery()
        for (coll_id, _), alias in self._joins.items():
            listable = self._listable(self.schema.by_id[coll_id], alias)
            joined = joined.outerjoin(alias, sa.true() if listable is None else listable)
        return sa.exists(sa.select(1).select_from(joined).where(expr))

    def node(self, node: Node) -> Expr:
        if isinstance(node, Group):
            parts = [self.node(child) for child in node.items]
            return sa.and_(*parts) if node.kind == "and" else sa.or_(*parts)
        return self._cmp(node)

    def _cmp(self, node: Cmp) -> Expr:
        left, right = self._operand(node.left), self._operand(node.right)
        every = not node.any_of
        return left.wrap(lambda lv: right.wrap(lambda rv: compare(lv, node.op, rv), every),
                         every)

    # -- operands ---------------------------------------------------------------------------

    def _operand(self, item: Operand) -> _Resolved:
        if isinstance(item, Lit):
            return _const(item.value)
        if isinstance(item, Call):
            value = self._call(item)
            return _Resolved(lambda inner, every: inner(value), False)
        if item.path[0] == "@collection":
            return self._collection(item)
        if item.path[0].startswith("@"):
            return self._macro(item)
        return self._path(self.collection, self.table, item.path, item.modifier, 0)

    def _macro(self, item: Ident) -> _Resolved:
        head, rest = item.path[0], item.path[1:]
        body_only = item.modifier in ("isset", "length") and rest[:1] == ("body",)
        if item.modifier not in ("", "lower") and not body_only:
            raise InvalidArgument(f"modifier ':{item.modifier}' is not supported on {item.text}")
        if head == "@request" and len(rest) == 2 and rest[0] == "auth":
            if rest[1] not in AUTH_KEYS:
                raise InvalidArgument(f"unknown field {item.text}; @request.auth has "
                                      f"{', '.join(AUTH_KEYS)}")
            return _const(lowered(self.ctx.auth.get(rest[1], ""), item.modifier))
        if head == "@request" and len(rest) >= 2 and rest[0] == "body":
            body = self.ctx.body or {}
            if item.modifier == "isset":
                return _const(rest[1] in body and len(rest) == 2)
            value: Any = body
            for key in rest[1:]:
                value = value.get(key) if isinstance(value, dict) else None
            if item.modifier == "length":  # how many values were sent (a list, or one)
                return _const(len(value) if isinstance(value, list) else
                              0 if value is None or value == "" else 1)
            if isinstance(value, dict) or (isinstance(value, list) and any(
                    isinstance(v, dict | list) for v in value)):
                value = None
            return _const(lowered(sql_number(value), item.modifier))
        if head == "@request" and rest == ("method",):
            return _const(self.ctx.method)
        if head == "@request" and rest == ("context",):
            return _const(lowered(self.ctx.context, item.modifier))
        if head == "@request" and len(rest) == 2 and rest[0] in ("headers", "query"):
            return _const(lowered(request_value(self.ctx.request, *rest), item.modifier))
        if not rest:
            macros = _now_macros()
            if head in macros:
                return _const(macros[head])
            if head == "@weekday":
                return _const(datetime.now(UTC).isoweekday() % 7)
            if head in _NUMERIC_MACROS:
                return _const(getattr(datetime.now(UTC), _NUMERIC_MACROS[head]))
        raise InvalidArgument(f"unknown or unsupported identifier {item.text} in filter")

    # -- functions --------------------------------------------------------------------------

    def _call(self, call: Call) -> Value:
        """`strftime(format, time, modifier…)` (SQLite's) and `geoDistance(lonA, latA, lonB,
        latB)` (great-circle kilometres). Arguments are literals, macros, nested calls, or
        single-valued fields of this collection."""
        args = [self._argument(call, a) for a in call.args]
        if call.name == "strftime":
            if len(args) < 2 or not (args[0].const and isinstance(args[0].py, str)):
                raise InvalidArgument("strftime takes a format string, a time and optional "
                                      "modifiers: strftime('%Y-%m', created)")
            if any(not (a.const and isinstance(a.py, str)) for a in args[2:]):
                raise InvalidArgument("strftime modifiers must be strings, like '+1 day'")
            return Value(sa.func.strftime(*(a.sql for a in args)), ftype="text")
        if len(args) != 4 or any(a.const and not is_number(a.py) for a in args):
            raise InvalidArgument("geoDistance takes four numbers: geoDistance(lonA, latA, "
                                  "lonB, latB)")
        return Value(sa.func.hc_geo_distance(*(a.sql for a in args)), ftype="number")

    def _argument(self, call: Call, item: Operand) -> Value:
        if isinstance(item, Lit):
            return Value(sa.literal(item.value), const=True, py=item.value)
        if isinstance(item, Call):
            return self._call(item)
        head = item.path[0]
        single = f"{call.name} takes single values: literals, macros or fields of " \
                 f"'{self.collection.name}' (not {item.text})"
        if head == "@collection":
            raise InvalidArgument(single)
        if not head.startswith("@"):
            f = self.collection.field(head)
            if f is not None and f.type == "relation" and len(item.path) > 1:
                raise InvalidArgument(single)
        resolved = self._macro(item) if head.startswith("@") else self._path(
            self.collection, self.table, item.path, item.modifier, 0)
        if resolved.multi:
            raise InvalidArgument(single)
        seen: list[Value] = []

        def capture(value: Value) -> Expr:
            seen.append(value)
            return sa.true()

        resolved.wrap(capture, True)
        if len(seen) != 1:
            raise InvalidArgument(single)
        return seen[0]

    def _collection(self, item: Ident) -> _Resolved:
        """`@collection.<name>[:alias].<path>`: the records of another collection (or this
        one). With a `?` operator the comparison is on the joined record, shared by every
        such comparison with the same name and alias; with a plain operator it must hold
        for every record of that collection (true when it has none)."""
        if len(item.path) < 3:
            raise InvalidArgument(f"{item.text}: expected @collection.<name>.<field>")
        coll = self.schema.by_name.get(item.path[1]) or self.schema.by_id.get(item.path[1])
        if coll is None:
            raise InvalidArgument(f"unknown collection '{item.path[1]}' in {item.text}")
        rest, modifier = item.path[2:], item.modifier
        # Resolve once so unknown names fail now, even if the operand is never used.
        self._path(coll, self.schema.table(coll), rest, modifier, 0)

        def wrap(inner: Inner, every: bool) -> Expr:
            if every:
                fresh = self._alias(coll)
                cond = self._path(coll, fresh, rest, modifier, 0).wrap(inner, True)
                return ~sa.exists(within(fresh).where(
                    *self._seen(coll, fresh), sa.not_(sa.func.coalesce(cond, False))))
            key = (coll.id, item.alias)
            if key not in self._joins:
                self._joins[key] = self._alias(coll)
            return self._path(coll, self._joins[key], rest, modifier, 0).wrap(inner, False)

        return _Resolved(wrap, True)

    def _listable(self, coll: Collection, table: Any) -> Expr | None:
        """Which records of `coll` (at `table`) a client's filter may reach through a path,
        a back-relation or an `@collection` join: those its caller may list (`coll`'s list
        rule, as PocketBase checks since v0.32), so a filter cannot read, value by value,
        what the caller may not see. None: every record (admins; API rules, which admins
        write; a list rule of ""); false for a list rule of null."""
        if self.rule or self.ctx.is_admin:
            return None
        text = coll.rule("listRule")
        if text is None:
            return sa.false()
        if not text.strip():
            return None
        listing = replace(self.ctx, body=None, method="GET")
        return Compiler(self.schema, coll, listing, table, rule=True).compile(text)

    def _seen(self, coll: Collection, table: Any) -> tuple[Expr, ...]:
        listable = self._listable(coll, table)
        return () if listable is None else (listable,)

    def _alias(self, collection: Collection) -> Any:
        # Anonymous: SQLAlchemy names each alias uniquely within the statement, whatever
        # compiled it (a filter, a rule pulled in for one of its paths, a sort).
        return self.schema.table(collection).alias()

    def _path(self, coll: Collection, table: Any, path: tuple[str, ...], modifier: str,
              hops: int) -> _Resolved:
        name, rest = path[0], path[1:]
        f = coll.field(name)
        if name in ("id", "created", "updated"):
            ftype = "date" if name != "id" else "text"
            if rest:
                raise InvalidArgument(f"'{name}' has no sub-fields")
            return self._column(table.c[name], ftype, modifier)
        if f is None:
            via = self.schema.back_relation(coll, name)
            if via is None:
                raise InvalidArgument(f"unknown field '{name}' in collection '{coll.name}'")
            return self._back(name, table, *via, rest, modifier, hops)
        if f.hidden and not self.ctx.is_admin:
            raise InvalidArgument(f"field '{name}' is hidden and cannot be filtered")
        col = table.c[f.name]
        if f.type == "json" and rest:
            return self._column(json_extract(col, rest), "json", modifier)
        if f.type == "relation" and rest:
            if hops >= MAX_HOPS:
                raise InvalidArgument(f"relation paths are limited to {MAX_HOPS} hops")
            return self._hop(f, col, rest, modifier, hops)
        if rest:
            raise InvalidArgument(f"field '{name}' ({f.type}) has no sub-fields")
        if f.multi:
            if modifier == "length":
                return self._column(sa.func.json_array_length(col), "number", "")
            # `:each` spells out what a multi field's plain operators already mean.
            return self._each(col, f, "" if modifier == "each" else modifier)
        if modifier == "each":
            raise InvalidArgument(f"':each' needs a multi-valued field; '{name}' holds one value")
        return self._column(col, f.type, modifier)

    def _column(self, col: Expr, ftype: str, modifier: str) -> _Resolved:
        if modifier == "lower":
            col = sa.func.lower(col)
        elif modifier == "length":
            col, ftype = sa.func.length(col), "number"
        elif modifier:
            raise InvalidArgument(f"modifier ':{modifier}' is not supported on fields")
        value = Value(col, ftype=ftype)
        return _Resolved(lambda inner, every: inner(value), False)

    def _each(self, col: Expr, f: Field, modifier: str) -> _Resolved:
        if modifier and modifier != "lower":
            raise InvalidArgument(f"modifier ':{modifier}' is not supported on '{f.name}'")

        def wrap(inner: Inner, every: bool) -> Expr:
            each = sa.func.json_each(col).table_valued("value").alias()
            item = sa.func.lower(each.c.value) if modifier == "lower" else each.c.value
            cond = inner(Value(item, ftype=f.type))
            if every:
                return ~sa.exists(within(each).where(sa.not_(sa.func.coalesce(cond, False))))
            return sa.exists(within(each).where(cond))

        return _Resolved(wrap, True)

    def _back(self, name: str, table: Any, other: Collection, f: Field,
              rest: tuple[str, ...], modifier: str, hops: int) -> _Resolved:
        """`<collection>_via_<field>.<path>`: the records of `other` whose relation `f` points
        at this record, multi-valued like `@collection` (a plain operator must hold for every
        such record, true when there is none; `?` operators for any)."""
        if not rest:
            raise InvalidArgument(f"'{name}' is a back-relation: filter by one of its fields "
                                  f"({name}.<field>)")
        if f.hidden and not self.ctx.is_admin:
            raise InvalidArgument(f"field '{f.name}' is hidden and cannot be filtered")
        if hops >= MAX_HOPS:
            raise InvalidArgument(f"relation paths are limited to {MAX_HOPS} hops")
        # Resolve once so unknown names fail now, even if the operand is never used.
        self._path(other, self.schema.table(other), rest, modifier, hops + 1)

        def wrap(inner: Inner, every: bool) -> Expr:
            alias = self._alias(other)
            cond = self._path(other, alias, rest, modifier, hops + 1).wrap(inner, every)
            col = alias.c[f.name]
            froms: tuple[Any, ...] = (alias,)
            if f.multi:  # one row per (record, value): the value must be this record's id
                each = sa.func.json_each(col).table_valued("value").alias()
                froms, points = (alias, each), each.c.value == table.c.id
            else:
                points = col == table.c.id
            seen = self._seen(other, alias)
            if every:
                return ~sa.exists(within(*froms).where(
                    points, *seen, sa.not_(sa.func.coalesce(cond, False))))
            return sa.exists(within(*froms).where(points, *seen, cond))

        return _Resolved(wrap, True)

    def _hop(self, f: Field, col: Expr, rest: tuple[str, ...], modifier: str,
             hops: int) -> _Resolved:
        target = self.schema.by_id[f.target]
        # Resolve once so unknown names fail now, even if the operand is never used.
        self._path(target, self.schema.table(target), rest, modifier, hops + 1)

        def wrap(inner: Inner, every: bool) -> Expr:
            alias = self._alias(target)
            nested = self._path(target, alias, rest, modifier, hops + 1)
            cond = nested.wrap(inner, every)
            seen = self._seen(target, alias)
            if not f.multi:
                return sa.exists(within(alias).where(alias.c.id == col, *seen, cond))
            each = sa.func.json_each(col).table_valued("value").alias()
            linked = alias.c.id == each.c.value
            if every:
                return ~sa.exists(within(each, alias).where(
                    linked, *seen, sa.not_(sa.func.coalesce(cond, False))))
            return sa.exists(within(each, alias).where(linked, *seen, cond))

        return _Resolved(wrap, True)


def listable(schema: Schema, collection: Collection, table: Any,
             ctx: RuleContext) -> Expr | None:
    """The records of `collection` (at `table`) the caller of `ctx` may list, for a client's
    path into it (a sort by `author.name`, say); None when it may list them all."""
    return Compiler(schema, collection, ctx, table)._listable(collection, table)


def compile_filter(schema: Schema, collection: Collection, ctx: RuleContext,
                   text: str | None, *, table: Any | None = None,
                   rule: bool = False) -> Expr | None:
    """Compile `text` for `collection` under `ctx`; None when the filter is empty.

    `rule=True` for API rules (written by admins): they may read any collection through
    `@collection`. A client's filter may do so only for collections every member can list."""
    return Compiler(schema, collection, ctx, table, rule=rule).compile(text)
