"""Org extension hooks around record writes (`base_before_*`, `base_after_*`).

A before-hook may deny the write (400, with the module's message) or replace the record
body; after-hooks see the stored record once the transaction has committed, and their
answers are ignored. Only the org that installed a module ever runs it.
"""

from __future__ import annotations

from typing import Any

import structlog

from hanzocloud.errors import CloudError, InvalidArgument

log = structlog.get_logger("base.hooks")


class RecordHooks:
    """Runs an org's record hooks through the host's extension runtime."""

    def __init__(self, extensions: Any) -> None:
        self.extensions = extensions

    async def before(self, org: str, action: str, collection: str,
                     record: dict[str, Any]) -> dict[str, Any]:
        """Run `base_before_<action>`; returns the (possibly modified) record or raises 400."""
        hook = f"base_before_{action}"
        if not self.extensions.has_hook(org, hook):
            return record
        results = await self.extensions.run_hooks(
            org, hook, {"collection": collection, "record": record})
        for result in results:
            if not result.allowed:
                raise InvalidArgument(result.message or f"{hook} hook refused the write",
                                      details={"hook": hook})
            if result.record is not None:
                record = result.record
        return record

    async def before_write(self, org: str, action: str, collection: str, body: Any,
                           record_id: str = "") -> Any:
        """The before hook of one write, shown the record as every caller shows it: the
        body for a create, the body with its id for an update, the id alone for a delete.
        Returns the body to write (a modify replaces it). A body that is not an object is
        passed through untouched, for the write itself to refuse."""
        if action == "delete":
            await self.before(org, "delete", collection, {"id": record_id})
            return body
        if not isinstance(body, dict):
            return body
        if action == "create":
            return await self.before(org, "create", collection, body)
        record = dict(await self.before(org, "update", collection, {**body, "id": record_id}))
        record.pop("id", None)
        return record

    async def after(self, org: str, action: str, collection: str,
                    record: dict[str, Any]) -> None:
        """Run `base_after_<action>` after the commit; failures are logged, never raised."""
        hook = f"base_after_{action}"
        if not self.extensions.has_hook(org, hook):
            return
        try:
            await self.extensions.run_hooks(org, hook, {"collection": collection,
                                                        "record": record})
        except CloudError as exc:
            log.warning("after_hook_failed", hook=hook, org=org, error=exc.message)
