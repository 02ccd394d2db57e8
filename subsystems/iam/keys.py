"""Token signing keys: created, sealed, published as JWKS, rotated and retired.

Private keys are stored only sealed (AES-256-GCM under a key derived from the master key,
with the kid as associated data) in the platform-wide iam database. A retired key stays in
the JWKS until the last token it can have signed has expired (`publish_until`).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from subsystems.iam.config import IamConfig
from subsystems.iam.store import IamStore, all_rows, run

Clock = Callable[[], float]
LEEWAY = 60  # seconds of clock skew a verifier may allow beyond `exp`


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key pair: private half (signing) and public half (verifying, JWKS)."""

    kid: str
    alg: str
    private: Any
    public: Any
    jwk: dict[str, Any]
    created_at: int
    retired_at: int | None


def generate_private(alg: str) -> Any:
    """A fresh private key for `alg` (RS256: RSA-2048, ES256: P-256, EdDSA: Ed25519)."""
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported signing algorithm {alg}")


def public_jwk(alg: str, kid: str, public: Any) -> dict[str, Any]:
    """The JWK (RFC 7517) of a public key, with kid, alg and use."""
    algo = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[alg]
    jwk: dict[str, Any] = json.loads(algo.to_jwk(public))  # type: ignore[attr-defined]
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


def seal(seal_key: bytes, kid: str, private: Any) -> bytes:
    """Encrypt a private key (PKCS#8 DER) under the seal key, bound to its kid."""
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    nonce = os.urandom(12)
    return nonce + AESGCM(seal_key).encrypt(nonce, der, kid.encode())


def unseal(seal_key: bytes, kid: str, sealed: bytes) -> Any:
    """Decrypt a sealed private key; fails if it was moved to another kid."""
    der = AESGCM(seal_key).decrypt(sealed[:12], sealed[12:], kid.encode())
    # The AEAD just proved these are the bytes this deployment generated and sealed, so the
    # RSA consistency checks (tens of ms per key, on every start and reload) add nothing.
    return serialization.load_der_private_key(der, password=None,
                                              unsafe_skip_rsa_key_validation=True)


class KeyRing:
    """The signing keys of this deployment, cached in memory and re-read periodically."""

    def __init__(self, store: IamStore, seal_key: bytes, config: IamConfig, *,
                 clock: Clock = time.time) -> None:
        self.store = store
        self.seal_key = seal_key
        self.config = config
        self.clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._active: SigningKey | None = None
        self._loaded_at = 0.0
        self._miss_reload_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def max_token_life(self) -> int:
        """How long a token signed now can stay valid: retired keys are kept that long."""
        return max(self.config.access_ttl, self.config.id_ttl) + LEEWAY

    async def load(self) -> None:
        """Read every published key; create the first one (or one of a newly chosen alg)."""
        async with self._lock:
            now = int(self.clock())
            async with self.store.platform() as s:
                rows = await all_rows(
                    s, "SELECT * FROM signing_keys WHERE publish_until IS NULL "
                       "OR publish_until > :now ORDER BY created_at", now=now)
            keys: dict[str, SigningKey] = {}
            for row in rows:
                private = unseal(self.seal_key, row["kid"], row["sealed"])
                keys[row["kid"]] = SigningKey(row["kid"], row["alg"], private,
                                              private.public_key(), json.loads(row["public_jwk"]),
                                              row["created_at"], row["retired_at"])
            active = [k for k in keys.values() if k.retired_at is None]
            self._keys = keys
            self._active = max(active, key=lambda k: (k.created_at, k.kid)) if active else None
            self._loaded_at = self.clock()
        if self._active is None or self._active.alg != self.config.alg:
            await self.rotate()

    async def rotate(self, alg: str | None = None) -> SigningKey:
        """Make a new active key; retire the others, published until their tokens expire."""
        alg = alg or self.config.alg
        private = await asyncio.to_thread(generate_private, alg)
        now = int(self.clock())
        kid = f"{time.strftime('%Y%m%d', time.gmtime(now))}-{secrets.token_hex(6)}"
        jwk = public_jwk(alg, kid, private.public_key())
        async with self._lock:
            async with self.store.platform() as s:
                await run(s, "UPDATE signing_keys SET retired_at = :now, publish_until = :until "
                             "WHERE retired_at IS NULL",
                          now=now, until=now + self.max_token_life)
                await run(s, "INSERT INTO signing_keys (kid, alg, sealed, public_jwk, created_at) "
                             "VALUES (:kid, :alg, :sealed, :jwk, :now)",
                          kid=kid, alg=alg, sealed=seal(self.seal_key, kid, private),
                          jwk=json.dumps(jwk), now=now)
                await run(s, "DELETE FROM signing_keys WHERE publish_until IS NOT NULL "
                             "AND publish_until <= :now", now=now)
                await s.commit()
            key = SigningKey(kid, alg, private, private.public_key(), jwk, now, None)
            for old in self._keys.values():
                if old.retired_at is None:
                    self._keys[old.kid] = SigningKey(old.kid, old.alg, old.private, old.public,
                                                     old.jwk, old.created_at, now)
            self._keys[kid] = key
            self._active = key
        return key

    async def refresh(self) -> None:
        """Re-read keys if the cached set is older than the reload interval."""
        if self.clock() - self._loaded_at >= self.config.key_reload:
            await self.load()

    async def active(self) -> SigningKey:
        """The key that signs new tokens."""
        await self.refresh()
        assert self._active is not None
        return self._active

    async def find(self, kid: str) -> SigningKey | None:
        """The key with `kid`; an unknown kid triggers at most one re-read per second."""
        key = self._keys.get(kid)
        if key is None and self.clock() - self._miss_reload_at >= 1.0:
            self._miss_reload_at = self.clock()
            await self.load()
            key = self._keys.get(kid)
        return key

    def jwks(self) -> dict[str, Any]:
        """The public keys to publish: the active key first, then retired ones, newest first."""
        now = self.clock()
        live = [k for k in self._keys.values()
                if k.retired_at is None or k.retired_at + self.max_token_life > now]
        live.sort(key=lambda k: (k.retired_at is None, k.created_at), reverse=True)
        return {"keys": [k.jwk for k in live]}

    def sign(self, key: SigningKey, claims: dict[str, Any], *, typ: str) -> str:
        """Sign `claims` with `key` (kid and typ in the header)."""
        return jwt.encode(claims, key.private, algorithm=key.alg,
                          headers={"kid": key.kid, "typ": typ})

    async def needs_rotation(self) -> bool:
        """Whether the active key is older than the rotation interval."""
        key = await self.active()
        return self.clock() - key.created_at >= self.config.rotate_interval
