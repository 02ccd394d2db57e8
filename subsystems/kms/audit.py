"""The audit trail: one row per read, write, decrypt and sign, in the org's own kms.db.

A row says who (user id from the minted identity), which org, what action on which secret
path or key name (and version), when, the request id, the outcome (`ok` or the error code)
and whether the call came over HTTP or through the Deps client. It never holds a value.
Successful changes write their row in the same transaction as the change, and reads write
it before the value is returned, so nothing is revealed or changed without a trace.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from hanzocloud.errors import CloudError
from hanzocloud.identity import current_identity, current_request_id

from .store import KmsDb, now

log = structlog.get_logger("hanzocloud.kms")
_via: contextvars.ContextVar[str] = contextvars.ContextVar("kms_audit_via", default="http")


@contextlib.contextmanager
def via(channel: str) -> Iterator[None]:
    """Mark audit rows written inside this block as coming from `channel` (e.g. `deps`)."""
    token = _via.set(channel)
    try:
        yield
    finally:
        _via.reset(token)


@dataclass
class Entry:
    """What is being done: filled in by the operation (the version is known only later)."""

    action: str
    kind: str  # "secret" or "key"
    target: str
    version: int | None = None
    outcome: str = "ok"  # what a batch whose items failed records instead (see `batch_outcome`)


def batch_outcome(results: list[dict[str, Any]]) -> str:
    """A batch's audit outcome: `ok`; the items' error code when every one failed (all
    with that code); else `partial`."""
    codes = {r["error"]["code"] for r in results if "error" in r}
    if not codes:
        return "ok"
    if len(codes) == 1 and all("error" in r for r in results):
        return str(codes.pop())
    return "partial"


_INSERT = text(
    "INSERT INTO audit (time, actor, org, action, kind, target, version, outcome, request_id, "
    "via) VALUES (:time, :actor, :org, :action, :kind, :target, :version, :outcome, :rid, :via)")


async def append(session: AsyncSession, org: str, entry: Entry, outcome: str) -> None:
    """Add one audit row inside the session's transaction."""
    identity = current_identity.get()
    await session.execute(_INSERT, {
        "time": now(), "actor": identity.user, "org": org, "action": entry.action,
        "kind": entry.kind, "target": entry.target, "version": entry.version,
        "outcome": outcome, "rid": identity.request_id or current_request_id.get(),
        "via": _via.get()})


@contextlib.asynccontextmanager
async def audited(db: KmsDb, org: str, entry: Entry, *,
                  erase: bool = False) -> AsyncIterator[AsyncSession]:
    """A write session whose commit carries an `ok` row; a failure is recorded on its own."""
    try:
        async with db.write(org, erase=erase) as session:
            yield session
            await append(session, org, entry, entry.outcome)
            await session.commit()
    except CloudError as exc:
        try:
            async with db.write(org) as session:
                await append(session, org, entry, exc.code)
                await session.commit()
        except Exception as audit_exc:  # noqa: BLE001 - the original error matters more
            log.error("kms_audit_failed", org=org, action=entry.action,
                      error=type(audit_exc).__name__)
        raise


async def page(db: KmsDb, org: str, *, number: int, per_page: int) -> dict[str, Any]:
    """One page of the org's audit rows, newest first."""
    async with db.read(org) as session:
        total = (await session.execute(text("SELECT count(*) FROM audit"))).scalar_one()
        rows = (await session.execute(text(
            "SELECT id, time, actor, org, action, kind, target, version, outcome, request_id, "
            "via FROM audit ORDER BY id DESC LIMIT :limit OFFSET :offset"),
            {"limit": per_page, "offset": (number - 1) * per_page})).mappings().all()
    return {"page": number, "perPage": per_page, "totalItems": total,
            "items": [dict(r) for r in rows]}
