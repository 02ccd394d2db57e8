"""The values the filter compiler builds and compares: one side of a comparison, the SQL
of each operator, JSON paths, and the literal values a rule may carry.

An empty field and `null` are equal, `!=` treats NULL as a value, and `~` is a LIKE that
matches anywhere unless the pattern has its own `%` (PocketBase's semantics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

Expr = Any  # a SQLAlchemy ColumnElement


@dataclass(frozen=True, slots=True)
class Value:
    """One side of a comparison: its SQL expression and, for literals, the Python value."""

    sql: Expr
    const: bool = False
    py: Any = None
    ftype: str = ""


def within(*froms: Any) -> sa.Select[Any]:
    """`SELECT 1 FROM froms`, for an EXISTS: any other table its conditions name belongs to
    an enclosing query, however deep. (On its own SQLAlchemy correlates only with the
    immediately enclosing SELECT; `@collection` joins wrap the whole filter in one more, and
    a path inside it would otherwise pull the outer table into its own FROM, uncorrelated,
    and match whenever any record matched.)"""
    return sa.select(1).select_from(*froms).correlate_except(*froms)


def json_extract(col: Expr, path: Sequence[str]) -> Expr:
    """The value at `path` (`a.b.0`) inside a json column."""
    return sa.func.json_extract(col, "$" + "".join(
        f"[{p}]" if p.isdigit() else f".{p}" for p in path))


_INT64 = range(-(2**63), 2**63)


def sql_number(value: Any) -> Any:
    """A body value as SQLite can take it: an integer beyond 64 bits becomes a float (JSON
    numbers are doubles to PocketBase anyway)."""
    if isinstance(value, list):
        return [sql_number(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        try:
            return float(value)
        except OverflowError:  # past a double's range too
            return math.inf if value > 0 else -math.inf
    return value


def lowered(value: Any, modifier: str) -> Any:
    if modifier != "lower":
        return value
    if isinstance(value, list):
        return [v.lower() if isinstance(v, str) else v for v in value]
    return value.lower() if isinstance(value, str) else value


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _is_null(v: Value) -> Expr:
    if v.const:
        return sa.literal(v.py is None or v.py == "")
    if v.ftype in ("number", "bool"):
        return v.sql.is_(None)
    return sa.or_(v.sql.is_(None), v.sql == "")


def compare(left: Value, op: str, right: Value) -> Expr:
    if op in ("=", "!="):
        if left.const and left.py is None:
            left, right = right, left
        if right.const and right.py is None:
            expr = _is_null(left)
            return expr if op == "=" else ~expr
        expr = left.sql == right.sql
        if op == "=":
            return expr
        # `!=` treats NULL as a value, so an empty field differs from "x" (PocketBase does).
        return left.sql.is_not(right.sql)
    if op in ("~", "!~"):
        if right.const:
            text = "" if right.py is None else str(right.py)
            pattern = sa.literal(text if "%" in text else f"%{_escape_like(text)}%")
        else:
            pattern = sa.literal("%") + right.sql + sa.literal("%")
        # LIKE compares text; SQLite would convert anyway, the cast says so to SQLAlchemy.
        expr = sa.cast(left.sql, sa.String).like(pattern, escape="\\")
        return expr if op == "~" else sa.not_(sa.func.coalesce(expr, False))
    if (left.const and left.py is None) or (right.const and right.py is None):
        return sa.false()
    return {">": left.sql > right.sql, ">=": left.sql >= right.sql,
            "<": left.sql < right.sql, "<=": left.sql <= right.sql}[op]


def is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))
