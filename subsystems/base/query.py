"""Query parameters of the records API: page, perPage, sort, fields, expand, skipTotal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from hanzocloud.errors import InvalidArgument
from subsystems.base.collections import Collection

DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 500
MAX_PAGE = 1_000_000  # keeps OFFSET inside SQLite's 64-bit integers
MAX_EXPAND_DEPTH = 6
Tree = dict[str, "Tree"]


@dataclass(frozen=True, slots=True)
class ListParams:
    """What a list request asked for."""

    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    sort: str = ""
    filter: str = ""
    skip_total: bool = False
    expand: Tree = field(default_factory=dict)
    fields: Tree | None = None


def _int(raw: str | None, name: str, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer, got {raw[:20]!r}") from None


def _flag(raw: str | None) -> bool:
    return (raw or "").lower() in ("1", "true", "t", "yes")


def parse_tree(raw: str | None, *, depth: int = MAX_EXPAND_DEPTH, what: str) -> Tree:
    """`a,b.c,b.d` -> {"a": {}, "b": {"c": {}, "d": {}}}."""
    tree: Tree = {}
    if not raw:
        return tree
    if len(raw) > 2000:
        raise InvalidArgument(f"{what} is too long")
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split(".")
        if len(parts) > depth:
            raise InvalidArgument(f"{what} '{item[:100]}' is deeper than {depth} levels")
        node = tree
        for part in parts:
            node = node.setdefault(part.split(":", 1)[0].strip(), {})
    return tree


def parse_list_params(q: Mapping[str, str]) -> ListParams:
    """Read list parameters from a query string mapping."""
    page = min(max(1, _int(q.get("page"), "page", 1)), MAX_PAGE)
    per_page = _int(q.get("perPage"), "perPage", DEFAULT_PER_PAGE)
    per_page = DEFAULT_PER_PAGE if per_page <= 0 else min(per_page, MAX_PER_PAGE)
    return ListParams(page=page, per_page=per_page, sort=q.get("sort") or "",
                      filter=q.get("filter") or "", skip_total=_flag(q.get("skipTotal")),
                      expand=parse_tree(q.get("expand"), what="expand"),
                      fields=parse_fields(q.get("fields")))


def parse_fields(raw: str | None) -> Tree | None:
    """The `fields` picker; None when absent (everything)."""
    return parse_tree(raw, depth=10, what="fields") if raw else None


def order_by(collection: Collection, table: Any, sort: str) -> list[Any]:
    """ORDER BY clauses for PocketBase's `sort` (`-created,title`, `@random`)."""
    clauses: list[Any] = []
    for item in (s.strip() for s in sort.split(",")):
        if not item:
            continue
        desc = item.startswith("-")
        name = item.lstrip("+-")
        if name == "@random":
            clauses.append(sa.func.random())
            continue
        if name == "@rowid":
            clauses.append(sa.literal_column("rowid").desc() if desc else
                           sa.literal_column("rowid"))
            continue
        f = collection.field(name)
        if name not in ("id", "created", "updated") and f is None:
            raise InvalidArgument(f"cannot sort by '{name[:64]}': no such field in "
                                  f"'{collection.name}'")
        col = table.c[name]
        clauses.append(col.desc() if desc else col.asc())
    if len(clauses) > 10:
        raise InvalidArgument("sort accepts at most 10 fields")
    clauses.append(sa.literal_column("rowid"))  # stable pages: insertion order breaks ties
    return clauses


def pick(data: Any, tree: Tree | None) -> Any:
    """Keep only the keys named by a `fields` tree (`*` keeps every key of its level)."""
    if not tree:
        return data
    if isinstance(data, list):
        return [pick(item, tree) for item in data]
    if not isinstance(data, dict):
        return data
    keys = list(data) if "*" in tree else [k for k in tree if k in data]
    return {k: pick(data[k], tree.get(k)) for k in keys}
