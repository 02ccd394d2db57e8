"""`expand`: replace relation ids by the related records, nested (`author.org`), in place.

Related records are fetched from the same org database only (there is no other one to reach)
and filtered by the target collection's view rule, exactly as a direct view would be. Names
that are not relation fields are ignored, as PocketBase does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hanzocloud.errors import PermissionDenied
from subsystems.base.collections import Collection

if TYPE_CHECKING:
    from subsystems.base.query import Tree
    from subsystems.base.store import Tx

MAX_IDS = 5000


def expand_records(tx: Tx, coll: Collection, records: list[dict[str, Any]], tree: Tree,
                   depth: int = 0) -> None:
    """Attach `expand` to each record for every relation named in `tree`."""
    from subsystems.base.records import present, rule_filter

    if depth >= 6 or not records:
        return
    for name, subtree in tree.items():
        f = coll.field(name)
        if f is None or f.type != "relation" or (f.hidden and not tx.admin):
            continue
        ids: list[str] = []
        for record in records:
            value = record.get(name)
            ids.extend(value if isinstance(value, list) else [value] if value else [])
        unique = list(dict.fromkeys(ids))[:MAX_IDS]
        if not unique:
            continue
        target = tx.schema.by_id[f.target]
        table = tx.schema.table(target)
        try:
            cond = rule_filter(tx, target, "viewRule")
        except PermissionDenied:
            continue  # the caller may not view the target collection: nothing to expand
        query = sa.select(table).where(table.c.id.in_(unique))
        if cond is not None:
            query = query.where(cond)
        found = {r._mapping["id"]: present(tx, target, r._mapping)
                 for r in tx.conn.execute(query)}
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
