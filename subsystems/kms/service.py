"""The in-process `kms` Deps client (schemas/kms.zap) and kms:// reference resolution.

Other subsystems call these methods on behalf of the request they are serving: the tenant
is the org of the carried identity, never a parameter. They are service-to-service calls,
so no role is required (the calling subsystem authorises its own users); each one is
audited with `via = deps`.
"""

from __future__ import annotations

from hanzocloud.errors import InvalidArgument, NotFound, PayloadTooLarge
from hanzocloud.routing import require_org

from . import validate
from .audit import Entry, audited, via
from .kv import Secrets
from .store import KmsDb
from .transit import Plain, Sealed, Signed, Transit


class References:
    """Maps `kms://<deployment>/<org>/<purpose>` to a secret path of the caller's org."""

    def __init__(self, deployment: str, db: KmsDb) -> None:
        self.deployment = deployment
        self._db = db

    async def path(self, ref: object, *, action: str) -> tuple[str, str]:
        """(org, path) of a reference the caller may use; anything else is the 404 of absence.

        Another deployment or another org answers exactly like a missing secret, so a caller
        learns nothing about what exists elsewhere. The attempt is audited in the caller's org.
        """
        org = require_org()
        parsed = validate.reference(ref)
        if parsed.deployment != self.deployment or parsed.org != org:
            error = self.missing(str(ref))
            async with audited(self._db, org, Entry(action, "secret", str(ref))):
                raise error
        return org, parsed.purpose

    @staticmethod
    def missing(ref: str) -> NotFound:
        """The one answer for a reference that does not resolve."""
        return NotFound(f"no secret behind reference '{ref}'", details={"ref": ref})


class KmsService:
    """Implements `hanzocloud.zap.gen.kms.KmsClient` in-process."""

    def __init__(self, secrets: Secrets, transit: Transit, refs: References) -> None:
        self._secrets = secrets
        self._transit = transit
        self._refs = refs

    async def resolve(self, ref: object) -> dict[str, object]:
        """Read the current value behind a reference (shared by HTTP and Deps)."""
        org, path = await self._refs.path(ref, action="read")
        try:
            return await self._secrets.get(org, path)
        except NotFound:
            raise self._refs.missing(str(ref)) from None

    async def get_secret(self, ref: str) -> str:
        """The current value of the secret behind `ref`, in the caller's org."""
        with via("deps"):
            return str((await self.resolve(ref))["value"])

    async def put_secret(self, ref: str, value: str) -> int:
        """Write a new version of the secret behind `ref`; returns the version."""
        with via("deps"):
            org, path = await self._refs.path(ref, action="write")
            written = await self._secrets.put(org, path, validate.secret_value(value), cas=None)
            return int(written["version"])

    async def encrypt(self, key: str, plaintext: bytes) -> str:
        """Encrypt with the newest version of a transit key."""
        org = require_org()
        data = _limited(plaintext)
        result = await self._transit.encrypt(org, validate.key_name(key), [Plain(data)])
        return str(result[0]["ciphertext"])

    async def decrypt(self, key: str, ciphertext: str) -> bytes:
        """Decrypt a `hz:v<N>:` ciphertext made with `key`."""
        org = require_org()
        version, blob = validate.versioned(ciphertext)
        with via("deps"):
            result = await self._transit.decrypt(org, validate.key_name(key),
                                                 [Sealed(version, blob)])
        return validate.b64decode(result[0]["plaintext"], field="plaintext")

    async def sign(self, key: str, message: bytes) -> str:
        """Sign `message` with the newest version of a signing key."""
        org = require_org()
        with via("deps"):
            result = await self._transit.sign(org, validate.key_name(key),
                                              [Plain(_limited(message))])
        return str(result[0]["signature"])

    async def verify(self, key: str, message: bytes, signature: str) -> bool:
        """Whether `signature` (made by `sign`) is valid for `message`."""
        org = require_org()
        version, sig = validate.versioned(signature, field="signature")
        result = await self._transit.verify(org, validate.key_name(key),
                                            [Signed(_limited(message), version, sig)])
        return bool(result[0]["valid"])


def _limited(data: bytes) -> bytes:
    if not isinstance(data, bytes | bytearray):
        raise InvalidArgument("expected bytes", details={"field": "plaintext"})
    if len(data) > validate.MAX_PLAINTEXT_BYTES:
        raise PayloadTooLarge(
            f"input is over the {validate.MAX_PLAINTEXT_BYTES}-byte limit",
            details={"limit": validate.MAX_PLAINTEXT_BYTES})
    return bytes(data)
