"""Loading transit keys: settings from `transit_keys`, material unsealed per version, and a
bounded in-memory cache so encrypt and sign do not touch the database on every call.

The cache holds unsealed key material in process memory only (never on disk). Every change
to a key (create, rotate, config, delete) goes through `Transit`, which calls `forget`
after its commit; a load that raced with a change is not stored (the epoch moved).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from hanzocloud.errors import NotFound

from .keytypes import TYPES, KeyType
from .seal import Sealer
from .store import KmsDb

_VERSIONS: BindParameter[Any] = bindparam("versions", expanding=True)
CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Key:
    """A transit key's settings (its material is loaded per version, only when needed)."""

    name: str
    kind: KeyType
    latest: int
    min_decryption: int
    min_encryption: int
    deletion_allowed: bool
    created_time: str
    updated_time: str


def missing(name: str) -> NotFound:
    """The one answer for a key that does not exist in the caller's org."""
    return NotFound(f"no transit key '{name}'", details={"name": name})


async def read_key(s: AsyncSession, name: str) -> Key:
    """A key's settings straight from the database (404 when absent)."""
    row = (await s.execute(text(
        "SELECT type, latest_version, min_decryption_version, min_encryption_version, "
        "deletion_allowed, created_time, updated_time FROM transit_keys WHERE name = :n"),
        {"n": name})).one_or_none()
    if row is None:
        raise missing(name)
    return Key(name, TYPES[row.type], row.latest_version, row.min_decryption_version,
               row.min_encryption_version, bool(row.deletion_allowed), row.created_time,
               row.updated_time)


class Keyring:
    """Keys with their unsealed material, cached per (org, name) in a bounded LRU."""

    def __init__(self, db: KmsDb, sealer: Sealer, *, size: int = CACHE_SIZE) -> None:
        self._db = db
        self._sealer = sealer
        self._size = size
        self._cache: OrderedDict[tuple[str, str], tuple[Key, dict[int, bytes]]] = OrderedDict()
        self._epoch = 0

    def forget_org(self, org: str) -> None:
        """Drop every key of an org (its file was reopened and may have been replaced)."""
        for cached in [k for k in self._cache if k[0] == org]:
            del self._cache[cached]
        self._epoch += 1

    def forget(self, org: str, name: str) -> None:
        """Drop a key after it changed; loads already in flight will not be stored."""
        self._cache.pop((org, name), None)
        self._epoch += 1

    async def load(self, org: str, name: str, versions: set[int], *, latest: bool = False,
                   session: AsyncSession | None = None) -> tuple[Key, dict[int, bytes]]:
        """The key and the material of those `versions` (plus the newest one if `latest`)
        that exist; versions outside 1..latest are left out for the caller to refuse."""
        entry = self._cache.get((org, name))
        if entry is not None:
            key, materials = entry
            wanted = versions | {key.latest} if latest else versions
            if all(v in materials for v in wanted if 1 <= v <= key.latest):
                self._cache.move_to_end((org, name))
                return key, materials
        epoch = self._epoch
        if session is not None:
            key, loaded = await self._read(session, org, name, versions, latest)
        else:
            async with self._db.read(org) as s:
                key, loaded = await self._read(s, org, name, versions, latest)
        if entry is not None and entry[0] == key:
            loaded = {**entry[1], **loaded}
        if epoch == self._epoch:
            self._cache[(org, name)] = (key, loaded)
            self._cache.move_to_end((org, name))
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return key, loaded

    async def _read(self, s: AsyncSession, org: str, name: str, versions: set[int],
                    latest: bool) -> tuple[Key, dict[int, bytes]]:
        key = await read_key(s, name)
        wanted = sorted(v for v in versions | ({key.latest} if latest else set())
                        if 1 <= v <= key.latest)
        if not wanted:
            return key, {}
        rows = (await s.execute(text(
            "SELECT version, sealed FROM transit_key_versions WHERE name = :n AND "
            "version IN :versions").bindparams(_VERSIONS),
            {"n": name, "versions": wanted})).all()
        return key, {r.version: self._sealer.open(org, name, r.version, r.sealed) for r in rows}
