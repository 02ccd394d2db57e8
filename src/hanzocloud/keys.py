"""The key hierarchy: master key → per-file KEK (HKDF) → per-file DEK (random, wrapped).

SPEC §6. The master key never touches disk in clear (except the `--dev` key). Each database
file has a sidecar `<file>.dek` holding `file_id ‖ nonce ‖ AES-256-GCM(KEK, DEK)`, where the
AAD binds the wrap to `file_id`, the org and the service, so a sidecar moved to another
tenant's file does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hanzocloud.errors import CloudError, ConfigError

KEY_BYTES = 32
FILE_ID_BYTES = 16
NONCE_BYTES = 12
SIDECAR_BYTES = FILE_ID_BYTES + NONCE_BYTES + KEY_BYTES + 16  # 16 = GCM tag
KEK_INFO = b"hanzocloud/v1/kek"
DEV_KEY_FILE = "dev-master.key"

log = structlog.get_logger("hanzocloud.keys")


class KeyUnwrapError(CloudError):
    """A sidecar does not open with this master key for this org and service.

    The client is told only that the org's data cannot be opened; `reason` (which names the
    master key's fingerprint) is for the server's log and the operator's tools.
    """

    code = "key_unwrap_failed"
    status = 500

    def __init__(self, reason: str) -> None:
        super().__init__("this org's data cannot be opened right now")
        self.reason = reason


def lp(value: str | bytes) -> bytes:
    """Length-prefix a field (u32 big-endian) so concatenations cannot be ambiguous."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return struct.pack(">I", len(raw)) + raw


@dataclass(frozen=True, slots=True)
class MasterKey:
    """32 bytes of master key material and where they came from (the ref, never the bytes)."""

    material: bytes
    ref: str

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise ConfigError(f"master key from {self.ref} must be {KEY_BYTES} bytes, "
                              f"got {len(self.material)}")

    def __repr__(self) -> str:  # never print key material
        return f"MasterKey(ref={self.ref!r})"

    @property
    def fingerprint(self) -> str:
        """A short public identifier of this key (HMAC of a constant; reveals nothing)."""
        mac = hmac.new(self.material, b"hanzocloud/v1/fingerprint", hashlib.sha256)
        return mac.hexdigest()[:16]

    def kek(self, org: str, service: str, file_id: bytes) -> bytes:
        """Derive the key-encryption key for one file."""
        info = KEK_INFO + lp(org) + lp(service) + lp(file_id)
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(
            self.material
        )

    def derive(self, info: bytes) -> bytes:
        """Derive a 32-byte purpose key (ZAP credentials, replication recipients, …)."""
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(
            self.material
        )


def _aad(file_id: bytes, org: str, service: str) -> bytes:
    return file_id + lp(org) + lp(service)


def wrap_dek(master: MasterKey, org: str, service: str, dek: bytes, file_id: bytes) -> bytes:
    """Wrap a DEK into sidecar bytes: file_id ‖ nonce ‖ ciphertext+tag."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(master.kek(org, service, file_id)).encrypt(
        nonce, dek, _aad(file_id, org, service)
    )
    return file_id + nonce + sealed


def unwrap_dek(master: MasterKey, org: str, service: str, sidecar: bytes, *,
               source: Path | None = None) -> bytes:
    """Open sidecar bytes; raises KeyUnwrapError if key, org, service or bytes do not match.

    With `source` (the sidecar's path), a failure is also logged as a warning for the operator.
    """
    if len(sidecar) != SIDECAR_BYTES:
        reason = f"bad length ({len(sidecar)} bytes, expected {SIDECAR_BYTES})"
    else:
        file_id = sidecar[:FILE_ID_BYTES]
        nonce = sidecar[FILE_ID_BYTES : FILE_ID_BYTES + NONCE_BYTES]
        sealed = sidecar[FILE_ID_BYTES + NONCE_BYTES :]
        try:
            return AESGCM(master.kek(org, service, file_id)).decrypt(
                nonce, sealed, _aad(file_id, org, service)
            )
        except InvalidTag:
            reason = (f"does not open with master key {master.fingerprint} "
                      "(another key, another tenant's sidecar, or damaged)")
    if source is not None:
        log.warning("key_unwrap_failed", org=org or "global", service=service,
                    sidecar=str(source), reason=reason)
    raise KeyUnwrapError(reason)


def new_dek() -> tuple[bytes, bytes]:
    """A fresh (file_id, dek) pair."""
    return secrets.token_bytes(FILE_ID_BYTES), secrets.token_bytes(KEY_BYTES)


def _decode_key_text(text: str, ref: str) -> bytes:
    text = text.strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"master key from {ref} is not valid base64 "
                          f"(expected base64 of {KEY_BYTES} random bytes)") from None
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"master key from {ref} must decode to {KEY_BYTES} bytes, "
                          f"got {len(raw)}")
    return raw


def resolve_master_key(ref: str, *, environ: dict[str, str] | None = None) -> MasterKey:
    """Resolve `env:VAR` or `file:PATH`; `kms://…` needs a remote kms and is resolved later."""
    env = os.environ if environ is None else environ
    if ref.startswith("env:"):
        var = ref[4:]
        if not var:
            raise ConfigError("master key ref 'env:' names no variable (use env:VAR)")
        if var not in env:
            raise ConfigError(f"master key ref {ref}: environment variable {var} is not set")
        return MasterKey(_decode_key_text(env[var], ref), ref)
    if ref.startswith("file:"):
        path = Path(ref[5:])
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not ASCII base64"
            raise ConfigError(f"master key ref {ref}: cannot read {path}: {reason}") from None
        return MasterKey(_decode_key_text(text, ref), ref)
    if ref.startswith("kms://"):
        raise ConfigError(
            f"master key ref {ref} needs a remote kms: set CLOUD_KMS_ZAP_ADDR "
            "(kms:// refs are resolved over ZAP)"
        )
    raise ConfigError(f"master key ref '{ref}' is malformed; use env:VAR, file:PATH "
                      "or kms://<deployment>/<org>/<purpose>")


def dev_master_key(data_dir: Path) -> tuple[MasterKey, bool]:
    """Load or create the `--dev` master key (0600) under the data dir; True if created."""
    path = data_dir / DEV_KEY_FILE
    ref = f"file:{path}"
    if path.exists():
        return resolve_master_key(ref), False
    data_dir.mkdir(parents=True, exist_ok=True)
    encoded = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(encoded + "\n")
    return resolve_master_key(ref), True
