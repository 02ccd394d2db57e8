"""The in-process `base` client (`deps.base`): record calls as the calling identity.

Writes run the org's record hooks as the HTTP API does (`base_before_*` first, which may
refuse or replace the record, `base_after_*` once committed).

The methods match `hanzocloud.zap.gen.base.BaseClient`, so callers work the same in-process
and over ZAP. `open(org, service)` is an in-process-only extra: a database handle cannot
cross a process boundary, so it is not part of the ZAP interface.
"""

from __future__ import annotations

from typing import Any

import msgspec

from hanzocloud.errors import InvalidArgument, PermissionDenied, Unauthenticated
from hanzocloud.identity import Identity, current_identity
from hanzocloud.routing import decode_json
from hanzocloud.storage import TenantHandle, TenantStore
from subsystems.base import records
from subsystems.base.hooks import RecordHooks
from subsystems.base.query import DEFAULT_PER_PAGE, MAX_PER_PAGE, ListParams
from subsystems.base.store import SERVICE, BaseStore


def _caller() -> tuple[str, Identity]:
    identity = current_identity.get()
    if not identity.org:
        raise Unauthenticated("base calls need an identity that belongs to an org")
    return identity.org, identity


def _decode(data: bytes) -> Any:
    return decode_json(data, "record data")


_encode = msgspec.json.encode


class LocalBase:
    """Implements the Base ZAP interface on this process's BaseStore."""

    def __init__(self, store: BaseStore, tenants: TenantStore, hooks: RecordHooks) -> None:
        self._store = store
        self._tenants = tenants
        self._hooks = hooks

    async def get_record(self, collection: str, id: str) -> bytes:
        """One record by id, as JSON."""
        org, who = _caller()
        return _encode(await self._store.read(
            org, who, lambda tx: records.view_record(tx, collection, id)))

    async def list_records(self, collection: str, filter: str, sort: str, page: int,
                           per_page: int) -> bytes:
        """A page of records as JSON."""
        org, who = _caller()
        size = DEFAULT_PER_PAGE if per_page <= 0 else min(per_page, MAX_PER_PAGE)
        params = ListParams(page=max(page, 1), per_page=size, sort=sort, filter=filter)
        return _encode(await self._store.read(
            org, who, lambda tx: records.list_records(tx, collection, params)))

    async def create_record(self, collection: str, data: bytes) -> bytes:
        """Create a record from JSON."""
        org, who = _caller()
        body = _decode(data)
        body = await self._hooks.before_write(org, "create", collection, body)
        created = await self._store.write(
            org, who, lambda tx: records.create_record(tx, collection, body))
        await self._hooks.after(org, "create", collection, created)
        return _encode(created)

    async def update_record(self, collection: str, id: str, data: bytes) -> bytes:
        """Update a record from JSON."""
        org, who = _caller()
        body = _decode(data)
        body = await self._hooks.before_write(org, "update", collection, body, id)
        updated = await self._store.write(
            org, who, lambda tx: records.update_record(tx, collection, id, body))
        await self._hooks.after(org, "update", collection, updated)
        return _encode(updated)

    async def delete_record(self, collection: str, id: str) -> None:
        """Delete a record."""
        org, who = _caller()
        await self._hooks.before_write(org, "delete", collection, None, id)
        await self._store.write(org, who, lambda tx: records.delete_record(tx, collection, id))
        await self._hooks.after(org, "delete", collection, {"id": id})

    async def open(self, org: str, service: str) -> TenantHandle:
        """In-process only: the caller's own per-tenant database for `service`.

        The org must be the caller's (platform admins may open any org's). `base` itself is
        refused: its tables are only reached through the record API, which keeps the schema
        cache and the API rules honest.
        """
        caller = current_identity.get()
        if not caller.is_admin and caller.org != org:
            raise PermissionDenied("a subsystem may only open the calling org's database")
        if service == SERVICE:
            raise InvalidArgument("base.db is reached through the record API, not open()")
        return await self._tenants.open(org, service)
