"""Sealing inside the already encrypted file: AES-256-GCM under a key per (org, name).

Each org's seal root is derived from the page key (DEK) of its kms.db, which exists only
wrapped by the master key (sidecar `kms.db.dek`, SPEC §6) and never in the pages themselves:
a dump of decrypted pages or a copy of the file opens nothing without the master key. Being
tied to the file, the root survives `hanzocloud keys rotate-master` (the DEK is rewrapped,
not changed) and travels with the file through replication and restore; a key derived
straight from the master would be lost by a rotation, and every value with it.

root(org) = HKDF(DEK, info = "hanzocloud/v1/kms/seal-root" ‖ lp(org))       (store.py)
root(org) ─HKDF(info = "hanzocloud/v1/kms/secret"  ‖ lp(org) ‖ lp(path))─▶ value key
root(org) ─HKDF(info = "hanzocloud/v1/kms/transit" ‖ lp(org) ‖ lp(name))─▶ key-material key

A sealed blob is `0x01 ‖ nonce (12) ‖ ciphertext ‖ tag (16)`; the AAD
`domain ‖ lp(org) ‖ lp(name) ‖ u64(version)` binds it to its place, so a blob copied onto
another row, version, path or tenant does not open.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hanzocloud.errors import CloudError
from hanzocloud.keys import lp

FORMAT = b"\x01"
NONCE = 12


class SealBroken(CloudError):
    """A stored blob does not open: the row was tampered with or moved."""

    code = "kms_seal_broken"
    status = 500


class Sealer:
    """Seals and opens values for one domain (`secret` or `transit`) under each org's root."""

    def __init__(self, roots: Callable[[str], bytes], domain: str) -> None:
        self._roots = roots
        self._domain = domain.encode("ascii")

    def key(self, org: str, name: str) -> bytes:
        """The 32-byte key of (org, name): HKDF-SHA256 over the org's root, length-prefixed."""
        info = b"hanzocloud/v1/kms/" + self._domain + lp(org) + lp(name)
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
            self._roots(org))

    def _aad(self, org: str, name: str, version: int) -> bytes:
        return self._domain + lp(org) + lp(name) + struct.pack(">Q", version)

    def seal(self, org: str, name: str, version: int, plaintext: bytes) -> bytes:
        """Encrypt `plaintext` for (org, name, version)."""
        nonce = secrets.token_bytes(NONCE)
        sealed = AESGCM(self.key(org, name)).encrypt(nonce, plaintext,
                                                     self._aad(org, name, version))
        return FORMAT + nonce + sealed

    def open(self, org: str, name: str, version: int, blob: bytes) -> bytes:
        """Decrypt a blob made by `seal` for the same (org, name, version)."""
        if blob[:1] != FORMAT or len(blob) < 1 + NONCE + 16:
            raise SealBroken(f"stored {self._domain.decode()} blob has an unknown format")
        try:
            return AESGCM(self.key(org, name)).decrypt(
                blob[1:1 + NONCE], blob[1 + NONCE:], self._aad(org, name, version))
        except InvalidTag:
            raise SealBroken(f"stored {self._domain.decode()} blob does not open") from None
