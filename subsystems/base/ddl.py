"""Schema changes on the org's base.db: create, migrate and drop collection tables.

A migration rebuilds the table (SQLite's documented way to change columns): create the new
table, copy every row mapping columns by field id, drop the old table, rename the new one and
recreate its indexes. The caller runs all of it inside one `BEGIN IMMEDIATE` transaction, so
a failure (for instance a new unique index over duplicate values) leaves the old table intact.
"""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

from hanzocloud.errors import InvalidArgument
from hanzocloud.storage import INTEGRITY_ERRORS
from subsystems.base.collections import Collection, build_table

META = sa.MetaData()
COLLECTIONS = sa.Table(
    "_collections", META,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("data", sa.Text, nullable=False),
)


def ensure_meta(conn: sa.Connection) -> None:
    """Create the meta table if this org's base.db is new."""
    META.create_all(conn, checkfirst=True)


def _save(conn: sa.Connection, c: Collection, *, insert: bool) -> None:
    data = msgspec.json.encode(c.to_store()).decode()
    if insert:
        conn.execute(COLLECTIONS.insert().values(id=c.id, name=c.name, data=data))
    else:
        conn.execute(COLLECTIONS.update().where(COLLECTIONS.c.id == c.id)
                     .values(name=c.name, data=data))


def _create_indexes(conn: sa.Connection, table: sa.Table, c: Collection) -> None:
    for index in table.indexes:
        try:
            index.create(conn)
        except INTEGRITY_ERRORS:
            raise InvalidArgument(
                f"collection '{c.name}': cannot create unique index {index.name}: "
                "existing records have duplicate values",
                details={"code": "validation_not_unique"}) from None


def create_collection(conn: sa.Connection, c: Collection) -> None:
    """Create the table, its indexes and the meta row of a new collection."""
    table = build_table(c, sa.MetaData())
    conn.execute(CreateTable(table))
    _create_indexes(conn, table, c)
    _save(conn, c, insert=True)


def _copy_expr(old_table: sa.Table, before: Any, after: Any) -> Any:
    col = old_table.c[before.name]
    if before.multi == after.multi:
        return col
    if after.multi:  # single -> list
        return sa.case((col == "", sa.literal("[]")), else_=sa.func.json_array(col))
    return sa.func.coalesce(sa.func.json_extract(col, "$[0]"), "")  # list -> single


def migrate_collection(conn: sa.Connection, old: Collection, new: Collection) -> None:
    """Bring the table of `old` to the shape of `new`, keeping every row."""
    if old.fields == new.fields and old.indexes == new.indexes:
        _save(conn, new, insert=False)
        return
    old_table = build_table(old, sa.MetaData())
    tmp_name = f"{new.table_name}_m"
    staging = build_table(new, sa.MetaData(), name=tmp_name)
    conn.execute(CreateTable(staging))
    before = {f.id: f for f in old.fields}
    targets = ["id", "created", "updated"]
    sources: list[Any] = [old_table.c.id, old_table.c.created, old_table.c.updated]
    for f in new.fields:
        if f.id in before:
            targets.append(f.name)
            sources.append(_copy_expr(old_table, before[f.id], f))
    conn.execute(staging.insert().from_select(targets, sa.select(*sources)))
    old_table.drop(conn)
    conn.execute(sa.text(f'ALTER TABLE "{tmp_name}" RENAME TO "{new.table_name}"'))
    _create_indexes(conn, build_table(new, sa.MetaData()), new)
    _save(conn, new, insert=False)


def drop_collection(conn: sa.Connection, c: Collection) -> None:
    """Drop the table (and with it its indexes) and the meta row."""
    build_table(c, sa.MetaData()).drop(conn)
    conn.execute(COLLECTIONS.delete().where(COLLECTIONS.c.id == c.id))


def has_meta(conn: sa.Connection) -> bool:
    """Whether this base.db has its meta table (any write creates it)."""
    return conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                "name = ?", (COLLECTIONS.name,)).first() is not None


def load_collections(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every stored collection definition, oldest first."""
    rows = conn.execute(sa.select(COLLECTIONS.c.data).order_by(COLLECTIONS.c.name)).all()
    return [msgspec.json.decode(r[0]) for r in rows]
