"""The collections service: create, list, view, update and delete collections of one org.

Every change validates the definition, checks that each API rule compiles against the new
schema (so a typo in a rule is a 400 when saving, not at the first request), changes the
table, and installs the new schema when the transaction commits.
"""

from __future__ import annotations

from typing import Any

from hanzocloud.errors import InvalidArgument
from subsystems.base.collections import (
    MAX_COLLECTIONS,
    RULES,
    Collection,
    Schema,
    parse_collection,
)
from subsystems.base.ddl import create_collection, drop_collection, migrate_collection
from subsystems.base.filter_sql import RuleContext, compile_filter
from subsystems.base.store import Tx
from subsystems.base.util import now_text

_SAMPLE = RuleContext(auth={"id": "", "email": "", "org": "", "roles": [], "isAdmin": False,
                            "collectionName": ""}, body={}, method="GET")


def _check_rules(schema: Schema, coll: Collection) -> None:
    for kind in RULES:
        rule = coll.rule(kind)
        if rule:
            try:
                compile_filter(schema, coll, _SAMPLE, rule, rule=True)
            except InvalidArgument as exc:
                raise InvalidArgument(f"{kind}: {exc.message}",
                                      details={"fields": {kind: {
                                          "code": "validation_invalid_rule",
                                          "message": exc.message}}}) from None


def _replace(tx: Tx, coll: Collection) -> Schema:
    others = [c for c in tx.schema.by_id.values() if c.id != coll.id]
    return Schema([*others, coll])


def list_collections(tx: Tx, *, filter_text: str = "") -> dict[str, Any]:
    """All collections of the org (one page: there are at most a few hundred)."""
    items = [c.to_json() for c in sorted(tx.schema.by_id.values(), key=lambda c: c.name)]
    if filter_text:
        needle = filter_text.strip().lower()
        items = [i for i in items if needle in i["name"].lower()]
    return {"page": 1, "perPage": max(len(items), 1), "totalItems": len(items),
            "totalPages": 1, "items": items}


def view_collection(tx: Tx, name: str) -> dict[str, Any]:
    """One collection by id or name."""
    return tx.schema.get(name).to_json()


def create(tx: Tx, raw: Any) -> dict[str, Any]:
    """Create a collection and its table."""
    if len(tx.schema.by_id) >= MAX_COLLECTIONS:
        raise InvalidArgument(f"an org has at most {MAX_COLLECTIONS} collections")
    coll = parse_collection(raw, tx.schema, existing=None, now=now_text())
    schema = _replace(tx, coll)
    _check_rules(schema, coll)
    create_collection(tx.conn, coll)
    tx.set_schema(list(schema.by_id.values()))
    return coll.to_json()


def update(tx: Tx, name: str, raw: Any) -> dict[str, Any]:
    """Change a collection (name, fields, indexes, rules), migrating its rows."""
    old = tx.schema.get(name)
    coll = parse_collection(raw, tx.schema, existing=old, now=now_text())
    schema = _replace(tx, coll)
    for other in schema.by_id.values():
        _check_rules(schema, other)  # a rename or removal may break another collection's rule
    migrate_collection(tx.conn, old, coll)
    tx.set_schema(list(schema.by_id.values()))
    return coll.to_json()


def delete(tx: Tx, name: str) -> None:
    """Delete a collection and all its records, unless another collection relates to it."""
    coll = tx.schema.get(name)
    users = [f"{o.name}.{f.name}" for o, f in tx.schema.referrers(coll.id) if o.id != coll.id]
    if users:
        raise InvalidArgument(f"collection '{coll.name}' is referenced by "
                              f"{', '.join(users)}; remove those relation fields first")
    rest = [c for c in tx.schema.by_id.values() if c.id != coll.id]
    schema = Schema(rest)
    for other in rest:
        _check_rules(schema, other)  # a rule may read this collection through @collection
    drop_collection(tx.conn, coll)
    tx.set_schema(rest)
