"""Transit keys (Vault Transit semantics): named, versioned keys that encrypt or sign data
without ever leaving kms. No HTTP in here.

Ciphertexts and signatures are `hz:v<N>:<base64>`, N the key version. An AES-256-GCM
ciphertext is `nonce (12) ‖ ciphertext ‖ tag (16)` with AAD
`"hanzocloud/v1/kms/transit-data" ‖ lp(org) ‖ lp(key name) ‖ u32(N) ‖ lp(associated_data)`.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from hanzocloud.errors import CloudError, Conflict, InvalidArgument
from hanzocloud.keys import lp

from . import audit, keytypes
from .audit import Entry
from .keyring import Key, Keyring, missing, read_key
from .keytypes import TYPES, KeyType
from .seal import Sealer
from .store import KmsDb, now
from .validate import b64encode

T = TypeVar("T")
_AAD = b"hanzocloud/v1/kms/transit-data"


@dataclass(frozen=True, slots=True)
class Plain:
    """Input to encrypt or sign: the data and optional associated data (encrypt only)."""

    data: bytes
    aad: bytes = b""


@dataclass(frozen=True, slots=True)
class Sealed:
    """Input to decrypt or rewrap: a parsed `hz:v<N>:` ciphertext."""

    version: int
    blob: bytes
    aad: bytes = b""


@dataclass(frozen=True, slots=True)
class Signed:
    """Input to verify: the data and a parsed `hz:v<N>:` signature."""

    data: bytes
    version: int
    signature: bytes


def render(version: int, blob: bytes) -> str:
    """The `hz:v<N>:<base64>` text form."""
    return f"hz:v{version}:{b64encode(blob)}"


def each(items: Sequence[T], fn: Callable[[T], dict[str, Any]], *,
         batch: bool) -> list[dict[str, Any]]:
    """Apply `fn` per item; in a batch a failing item becomes `{"error": …}`, else it raises."""
    results: list[dict[str, Any]] = []
    for item in items:
        try:
            results.append(fn(item))
        except CloudError as exc:
            if not batch:
                raise
            results.append({"error": {"code": exc.code, "message": exc.message}})
    return results


class Transit:
    """Transit keys of every org, each org's in its own kms.db."""

    def __init__(self, db: KmsDb, sealer: Sealer) -> None:
        self._db = db
        self._sealer = sealer
        self._keys = Keyring(db, sealer)
        db.on_reopen(self._keys.forget_org)

    async def _add_version(self, s: AsyncSession, org: str, name: str, kind: KeyType,
                           version: int, material: bytes, t: str) -> None:
        await s.execute(text(
            "INSERT INTO transit_key_versions (name, version, sealed, public_key, created_time) "
            "VALUES (:n, :v, :sealed, :pub, :t)"),
            {"n": name, "v": version, "sealed": self._sealer.seal(org, name, version, material),
             "pub": keytypes.public_pem(kind, material), "t": t})

    # -- checks --------------------------------------------------------------------------

    @staticmethod
    def _needs(key: Key, *, signing: bool) -> None:
        if signing and not key.kind.signs:
            raise InvalidArgument(f"key '{key.name}' ({key.kind.name}) cannot sign; use an "
                                  "ed25519, ecdsa-p256 or ml-dsa-65 key")
        if not signing and not key.kind.encrypts:
            raise InvalidArgument(f"key '{key.name}' ({key.kind.name}) cannot encrypt; use an "
                                  "aes256-gcm key")

    @staticmethod
    def _new_version(key: Key, requested: int | None) -> int:
        """The version for new ciphertexts or signatures: requested, else the latest."""
        version = requested or key.latest
        floor = max(key.min_encryption, 1)
        if not floor <= version <= key.latest:
            raise InvalidArgument(f"key_version {version} of '{key.name}' cannot be used: "
                                  f"allowed {floor} to {key.latest}",
                                  details={"field": "key_version"})
        return version

    @staticmethod
    def _old_version(key: Key, version: int, materials: dict[int, bytes]) -> bytes:
        """The material to open a version-`version` ciphertext or signature."""
        if version > key.latest or version not in materials and version >= key.min_decryption:
            raise InvalidArgument(f"key '{key.name}' has no version {version}")
        if version < key.min_decryption:
            raise InvalidArgument(f"version {version} of key '{key.name}' is below its "
                                  f"min_decryption_version {key.min_decryption}",
                                  details={"min_decryption_version": key.min_decryption})
        return materials[version]

    @staticmethod
    def _aad(org: str, name: str, version: int, extra: bytes) -> bytes:
        return _AAD + lp(org) + lp(name) + struct.pack(">I", version) + lp(extra)

    # -- key management ------------------------------------------------------------------

    async def create(self, org: str, name: str, kind: KeyType) -> dict[str, Any]:
        """Create a key at version 1; an existing name is a 409."""
        material = kind.generate()
        async with audit.audited(self._db, org, Entry("create_key", "key", name, 1)) as s:
            t = now()
            added = await s.execute(text(
                "INSERT INTO transit_keys (name, type, latest_version, created_time, "
                "updated_time) VALUES (:n, :type, 1, :t, :t) ON CONFLICT (name) DO NOTHING"),
                {"n": name, "type": kind.name, "t": t})
            if not added.rowcount:  # type: ignore[attr-defined]
                raise Conflict(f"transit key '{name}' already exists", details={"name": name})
            await self._add_version(s, org, name, kind, 1, material, t)
        self._keys.forget(org, name)
        return await self.describe(org, name)

    async def rotate(self, org: str, name: str) -> dict[str, Any]:
        """Add a new version; new ciphertexts and signatures use it."""
        entry = Entry("rotate_key", "key", name)
        async with audit.audited(self._db, org, entry) as s:
            t = now()
            row = (await s.execute(text(
                "UPDATE transit_keys SET latest_version = latest_version + 1, updated_time = :t "
                "WHERE name = :n RETURNING latest_version, type"),
                {"n": name, "t": t})).one_or_none()
            if row is None:
                raise missing(name)
            kind = TYPES[row.type]
            entry.version = row.latest_version
            await self._add_version(s, org, name, kind, row.latest_version, kind.generate(), t)
        self._keys.forget(org, name)
        return await self.describe(org, name)

    async def configure(self, org: str, name: str, *, min_decryption_version: int | None,
                        min_encryption_version: int | None,
                        deletion_allowed: bool | None) -> dict[str, Any]:
        """Change min_decryption_version, min_encryption_version or deletion_allowed."""
        async with audit.audited(self._db, org, Entry("configure_key", "key", name)) as s:
            touched = await s.execute(text(
                "UPDATE transit_keys SET updated_time = :t WHERE name = :n"),
                {"t": now(), "n": name})
            if not touched.rowcount:  # type: ignore[attr-defined]
                raise missing(name)
            key = await read_key(s, name)
            dec = key.min_decryption if min_decryption_version is None else min_decryption_version
            enc = key.min_encryption if min_encryption_version is None else min_encryption_version
            if not 1 <= dec <= key.latest:
                raise InvalidArgument(f"min_decryption_version must be from 1 to {key.latest}",
                                      details={"field": "min_decryption_version"})
            if not 0 <= enc <= key.latest or 0 < enc < dec:
                raise InvalidArgument(
                    f"min_encryption_version must be 0 (latest) or from {dec} to {key.latest}",
                    details={"field": "min_encryption_version"})
            allowed = key.deletion_allowed if deletion_allowed is None else deletion_allowed
            await s.execute(text(
                "UPDATE transit_keys SET min_decryption_version = :d, "
                "min_encryption_version = :e, deletion_allowed = :a WHERE name = :n"),
                {"d": dec, "e": enc, "a": int(allowed), "n": name})
        self._keys.forget(org, name)
        return await self.describe(org, name)

    async def delete(self, org: str, name: str) -> None:
        """Delete a key and every version; refused unless its deletion_allowed is set."""
        entry = Entry("delete_key", "key", name)
        async with audit.audited(self._db, org, entry, erase=True) as s:
            touched = await s.execute(text(
                "UPDATE transit_keys SET updated_time = :t WHERE name = :n"),
                {"t": now(), "n": name})
            if not touched.rowcount:  # type: ignore[attr-defined]
                raise missing(name)
            if not (await read_key(s, name)).deletion_allowed:
                raise InvalidArgument(f"deletion is not allowed for key '{name}'; set "
                                      "deletion_allowed in its config first")
            await s.execute(text("DELETE FROM transit_keys WHERE name = :n"), {"n": name})
        self._keys.forget(org, name)

    async def describe(self, org: str, name: str) -> dict[str, Any]:
        """Settings and versions of a key, with public keys only (never private material)."""
        async with self._db.read(org) as s:
            key = await read_key(s, name)
            rows = (await s.execute(text(
                "SELECT version, public_key, created_time FROM transit_key_versions "
                "WHERE name = :n ORDER BY version"), {"n": name})).all()
        versions = []
        for r in rows:
            item: dict[str, Any] = {"version": r.version, "created_time": r.created_time}
            if key.kind.signs:
                item["public_key"] = r.public_key
            versions.append(item)
        return {"name": name, "type": key.kind.name, "latest_version": key.latest,
                "min_decryption_version": key.min_decryption,
                "min_encryption_version": key.min_encryption,
                "deletion_allowed": key.deletion_allowed,
                "supports_encryption": key.kind.encrypts, "supports_signing": key.kind.signs,
                "created_time": key.created_time, "updated_time": key.updated_time,
                "versions": versions}

    async def names(self, org: str, *, number: int, per_page: int) -> dict[str, Any]:
        """Key names with their type and latest version, one page at a time."""
        async with self._db.read(org) as s:
            total = (await s.execute(text("SELECT count(*) FROM transit_keys"))).scalar_one()
            rows = (await s.execute(text(
                "SELECT name, type, latest_version FROM transit_keys ORDER BY name "
                "LIMIT :limit OFFSET :offset"),
                {"limit": per_page, "offset": (number - 1) * per_page})).all()
        return {"page": number, "perPage": per_page, "totalItems": total,
                "items": [{"name": r.name, "type": r.type, "latest_version": r.latest_version}
                          for r in rows]}

    # -- data operations -----------------------------------------------------------------

    async def encrypt(self, org: str, name: str, items: Sequence[Plain], *,
                      key_version: int | None = None, batch: bool = False) -> list[dict[str, Any]]:
        """Encrypt each plaintext under one key version (not audited: it reveals nothing)."""
        key, materials = await self._keys.load(org, name, {key_version or 0}, latest=True)
        self._needs(key, signing=False)
        version = self._new_version(key, key_version)
        material = materials[version]

        def one(item: Plain) -> dict[str, Any]:
            aad = self._aad(org, name, version, item.aad)
            return {"ciphertext": render(version, keytypes.encrypt(material, item.data, aad)),
                    "key_version": version}

        return each(items, one, batch=batch)

    async def decrypt(self, org: str, name: str, items: Sequence[Sealed], *,
                      batch: bool = False, rewrap: bool = False) -> list[dict[str, Any]]:
        """Decrypt each ciphertext (or, with `rewrap`, re-encrypt it under the newest version)."""
        entry = Entry("rewrap" if rewrap else "decrypt", "key", name,
                      None if batch else items[0].version)
        async with audit.audited(self._db, org, entry) as s:
            key, materials = await self._keys.load(org, name, {i.version for i in items},
                                                   latest=rewrap, session=s)
            self._needs(key, signing=False)
            latest = self._new_version(key, None) if rewrap else 0

            def one(item: Sealed) -> dict[str, Any]:
                material = self._old_version(key, item.version, materials)
                plain = keytypes.decrypt(material, item.blob,
                                         self._aad(org, name, item.version, item.aad))
                if not rewrap:
                    return {"plaintext": b64encode(plain)}
                blob = keytypes.encrypt(materials[latest], plain,
                                        self._aad(org, name, latest, item.aad))
                return {"ciphertext": render(latest, blob), "key_version": latest}

            results = each(items, one, batch=batch)
            entry.outcome = audit.batch_outcome(results)
        return results

    async def datakey(self, org: str, name: str, *, bits: int, with_plaintext: bool,
                      aad: bytes = b"") -> dict[str, Any]:
        """A fresh random data key, wrapped by the newest key version (and in clear if asked)."""
        entry = Entry("datakey", "key", name)
        async with audit.audited(self._db, org, entry) as s:
            key, materials = await self._keys.load(org, name, set(), latest=True, session=s)
            self._needs(key, signing=False)
            version = self._new_version(key, None)
            entry.version = version
            material = materials[version]
        data = secrets.token_bytes(bits // 8)
        blob = keytypes.encrypt(material, data, self._aad(org, name, version, aad))
        out: dict[str, Any] = {"ciphertext": render(version, blob), "key_version": version}
        if with_plaintext:
            out["plaintext"] = b64encode(data)
        return out

    async def sign(self, org: str, name: str, items: Sequence[Plain], *,
                   key_version: int | None = None, batch: bool = False) -> list[dict[str, Any]]:
        """Sign each input with one key version."""
        entry = Entry("sign", "key", name)
        async with audit.audited(self._db, org, entry) as s:
            key, materials = await self._keys.load(org, name, {key_version or 0}, latest=True,
                                                   session=s)
            self._needs(key, signing=True)
            version = self._new_version(key, key_version)
            entry.version = version
            material = materials[version]
        return each(items, lambda item: {
            "signature": render(version, keytypes.sign(key.kind, material, item.data)),
            "key_version": version}, batch=batch)

    async def verify(self, org: str, name: str, items: Sequence[Signed], *,
                     batch: bool = False) -> list[dict[str, Any]]:
        """Check each signature; versions below min_decryption_version are refused."""
        key, materials = await self._keys.load(org, name, {i.version for i in items})
        self._needs(key, signing=True)

        def one(item: Signed) -> dict[str, Any]:
            material = self._old_version(key, item.version, materials)
            return {"valid": keytypes.verify(key.kind, material, item.data, item.signature)}

        return each(items, one, batch=batch)
