"""Versioned secrets (KV v2 semantics): write with check-and-set, read, soft delete, undelete,
destroy, per-path `max_versions`, metadata and listing. No HTTP in here.

Each value is sealed under the key of (org, path) with the version in the AAD (`seal.py`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BindParameter, bindparam, text

from hanzocloud.errors import Conflict, InvalidArgument, NotFound
from hanzocloud.identity import current_identity

from . import audit
from .audit import Entry
from .seal import Sealer
from .store import KmsDb, now

DEFAULT_MAX_VERSIONS = 100  # kept per path when its metadata says 0

_VERSIONS: BindParameter[Any] = bindparam("versions", expanding=True)


def _missing(path: str) -> NotFound:
    return NotFound(f"no secret at '{path}'", details={"path": path})


def _version_view(row: Any) -> dict[str, Any]:
    return {"version": row.version, "created_time": row.created_time,
            "deleted_time": row.deleted_time, "destroyed": bool(row.destroyed)}


class Secrets:
    """The secrets of every org, each in its own kms.db."""

    def __init__(self, db: KmsDb, sealer: Sealer) -> None:
        self._db = db
        self._sealer = sealer

    async def put(self, org: str, path: str, value: str, *, cas: int | None) -> dict[str, Any]:
        """Write a new version; `cas` 0 = only if absent, N = only if the current version is N."""
        entry = Entry("write", "secret", path)
        async with audit.audited(self._db, org, entry, erase=True) as s:  # may prune
            t = now()
            # A change first, so the lookup below is inside this write transaction.
            await s.execute(text(
                "INSERT INTO secrets (path, created_time, updated_time) VALUES (:p, :t, :t) "
                "ON CONFLICT (path) DO NOTHING"), {"p": path, "t": t})
            meta = (await s.execute(text(
                "SELECT current_version, max_versions, cas_required FROM secrets "
                "WHERE path = :p"), {"p": path})).one()
            if meta.cas_required and cas is None:
                raise InvalidArgument(f"'{path}' requires cas on every write",
                                      details={"field": "cas"})
            if cas is not None and cas != meta.current_version:
                raise Conflict(f"check-and-set failed: '{path}' is at version "
                               f"{meta.current_version}, not {cas}",
                               details={"current_version": meta.current_version, "cas": cas})
            version = meta.current_version + 1
            entry.version = version
            sealed = self._sealer.seal(org, path, version, value.encode("utf-8"))
            await s.execute(text(
                "UPDATE secrets SET current_version = :v, updated_time = :t WHERE path = :p"),
                {"v": version, "t": t, "p": path})
            await s.execute(text(
                "INSERT INTO secret_versions (path, version, sealed, created_time, created_by) "
                "VALUES (:p, :v, :sealed, :t, :by)"),
                {"p": path, "v": version, "sealed": sealed, "t": t,
                 "by": current_identity.get().user})
            keep = meta.max_versions or DEFAULT_MAX_VERSIONS
            await s.execute(text(
                "DELETE FROM secret_versions WHERE path = :p AND version <= :cut"),
                {"p": path, "cut": version - keep})
        return {"path": path, "version": version, "created_time": t}

    async def get(self, org: str, path: str, *, version: int | None = None,
                  entry: Entry | None = None) -> dict[str, Any]:
        """The value of `version` (default: the current one); deleted or destroyed is 404."""
        entry = entry or Entry("read", "secret", path)
        async with audit.audited(self._db, org, entry) as s:
            # One round trip: the path's current version joined with the wanted version.
            row = (await s.execute(text(
                "SELECT s.current_version, v.version, v.sealed, v.created_time, "
                "v.deleted_time, v.destroyed FROM secrets s LEFT JOIN secret_versions v "
                "ON v.path = s.path AND v.version = coalesce(:v, s.current_version) "
                "WHERE s.path = :p"), {"p": path, "v": version})).one_or_none()
            if row is None or not row.current_version:
                raise _missing(path)
            current = row.current_version
            wanted = version or current
            entry.version = wanted
            if row.version is None:
                raise NotFound(f"version {wanted} of '{path}' does not exist",
                               details={"path": path, "version": wanted})
            if row.destroyed or row.deleted_time is not None:
                state = "destroyed" if row.destroyed else "deleted"
                raise NotFound(f"version {wanted} of '{path}' is {state}",
                               details={"path": path, **_version_view(row)})
            value = self._sealer.open(org, path, wanted, row.sealed).decode("utf-8")
        return {"path": path, "version": wanted, "value": value,
                "created_time": row.created_time, "current_version": current}

    async def _mark(self, org: str, path: str, action: str, versions: list[int] | None,
                    statement: str) -> None:
        entry = Entry(action, "secret", path)
        async with audit.audited(self._db, org, entry, erase=action == "destroy") as s:
            touched = await s.execute(text(
                "UPDATE secrets SET updated_time = :t WHERE path = :p"), {"t": now(), "p": path})
            current = (await s.execute(text(
                "SELECT current_version FROM secrets WHERE path = :p"),
                {"p": path})).scalar_one_or_none()
            if not touched.rowcount or not current:  # type: ignore[attr-defined]
                raise _missing(path)
            chosen = versions or [current]
            entry.version = chosen[0] if len(chosen) == 1 else None
            await s.execute(text(statement).bindparams(_VERSIONS),
                            {"p": path, "t": now(), "versions": chosen})

    async def delete(self, org: str, path: str, versions: list[int] | None = None) -> None:
        """Soft-delete versions (default: the current one); undelete brings them back."""
        await self._mark(org, path, "delete", versions,
                         "UPDATE secret_versions SET deleted_time = :t WHERE path = :p AND "
                         "version IN :versions AND deleted_time IS NULL AND destroyed = 0")

    async def undelete(self, org: str, path: str, versions: list[int]) -> None:
        """Restore soft-deleted versions (destroyed ones stay gone)."""
        await self._mark(org, path, "undelete", versions,
                         "UPDATE secret_versions SET deleted_time = NULL WHERE path = :p AND "
                         "version IN :versions AND destroyed = 0")

    async def destroy(self, org: str, path: str, versions: list[int]) -> None:
        """Remove the value bytes of versions for good; their metadata remains."""
        await self._mark(org, path, "destroy", versions,
                         "UPDATE secret_versions SET sealed = NULL, destroyed = 1 WHERE "
                         "path = :p AND version IN :versions")

    async def metadata(self, org: str, path: str) -> dict[str, Any]:
        """Settings and version history of a path (never values)."""
        async with self._db.read(org) as s:
            meta = (await s.execute(text(
                "SELECT current_version, max_versions, cas_required, created_time, "
                "updated_time FROM secrets WHERE path = :p"), {"p": path})).one_or_none()
            if meta is None:
                raise _missing(path)
            rows = (await s.execute(text(
                "SELECT version, created_time, deleted_time, destroyed FROM secret_versions "
                "WHERE path = :p ORDER BY version"), {"p": path})).all()
        return {"path": path, "current_version": meta.current_version,
                "oldest_version": rows[0].version if rows else 0,
                "max_versions": meta.max_versions, "cas_required": bool(meta.cas_required),
                "created_time": meta.created_time, "updated_time": meta.updated_time,
                "versions": [_version_view(r) for r in rows]}

    async def configure(self, org: str, path: str, *, max_versions: int | None,
                        cas_required: bool | None) -> dict[str, Any]:
        """Create or update a path's settings; lowering max_versions prunes at once."""
        entry = Entry("configure", "secret", path)
        async with audit.audited(self._db, org, entry, erase=True) as s:  # may prune
            t = now()
            await s.execute(text(
                "INSERT INTO secrets (path, created_time, updated_time) VALUES (:p, :t, :t) "
                "ON CONFLICT (path) DO UPDATE SET updated_time = :t"), {"p": path, "t": t})
            if max_versions is not None:
                await s.execute(text("UPDATE secrets SET max_versions = :m WHERE path = :p"),
                                {"m": max_versions, "p": path})
            if cas_required is not None:
                await s.execute(text("UPDATE secrets SET cas_required = :c WHERE path = :p"),
                                {"c": int(cas_required), "p": path})
            await s.execute(text(
                "DELETE FROM secret_versions WHERE path = :p AND version <= "
                "(SELECT current_version - (CASE max_versions WHEN 0 THEN :d "
                "ELSE max_versions END) FROM secrets WHERE path = :p)"),
                {"p": path, "d": DEFAULT_MAX_VERSIONS})
        return await self.metadata(org, path)

    async def purge(self, org: str, path: str) -> None:
        """Delete a path with every version and its metadata, permanently."""
        async with audit.audited(self._db, org, Entry("purge", "secret", path), erase=True) as s:
            gone = await s.execute(text("DELETE FROM secrets WHERE path = :p"), {"p": path})
            if not gone.rowcount:  # type: ignore[attr-defined]
                raise _missing(path)

    async def paths(self, org: str, prefix: str, *, number: int,
                   per_page: int) -> dict[str, Any]:
        """Paths starting with `prefix`, in order, one page at a time (names only)."""
        where = "substr(path, 1, :n) = :prefix"
        args = {"n": len(prefix), "prefix": prefix}
        async with self._db.read(org) as s:
            total = (await s.execute(text(f"SELECT count(*) FROM secrets WHERE {where}"),
                                     args)).scalar_one()
            rows = (await s.execute(text(
                f"SELECT path, current_version, updated_time FROM secrets WHERE {where} "
                "ORDER BY path LIMIT :limit OFFSET :offset"),
                {**args, "limit": per_page, "offset": (number - 1) * per_page})).all()
        return {"page": number, "perPage": per_page, "totalItems": total,
                "items": [{"path": r.path, "current_version": r.current_version,
                           "updated_time": r.updated_time} for r in rows]}
