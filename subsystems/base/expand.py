"""`expand`: attach related records to each record, nested (`author.org`), in place.

A name is a relation field of the record's collection (`author`), or a back-relation
`<collection>_via_<field>`: the records of `<collection>` whose relation `<field>` points at
this record (`comments_via_post`). A back-relation expands to a list, or to one record when
`<field>` is a single relation that is unique (at most one record can point back).

Related records are fetched from the same org database only (there is no other one to reach)
and filtered by the target collection's view rule, exactly as a direct view would be. Names
that are neither are ignored, as PocketBase does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hanzocloud.errors import PermissionDenied
from subsystems.base.collections import Collection
from subsystems.base.fields import Field

if TYPE_CHECKING:
    from subsystems.base.query import Tree
    from subsystems.base.store import Tx

MAX_IDS = 5000
# Records one back-relation attaches to one record.
MAX_BACK = 1000


def expand_records(tx: Tx, coll: Collection, records: list[dict[str, Any]], tree: Tree,
                   depth: int = 0) -> None:
    """Attach `expand` to each record for every relation named in `tree`."""
    if depth >= 6 or not records:
        return
    for name, subtree in tree.items():
        f = coll.field(name)
        if f is not None:
            if f.type == "relation" and not (f.hidden and not tx.admin):
                _forward(tx, records, name, f, subtree, depth)
            continue
        via = tx.schema.back_relation(coll, name)
        if via is not None and not (via[1].hidden and not tx.admin):
            _back(tx, records, name, *via, subtree, depth)


def _visible(tx: Tx, target: Collection, where: Any, *,
             order: bool = False) -> list[dict[str, Any]] | None:
    """The records of `target` matching `where` that the caller may view (None: none may be)."""
    from subsystems.base.records import present, rule_filter

    table = tx.schema.table(target)
    try:
        cond = rule_filter(tx, target, "viewRule")
    except PermissionDenied:
        return None  # the caller may not view the target collection: nothing to expand
    query = sa.select(table).where(where)
    if cond is not None:
        query = query.where(cond)
    if order:  # a stable order for lists of records pointing back
        query = query.order_by(table.c.created, table.c.id).limit(MAX_IDS)
    return [present(tx, target, r._mapping) for r in tx.conn.execute(query)]


def _forward(tx: Tx, records: list[dict[str, Any]], name: str, f: Field, subtree: Tree,
             depth: int) -> None:
    ids: list[str] = []
    for record in records:
        value = record.get(name)
        ids.extend(value if isinstance(value, list) else [value] if value else [])
    unique = list(dict.fromkeys(ids))[:MAX_IDS]
    if not unique:
        return
    target = tx.schema.by_id[f.target]
    rows = _visible(tx, target, tx.schema.table(target).c.id.in_(unique))
    if not rows:
        return
    found = {r["id"]: r for r in rows}
    if subtree:
        expand_records(tx, target, list(found.values()), subtree, depth + 1)
    for record in records:
        value = record.get(name)
        if isinstance(value, list):
            related: Any = [found[i] for i in value if i in found]
            if not related:
                continue
        elif value in found:
            related = found[value]
        else:
            continue
        record.setdefault("expand", {})[name] = related


def _back(tx: Tx, records: list[dict[str, Any]], name: str, other: Collection, f: Field,
          subtree: Tree, depth: int) -> None:
    ids = list(dict.fromkeys(r["id"] for r in records))[:MAX_IDS]
    col = tx.schema.table(other).c[f.name]
    if f.multi:
        each = sa.func.json_each(col).table_valued("value")
        refers: Any = sa.exists(sa.select(1).select_from(each).where(each.c.value.in_(ids)))
    else:
        refers = col.in_(ids)
    rows = _visible(tx, other, refers, order=True)
    if not rows:
        return
    if subtree:
        expand_records(tx, other, rows, subtree, depth + 1)
    pointing: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        value = row.get(f.name)
        for target_id in value if isinstance(value, list) else [value]:
            bucket = pointing.setdefault(str(target_id), [])
            if len(bucket) < MAX_BACK:
                bucket.append(row)
    one = not f.multi and (f.unique or any(
        i.unique and [c for c, _ in i.columns] == [f.name] for i in other.indexes))
    for record in records:
        group = pointing.get(record["id"])
        if group:
            record.setdefault("expand", {})[name] = group[0] if one else group
