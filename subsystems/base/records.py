"""The record service: list, view, create, update and delete, with API rules applied.

Everything here is synchronous code on one `Tx` (run inside `TenantStore.run_sync`), so a
batch can call several operations in one transaction. Rules: `None` lets only admins through
(403 for others), `""` lets any member of the org through, anything else is a filter that the
record must match (list: rows are filtered; view/update/delete: 404; create: 400).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa

from hanzocloud.errors import InvalidArgument, NotFound, PermissionDenied
from hanzocloud.storage import INTEGRITY_ERRORS
from subsystems.base.collections import Collection
from subsystems.base.expand import expand_records
from subsystems.base.fields import Field, FieldError
from subsystems.base.filter_sql import compile_filter
from subsystems.base.prepared import Prepared, cached, caller_key, prepare
from subsystems.base.query import ListParams, Tree, order_by, pick
from subsystems.base.store import Event, Tx, unique_violation
from subsystems.base.util import new_id, now_text, valid_id


def present(tx: Tx, coll: Collection, data: Mapping[Any, Any]) -> dict[str, Any]:
    """A table row (as a mapping) as PocketBase's record JSON (hidden fields only for
    admins)."""
    return presenter(tx, coll, tuple(data))(tuple(data.values()))


def presenter(tx: Tx, coll: Collection,
              names: tuple[str, ...]) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """The one place a row becomes PocketBase's record JSON, for rows that come as tuples
    with columns `names`: which fields the caller sees (hidden ones only for admins) and
    how each is shown, decided once per collection, caller kind and column order (kept on
    the schema) rather than once per row."""
    key = (coll.id, tx.admin, names)
    found = tx.schema.presenters.get(key)
    if found is not None:
        return found  # type: ignore[no-any-return]
    index = {name: i for i, name in enumerate(names)}
    cid, cname = coll.id, coll.name
    at_id, at_created, at_updated = index["id"], index["created"], index["updated"]
    steps = [(f.name, index[f.name], f.presenter()) for f in coll.fields
             if tx.admin or not f.hidden]

    def make(row: Sequence[Any]) -> dict[str, Any]:
        out = {"collectionId": cid, "collectionName": cname, "id": row[at_id],
               "created": row[at_created], "updated": row[at_updated]}
        for name, at, present_value in steps:
            out[name] = present_value(row[at])
        return out

    tx.schema.presenters[key] = make
    return make


def rule_filter(tx: Tx, coll: Collection, kind: str, *, body: dict[str, Any] | None = None,
                method: str = "GET", table: Any | None = None) -> Any | None:
    """The extra WHERE of `kind` for the caller; None if unrestricted; 403 if admins only."""
    if tx.admin:
        return None
    rule = coll.rule(kind)
    if rule is None:
        raise PermissionDenied("Only admins can perform this action.")
    if not rule.strip():
        return None
    return compile_filter(tx.schema, coll, tx.ctx(body=body, method=method), rule, table=table,
                          rule=True)


def _rule_text(tx: Tx, coll: Collection, kind: str) -> str | None:
    """The rule text a non-admin's query compiles (admins bypass rules)."""
    return None if tx.admin else coll.rule(kind)


def _reached_rules(tx: Tx, *client: str) -> tuple[str | None, ...]:
    """The rules a member's `filter` or `sort` (`client`) may compile in besides its own:
    the list rules of the collections its paths reach (filter_sql.listable). They belong
    with the texts a prepared statement is keyed and cached by: one that reads
    `@request.auth.*` makes the statement the caller's own. Only a path reaches another
    collection (`author.name`, `posts_via_author.x`, `@collection.c.x`), and every path
    has a dot; a text without one pulls nothing in."""
    if tx.admin or not any("." in text for text in client):
        return ()
    return tx.schema.list_rules


def _tuples(tx: Tx, key: Hashable, texts: tuple[str | None, ...],
            build: Callable[[], sa.Select[Any]],
            **given: Any) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """Run the query `build` makes, prepared once per `key` (see subsystems.base.prepared);
    `given` are the values of its `bindparam` slots. The column names and the rows."""
    query: list[sa.Select[Any]] = []  # built at most once, even when it cannot be prepared

    def compile_it() -> Prepared | None:
        query.append(build())
        return prepare(query[0], tx.conn.dialect, slots=tuple(given))

    found = cached(tx.schema, key, texts, compile_it)
    if found is not None:
        return found.tuples(tx.conn, **given)
    result = tx.conn.execute(query[0] if query else build(), given)
    return tuple(result.keys()), [tuple(r) for r in result]


def _rows(tx: Tx, key: Hashable, texts: tuple[str | None, ...],
          build: Callable[[], sa.Select[Any]], **given: Any) -> list[dict[str, Any]]:
    """As `_tuples`, the rows as dicts."""
    names, rows = _tuples(tx, key, texts, build, **given)
    return [dict(zip(names, row, strict=True)) for row in rows]


def list_records(tx: Tx, name: str, params: ListParams) -> dict[str, Any]:
    """One page of records matching the list rule and the filter."""
    coll = tx.schema.get(name)
    table = tx.schema.table(coll)

    def conditions() -> list[Any]:
        return [c for c in (rule_filter(tx, coll, "listRule"),
                            compile_filter(tx.schema, coll, tx.ctx(), params.filter))
                if c is not None]

    def build() -> sa.Select[Any]:
        ordering = order_by(tx.schema, coll, table, params.sort, ctx=tx.ctx())
        query = sa.select(table).where(*conditions()).order_by(*ordering)
        return query.limit(params.per_page).offset(offset)

    def build_count() -> sa.Select[Any]:
        return sa.select(sa.func.count().label("total")).select_from(table).where(*conditions())

    offset = (params.page - 1) * params.per_page
    texts = (_rule_text(tx, coll, "listRule"), params.filter,
             *_reached_rules(tx, params.filter, params.sort))
    key = ("list", coll.id, caller_key(tx.identity, tx.admin, texts), params.filter,
           params.sort, params.page, params.per_page)
    names, rows = _tuples(tx, key, texts, build)
    make = presenter(tx, coll, names)
    items = [make(r) for r in rows]
    if params.expand:
        expand_records(tx, coll, items, params.expand)
    if params.skip_total:
        total, pages = -1, -1
    else:
        if len(rows) < params.per_page and (rows or offset == 0):
            total = offset + len(rows)  # the last page: no count needed
        else:
            # A separate count: cheaper than a window count, which must materialize and
            # sort every match before LIMIT (about 40% of a 30-row page's SQL time).
            count_key = ("count", coll.id, caller_key(tx.identity, tx.admin, texts),
                         params.filter)
            total = _rows(tx, count_key, texts, build_count)[0]["total"]
        pages = math.ceil(total / params.per_page)
    return {"page": params.page, "perPage": params.per_page, "totalItems": total,
            "totalPages": pages, "items": pick(items, params.fields)}


def _fetch(tx: Tx, coll: Collection, record_id: str, kind: str, *,
           body: dict[str, Any] | None = None, method: str = "GET") -> dict[str, Any]:
    """The record `record_id` as a row mapping, if the `kind` rule lets the caller at it."""
    if not valid_id(record_id):
        raise NotFound("The requested resource wasn't found.")
    table = tx.schema.table(coll)

    def build() -> sa.Select[Any]:
        cond = rule_filter(tx, coll, kind, body=body, method=method)
        query = sa.select(table).where(table.c.id == sa.bindparam("record_id", "", sa.Text))
        return query if cond is None else query.where(cond)

    if body is None:  # the rule reads no body: the query depends on the caller only
        texts = (_rule_text(tx, coll, kind),)
        key = ("one", coll.id, kind, method, caller_key(tx.identity, tx.admin, texts))
        rows = _rows(tx, key, texts, build, record_id=record_id)
    else:
        rows = [dict(r._mapping) for r in tx.conn.execute(build(), {"record_id": record_id})]
    if not rows:
        raise NotFound("The requested resource wasn't found.")
    return rows[0]


def view_record(tx: Tx, name: str, record_id: str, *, expand: Tree | None = None,
                fields: Tree | None = None) -> dict[str, Any]:
    """One record, if the view rule lets the caller see it."""
    coll = tx.schema.get(name)
    record = present(tx, coll, _fetch(tx, coll, record_id, "viewRule"))
    if expand:
        expand_records(tx, coll, [record], expand)
    return pick(record, fields)  # type: ignore[no-any-return]


def _as_number(value: Any) -> float:
    """A modifier operand as a number (None counts as 0); the field check follows."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FieldError("validation_invalid_number", "Must be a number.")
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise FieldError("validation_invalid_number", "Must be a number.") from None


def _apply_modifiers(f: Field, body: dict[str, Any], current: Any) -> tuple[bool, Any]:
    """PocketBase's `field+`, `+field`, `field-` body keys (append, prepend, remove/subtract)."""
    present_now, value = f.name in body, body.get(f.name)
    for key, mode in ((f"+{f.name}", "prepend"), (f"{f.name}+", "append"),
                      (f"{f.name}-", "remove")):
        if key not in body:
            continue
        arg = body[key]
        base = value if present_now else current
        if f.type == "number":
            delta = _as_number(arg)
            value = _as_number(base) + (-delta if mode == "remove" else delta)
        elif f.multi:
            if base is not None and not isinstance(base, list | str):
                raise FieldError("validation_invalid_value", "Must be a list.")
            items = base if isinstance(base, list) else [base] if base else []
            extra = arg if isinstance(arg, list) else [arg]
            if mode == "remove":
                value = [v for v in items if v not in extra]
            else:
                value = extra + items if mode == "prepend" else items + extra
        else:
            raise FieldError("validation_invalid_modifier",
                             f"'{key}' is not supported on {f.type} fields")
        present_now = True
    return present_now, value


def _has_modifiers(body: dict[str, Any]) -> bool:
    return any(k.startswith("+") or k.endswith(("+", "-")) for k in body)


def _rule_body(coll: Collection, body: dict[str, Any],
               current: Mapping[str, Any] | None) -> dict[str, Any]:
    """The body rules read as `@request.body`: each modifier key (`tags+`, `+tags`, `tags-`)
    resolved into its field's resulting value (against `current`, the record before an
    update), as PocketBase does. A guard such as `@request.body.tags:isset = false` then
    holds for `tags+` too, and `@request.body.views` is the value that would be stored."""
    if not _has_modifiers(body):
        return body
    out = dict(body)
    for f in coll.fields:
        keys = [k for k in (f"+{f.name}", f"{f.name}+", f"{f.name}-") if k in body]
        if not keys:
            continue
        try:
            _, value = _apply_modifiers(f, body, current.get(f.name) if current else None)
        except FieldError:  # refused when the record is validated; the rule sees it as sent
            value = body[keys[0]]
        for key in keys:
            del out[key]
        out[f.name] = value
    return out


def _values(tx: Tx, coll: Collection, body: dict[str, Any],
            current: dict[str, Any] | None) -> dict[str, Any]:
    """Validate the body into stored column values (all fields on create, given on update)."""
    values: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    now = now_text()
    for f in coll.fields:
        try:
            if f.type == "autodate":
                if (current is None and f.options.get("onCreate")) or f.options.get("onUpdate"):
                    values[f.name] = now
                continue
            given, value = _apply_modifiers(f, body, current.get(f.name) if current else None)
            if f.hidden and not tx.admin and given:
                raise FieldError("validation_hidden_field", "This field is hidden.")
            if given or current is None:
                values[f.name] = f.normalize(value)
                if f.type == "relation":
                    _check_relation(tx, f, values[f.name])
        except FieldError as exc:
            errors[f.name] = {"code": exc.code, "message": exc.message}
    if errors:
        raise InvalidArgument("Failed to save record: " + ", ".join(
            f"{k}: {v['message']}" for k, v in errors.items()), details={"fields": errors})
    return values


def _check_relation(tx: Tx, f: Field, stored: str) -> None:
    ids = _ids(f, stored)
    if not ids:
        return
    target = tx.schema.by_id[f.target]
    table = tx.schema.table(target)
    found = tx.conn.execute(sa.select(sa.func.count()).select_from(table)
                            .where(table.c.id.in_(ids))).scalar_one()
    if found != len(ids):
        raise FieldError("validation_missing_rel_records",
                         "Failed to find all relation records with the provided ids.")


def _ids(f: Field, stored: str) -> list[str]:
    if f.multi:
        return list(msgspec.json.decode(stored)) if stored else []
    return [stored] if stored else []


def _save(tx: Tx, statement: Any) -> None:
    try:
        tx.conn.execute(statement)
    except INTEGRITY_ERRORS as exc:
        raise unique_violation(tx.schema, str(exc)) from None


def _body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidArgument("the record must be a JSON object")
    return body


def create_record(tx: Tx, name: str, body: Any) -> dict[str, Any]:
    """Insert a record, then check the create rule against it (rolled back if it fails)."""
    body = _body(body)
    coll = tx.schema.get(name)
    if not tx.admin and coll.rule("createRule") is None:
        raise PermissionDenied("Only admins can perform this action.")
    record_id = body.get("id") or new_id()
    if not valid_id(record_id):
        raise InvalidArgument("id must be 15 characters of a-z and 0-9",
                              details={"fields": {"id": {"code": "validation_invalid_id",
                                                         "message": "Invalid id."}}})
    values = _values(tx, coll, body, None)
    now = now_text()
    table = tx.schema.table(coll)
    _save(tx, table.insert().values(id=record_id, created=now, updated=now, **values))
    cond = rule_filter(tx, coll, "createRule", body=_rule_body(coll, body, None),
                       method="POST")
    row = tx.conn.execute(sa.select(table).where(table.c.id == record_id)).one()._mapping
    if cond is not None and tx.conn.execute(
            sa.select(1).select_from(table).where(table.c.id == record_id, cond)).first() is None:
        raise InvalidArgument("Failed to create record: the create rule does not allow it.")
    record = present(tx, coll, row)
    _announce(tx, "create", coll, record)
    return record


def _announce(tx: Tx, action: str, coll: Collection, record: dict[str, Any]) -> None:
    """Queue a realtime event. Who may receive it is decided here, inside the transaction,
    against the record as this write leaves it: delivery runs after commit, when a later
    write may already have changed or removed the record."""
    allowed = tx.viewers(tx, coll, record) if tx.viewers is not None else None
    tx.events.append(Event(action, coll, record, allowed))


def update_record(tx: Tx, name: str, record_id: str, body: Any) -> dict[str, Any]:
    """Update the given fields of a record the update rule lets the caller change."""
    body = _body(body)
    coll = tx.schema.get(name)
    table = tx.schema.table(coll)
    seen = body
    if _has_modifiers(body):  # the rule reads what they resolve to: the record's values first
        found = tx.conn.execute(sa.select(table).where(table.c.id == record_id)).first()
        if found is None:
            raise NotFound("The requested resource wasn't found.")
        seen = _rule_body(coll, body, {f.name: f.present(found._mapping[f.name])
                                       for f in coll.fields})
    row = _fetch(tx, coll, record_id, "updateRule", body=seen, method="PATCH")
    current = {f.name: f.present(row[f.name]) for f in coll.fields}
    values = _values(tx, coll, body, current)
    _save(tx, table.update().where(table.c.id == record_id).values(updated=now_text(), **values))
    record = present(tx, coll, tx.conn.execute(
        sa.select(table).where(table.c.id == record_id)).one()._mapping)
    _announce(tx, "update", coll, record)
    return record


def delete_record(tx: Tx, name: str, record_id: str) -> None:
    """Delete a record the delete rule allows, cascading to records that require it."""
    coll = tx.schema.get(name)
    row = _fetch(tx, coll, record_id, "deleteRule", method="DELETE")
    _delete(tx, coll, row, depth=0, doomed=set())


def _delete(tx: Tx, coll: Collection, row: Mapping[Any, Any], depth: int,
            doomed: set[tuple[str, str]]) -> None:
    """Delete `row` and cascade; `doomed` holds the records this delete already removes,
    so records that cascade to each other (a cycle) go once each."""
    if depth > 16:
        raise InvalidArgument("cascade delete is deeper than 16 levels")
    record = present(tx, coll, row)
    record_id = record["id"]
    doomed.add((coll.id, record_id))
    for other, f in tx.schema.referrers(coll.id):
        table = tx.schema.table(other)
        col = table.c[f.name]
        if f.multi:
            each = sa.func.json_each(col).table_valued("value")
            refers = sa.exists(sa.select(1).select_from(each).where(each.c.value == record_id))
        else:
            refers = col == record_id
        for ref in tx.conn.execute(sa.select(table).where(refers)).all():
            if (other.id, ref._mapping["id"]) in doomed:
                continue  # itself, or a record this very delete is already removing
            if f.options.get("cascadeDelete"):
                _delete(tx, other, ref._mapping, depth + 1, doomed)
            elif f.required and len(_ids(f, ref._mapping[f.name])) <= 1:
                # Which record needs it only for admins: a member may not see that record.
                where = f" by '{other.name}.{f.name}' of record {ref._mapping['id']}" \
                    if tx.admin else ""
                raise InvalidArgument(f"Failed to delete record: it is required{where} (a "
                                      "required relation points to it).")
            else:
                ids = [i for i in _ids(f, ref._mapping[f.name]) if i != record_id]
                packed = msgspec.json.encode(ids).decode() if f.multi else ""
                tx.conn.execute(table.update().where(table.c.id == ref._mapping["id"])
                                .values({f.name: packed, "updated": now_text()}))
    # Who may see the delete event is decided now, while the record can still be queried.
    _announce(tx, "delete", coll, record)
    table = tx.schema.table(coll)
    tx.conn.execute(table.delete().where(table.c.id == record_id))
