"""Query parameters of the records API: page, perPage, sort, fields, expand, skipTotal."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import sqlalchemy as sa

from hanzocloud.errors import InvalidArgument
from subsystems.base.collections import Collection, Schema
from subsystems.base.filter_sql import MAX_HOPS, RuleContext, listable
from subsystems.base.filter_values import json_extract

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


EXCERPT = re.compile(r"excerpt\(\s*(\d{1,6})\s*(?:,\s*(true|false|1|0)\s*)?\)")


def _items(raw: str) -> list[str]:
    """Split a comma list, except inside parentheses (`a,b:excerpt(200,true)`)."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(raw):
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            items.append(raw[start:i])
            start = i + 1
    items.append(raw[start:])
    return [item.strip() for item in items if item.strip()]


def parse_tree(raw: str | None, *, depth: int = MAX_EXPAND_DEPTH, what: str) -> Tree:
    """`a,b.c,b.d` -> {"a": {}, "b": {"c": {}, "d": {}}}.

    In `fields`, a last part `name:excerpt(N[, true])` asks for a plain-text excerpt of at
    most N characters (with "..." when cut and the flag is true): it is kept in the tree as
    an extra key `:excerpt:N:1` under the name, a key no field can have."""
    tree: Tree = {}
    if not raw:
        return tree
    if len(raw) > 2000:
        raise InvalidArgument(f"{what} is too long")
    for item in _items(raw):
        parts = item.split(".")
        if len(parts) > depth:
            raise InvalidArgument(f"{what} '{item[:100]}' is deeper than {depth} levels")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part.split(":", 1)[0].strip(), {})
        name, _, modifier = parts[-1].partition(":")
        node = node.setdefault(name.strip(), {})
        found = EXCERPT.fullmatch(modifier.strip()) if what == "fields" and modifier else None
        if found:
            ellipsis = found.group(2) in ("true", "1")
            node[f":excerpt:{int(found.group(1))}:{int(ellipsis)}"] = {}
        elif modifier and what == "fields":
            raise InvalidArgument(f"fields: unknown modifier ':{modifier[:40]}' "
                                  "(only :excerpt(maxLength[, withEllipsis]))")
    return tree


class _Text(HTMLParser):
    """Collects the text of an HTML fragment (scripts and styles left out)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def excerpt(value: Any, length: int, ellipsis: bool) -> Any:
    """Plain text of `value` (HTML tags dropped, whitespace collapsed), cut to `length`."""
    if not isinstance(value, str):
        return value
    reader = _Text()
    reader.feed(value)
    reader.close()
    text = " ".join("".join(reader.parts).split())
    if len(text) <= length:
        return text
    return text[:length].rstrip() + ("..." if ellipsis else "")


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


_SEGMENT = re.compile(r"[A-Za-z0-9_]{1,64}", re.ASCII)


def _sort_key(schema: Schema, coll: Collection, table: Any, path: list[str],
              ctx: RuleContext | None, hops: int = 0) -> Any:
    """The value a sort path names: a column, a JSON path in a json field, or a field of the
    record a single relation points to (a scalar subquery, NULL when the relation is empty,
    or points to a record the caller may not list)."""
    admin = ctx is None or ctx.is_admin
    name, rest = path[0], path[1:]
    if name in ("id", "created", "updated"):
        if rest:
            raise InvalidArgument(f"cannot sort by '{'.'.join(path)}': '{name}' has no sub-fields")
        return table.c[name]
    f = coll.field(name)
    if f is None:
        raise InvalidArgument(f"cannot sort by '{name[:64]}': no such field in '{coll.name}'")
    if f.hidden and not admin:
        raise InvalidArgument(f"cannot sort by '{name}': the field is hidden")
    col = table.c[f.name]
    if not rest:
        return col
    if f.type == "json":
        return json_extract(col, rest)
    if f.type != "relation" or f.multi:
        raise InvalidArgument(f"cannot sort by '{'.'.join(path)}': only a single relation or a "
                              "json field has sub-fields to sort by")
    if hops >= MAX_HOPS:
        raise InvalidArgument(f"sort paths are limited to {MAX_HOPS} relation hops")
    target = schema.by_id[f.target]
    alias = schema.table(target).alias()
    inner = _sort_key(schema, target, alias, rest, ctx, hops + 1)
    seen = None if ctx is None else listable(schema, target, alias, ctx)
    query = sa.select(inner).where(alias.c.id == col)
    return (query if seen is None else query.where(seen)).scalar_subquery()


def order_by(schema: Schema, collection: Collection, table: Any, sort: str, *,
             ctx: RuleContext | None = None) -> list[Any]:
    """ORDER BY clauses for PocketBase's `sort` (`-created,title`, `author.name`, `@random`)
    for the caller of `ctx` (None: an admin): a hidden field only for admins, and a path
    through a relation reads only records the caller may list."""
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
        path = name.split(".")
        if not all(_SEGMENT.fullmatch(p) for p in path):
            raise InvalidArgument(f"cannot sort by '{name[:64]}': not a field path")
        col = _sort_key(schema, collection, table, path, ctx)
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
    return {k: _picked(data[k], tree.get(k)) for k in keys}


def _picked(value: Any, tree: Tree | None) -> Any:
    for key in tree or ():
        if key.startswith(":excerpt:"):
            _, _, length, flag = key.split(":")
            return excerpt(value, int(length), flag == "1")
    return pick(value, tree)
