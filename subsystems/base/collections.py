"""Collections: the model, validation of API definitions, and the org's whole schema.

Each collection is a real SQLite table named `r_<collectionId>` (stable across renames),
with `id`, `created`, `updated` and one column per field, named after the field. Names are
validated (`util.NAME_RE`) before they reach any DDL, and SQLAlchemy quotes them anyway.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from hanzocloud.errors import InvalidArgument, NotFound
from subsystems.base.fields import Field, parse_field
from subsystems.base.util import RESERVED_NAMES, check_name, new_id

RULES = ("listRule", "viewRule", "createRule", "updateRule", "deleteRule")
MAX_FIELDS = 200
MAX_COLLECTIONS = 500
VIA = "_via_"  # a back-relation's name: <collection>_via_<relation field>
_RESERVED_LOWER = frozenset(n.lower() for n in RESERVED_NAMES)
_INDEX = re.compile(
    r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?[`\"']?(\w{1,63})[`\"']?"
    r"\s+ON\s+[`\"']?(\w{1,63})[`\"']?\s*\(([^()]{1,1000})\)\s*;?\s*$",
    re.IGNORECASE | re.ASCII,
)
_INDEX_COL = re.compile(r"^\s*[`\"']?(\w{1,63})[`\"']?(?:\s+(ASC|DESC))?\s*$",
                        re.IGNORECASE | re.ASCII)
_STRINGY = ("text", "email", "url", "date", "select", "relation")


@dataclass(frozen=True, slots=True)
class IndexDef:
    """A validated index: its name, uniqueness and (column, descending) pairs."""

    name: str
    unique: bool
    columns: tuple[tuple[str, bool], ...]

    def to_sql(self, collection: str) -> str:
        """PocketBase's string form of the index (for the API; never executed)."""
        cols = ", ".join(f"`{c}`" + (" DESC" if d else "") for c, d in self.columns)
        kind = "UNIQUE INDEX" if self.unique else "INDEX"
        return f"CREATE {kind} `{self.name}` ON `{collection}` ({cols})"


@dataclass(frozen=True, slots=True)
class Collection:
    """One collection: fields, indexes and API rules (None = admins only)."""

    id: str
    name: str
    fields: tuple[Field, ...]
    indexes: tuple[IndexDef, ...] = ()
    rules: dict[str, str | None] = field(default_factory=dict)
    created: str = ""
    updated: str = ""

    @property
    def table_name(self) -> str:
        return f"r_{self.id}"

    def field(self, name: str) -> Field | None:
        """The user field called `name`, if any."""
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def rule(self, kind: str) -> str | None:
        """The rule text for `kind` (listRule, …); None means admins only."""
        return self.rules.get(kind)

    def to_json(self) -> dict[str, Any]:
        """The collection as the collections API shows it."""
        system = [
            {"id": "text3208210256", "name": "id", "type": "text", "system": True,
             "required": True, "primaryKey": True, "min": 15, "max": 15,
             "pattern": "^[a-z0-9]+$", "hidden": False, "presentable": False},
            *({"id": f"autodate_{n}", "name": n, "type": "autodate", "system": True,
               "onCreate": True, "onUpdate": n == "updated", "hidden": False,
               "presentable": False} for n in ("created", "updated")),
        ]
        return {"id": self.id, "name": self.name, "type": "base", "system": False,
                "fields": system + [f.to_json() for f in self.fields],
                "indexes": [i.to_sql(self.name) for i in self.indexes],
                **{k: self.rules.get(k) for k in RULES},
                "created": self.created, "updated": self.updated}

    def to_store(self) -> dict[str, Any]:
        """What the `_collections` meta table keeps for this collection."""
        return {"id": self.id, "name": self.name, "created": self.created,
                "updated": self.updated, "rules": dict(self.rules),
                "fields": [{**f.to_json(), "options": f.options} for f in self.fields],
                "indexes": [{"name": i.name, "unique": i.unique,
                             "columns": [list(c) for c in i.columns]} for i in self.indexes]}


def from_store(data: dict[str, Any]) -> Collection:
    """Rebuild a collection from its meta-table JSON (trusted: written by `to_store`)."""
    fields = tuple(
        Field(id=f["id"], name=f["name"], type=f["type"], required=f["required"],
              unique=f["unique"], hidden=f["hidden"], presentable=f["presentable"],
              options=f["options"])
        for f in data["fields"])
    indexes = tuple(IndexDef(i["name"], i["unique"], tuple((c, d) for c, d in i["columns"]))
                    for i in data["indexes"])
    return Collection(data["id"], data["name"], fields, indexes, data["rules"],
                      data["created"], data["updated"])


class Schema:
    """All collections of one org, with their SQLAlchemy tables; immutable once built."""

    def __init__(self, collections: list[Collection]) -> None:
        self.by_id = {c.id: c for c in collections}
        self.by_name = {c.name: c for c in collections}
        self.metadata = sa.MetaData()
        self.tables = {c.id: build_table(c, self.metadata) for c in collections}
        # Statements compiled for this schema (subsystems.base.prepared): a new schema, a
        # fresh cache.
        self.prepared: dict[Hashable, Any] = {}
        # Row presenters (subsystems.base.records.presenter), by collection, admin, columns.
        self.presenters: dict[Hashable, Any] = {}

    @functools.cached_property
    def list_rules(self) -> tuple[str | None, ...]:
        """Every collection's list rule (what a member's filter paths may pull in)."""
        return tuple(c.rule("listRule") for c in self.by_id.values())

    def get(self, id_or_name: str) -> Collection:
        """The collection by name or id; 404 if missing."""
        found = self.by_name.get(id_or_name) or self.by_id.get(id_or_name)
        if found is None:
            raise NotFound(f"collection '{id_or_name}' not found")
        return found

    def table(self, collection: Collection) -> sa.Table:
        return self.tables[collection.id]

    def back_relation(self, coll: Collection, name: str) -> tuple[Collection, Field] | None:
        """The (collection, relation field) that a back-relation `<collection>_via_<field>`
        names, if that field points at `coll`. Names may contain `_via_` themselves: every
        split is tried."""
        at = name.find(VIA)
        while at > 0:
            other = self.by_name.get(name[:at])
            f = other.field(name[at + len(VIA):]) if other is not None else None
            if (other is not None and f is not None and f.type == "relation"
                    and f.target == coll.id):
                return other, f
            at = name.find(VIA, at + 1)
        return None

    def referrers(self, target_id: str) -> list[tuple[Collection, Field]]:
        """Every (collection, relation field) pointing at collection `target_id`."""
        return [(c, f) for c in self.by_id.values() for f in c.fields
                if f.type == "relation" and f.target == target_id]


def column_for(f: Field) -> sa.Column[Any]:
    """The SQL column of a field: NOT NULL with PocketBase's zero value, except json."""
    if f.type == "number":
        return sa.Column(f.name, sa.Float, nullable=False, server_default=sa.text("0"))
    if f.type == "bool":
        return sa.Column(f.name, sa.Boolean, nullable=False, server_default=sa.text("0"))
    if f.type == "json":
        return sa.Column(f.name, sa.Text, nullable=True)
    default = "'[]'" if f.multi else "''"
    return sa.Column(f.name, sa.Text, nullable=False, server_default=sa.text(default))


def build_table(c: Collection, metadata: sa.MetaData, *, name: str | None = None) -> sa.Table:
    """The SQLAlchemy table of a collection (optionally under another table name)."""
    table_name = name or c.table_name
    table = sa.Table(
        table_name, metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("created", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("updated", sa.Text, nullable=False, server_default=sa.text("''")),
        *(column_for(f) for f in c.fields),
    )
    for f in c.fields:
        if f.unique:
            col = table.c[f.name]
            where = col != "" if f.type in _STRINGY else None
            sa.Index(f"u_{c.id}_{f.id}", col, unique=True, sqlite_where=where)
    for index in c.indexes:
        cols = [table.c[n].desc() if d else table.c[n] for n, d in index.columns]
        sa.Index(f"i_{c.id}_{index.name}", *cols, unique=index.unique)
    sa.Index(f"c_{c.id}_created", table.c.created)
    return table


def parse_index(raw: Any, collection: str, field_names: set[str]) -> IndexDef:
    """Validate one PocketBase index string; it is rebuilt, never executed as given."""
    if not isinstance(raw, str):
        raise InvalidArgument("each index must be a CREATE INDEX string")
    m = _INDEX.match(raw)
    if m is None:
        raise InvalidArgument(f"invalid index {raw[:200]!r}: use CREATE [UNIQUE] INDEX name "
                              f"ON {collection} (column [ASC|DESC], ...)")
    unique, name, table, cols_text = m.groups()
    if table != collection:
        raise InvalidArgument(f"index {name} must be ON {collection}, not {table}")
    columns: list[tuple[str, bool]] = []
    for part in cols_text.split(","):
        cm = _INDEX_COL.match(part)
        if cm is None or cm.group(1) not in field_names:
            raise InvalidArgument(f"index {name}: unknown column {part.strip()[:64]!r}")
        columns.append((cm.group(1), (cm.group(2) or "").upper() == "DESC"))
    return IndexDef(check_name(name, "index"), bool(unique), tuple(columns))


def _rules(raw: dict[str, Any], base: dict[str, str | None]) -> dict[str, str | None]:
    rules = dict(base)
    for key in RULES:
        if key in raw:
            value = raw[key]
            if value is not None and (not isinstance(value, str) or len(value) > 3500):
                raise InvalidArgument(f"{key} must be null or a filter string",
                                      details={"field": key})
            rules[key] = value
    return rules


def parse_collection(raw: Any, schema: Schema, *, existing: Collection | None,
                     now: str) -> Collection:
    """Validate a create (existing None) or update request into a new Collection."""
    if not isinstance(raw, dict):
        raise InvalidArgument("the collection must be a JSON object")
    ctype = raw.get("type", "base")
    if ctype != "base":
        raise InvalidArgument(f"collection type {ctype!r} is not supported; use 'base'")
    name = check_name(raw.get("name", existing.name if existing else None), "collection")
    other = next((c for c in schema.by_name.values() if c.name.lower() == name.lower()), None)
    if other is not None and (existing is None or other.id != existing.id):
        raise InvalidArgument(f"a collection named '{name}' already exists",
                              details={"fields": {"name": {
                                  "code": "validation_collection_name_exists",
                                  "message": "Collection name must be unique."}}})
    cid = existing.id if existing else new_id()
    if "fields" in raw or existing is None:
        fields = _parse_fields(raw.get("fields", []), schema, cid, name, existing)
    else:
        fields = existing.fields
    names = {f.name for f in fields} | {"id", "created", "updated"}
    if "indexes" in raw:
        if not isinstance(raw["indexes"], list) or len(raw["indexes"]) > 50:
            raise InvalidArgument("indexes must be a list of at most 50 strings")
        indexes = tuple(parse_index(i, name, names) for i in raw["indexes"])
    else:  # the stored ones, following renamed fields; one on a removed field goes with it
        renamed = {f.name: new.name for f in (existing.fields if existing else ())
                   for new in fields if new.id == f.id}
        kept = []
        for index in existing.indexes if existing else ():
            columns = tuple((renamed.get(c, c), d) for c, d in index.columns)
            if all(c in names for c, _ in columns):
                kept.append(replace(index, columns=columns))
        indexes = tuple(kept)
    if len({i.name.lower() for i in indexes}) != len(indexes):
        raise InvalidArgument("index names must be unique (case-insensitively)")
    rules = _rules(raw, existing.rules if existing else dict.fromkeys(RULES))
    return Collection(cid, name, fields, indexes, rules,
                      existing.created if existing else now, now)


def _parse_fields(raw: Any, schema: Schema, cid: str, name: str,
                  existing: Collection | None) -> tuple[Field, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_FIELDS + 3:
        raise InvalidArgument(f"fields must be a list of at most {MAX_FIELDS} field objects")
    old = {f.id: f for f in existing.fields} if existing else {}

    def resolve(target: Any, field_name: str) -> str:
        if target in (cid, name):
            return cid  # a relation to the collection itself
        if not isinstance(target, str) or (target not in schema.by_id
                                           and target not in schema.by_name):
            raise InvalidArgument(f"field '{field_name}': relation collectionId {target!r} "
                                  "is not a collection of this org")
        return schema.get(target).id

    fields: list[Field] = []
    seen_ids: set[str] = set()
    for item in raw:
        if isinstance(item, dict) and item.get("system") and item.get("name") in RESERVED_NAMES:
            continue  # the system fields id/created/updated echoed back by clients
        fid = item.get("id") if isinstance(item, dict) else None
        if fid is not None and not isinstance(fid, str):
            raise InvalidArgument(f"a field's id must be a string, not {type(fid).__name__}")
        if fid is not None and fid in seen_ids:  # two fields would share one column
            raise InvalidArgument(f"field id {fid[:32]!r} is given twice")
        if fid is not None:
            seen_ids.add(fid)
        if fid is not None and fid not in old:
            fid = None  # an unknown id is a new field (PocketBase imports send their own)
        if fid is not None and item.get("type") != old[fid].type:
            raise InvalidArgument(f"field '{old[fid].name}': the type of an existing field "
                                  f"cannot change ({old[fid].type} -> {item.get('type')})")
        parsed = parse_field(item, field_id=fid or f"f{new_id()[:10]}",
                             resolve_collection=resolve)
        if parsed.name.lower() in _RESERVED_LOWER:  # SQLite's names are case-insensitive
            raise InvalidArgument(f"field name '{parsed.name}' is reserved")
        before = old.get(parsed.id)
        if before is not None and parsed.type == "relation" and before.target != parsed.target:
            raise InvalidArgument(f"field '{parsed.name}': a relation cannot change collection")
        fields.append(parsed)
    if len(fields) > MAX_FIELDS:  # the list may also echo the 3 system fields
        raise InvalidArgument(f"fields must be a list of at most {MAX_FIELDS} field objects")
    if len({f.name.lower() for f in fields}) != len(fields):
        raise InvalidArgument("field names must be unique (case-insensitively)")
    return tuple(fields)
