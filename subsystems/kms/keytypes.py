"""Transit key types: what each one stores, and how it encrypts or signs.

Stored material (always sealed, see `seal.py`): `aes256-gcm` 32 random bytes; `ed25519` the
32-byte private key; `ecdsa-p256` the 32-byte private scalar (big-endian); `ml-dsa-65` the
32-byte FIPS 204 seed. Public keys leave only as PEM SubjectPublicKeyInfo.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hanzocloud.errors import InvalidArgument

NONCE = 12


class DecryptFailed(InvalidArgument):
    """The ciphertext does not open with this key (wrong key, version, data or context)."""

    code = "decryption_failed"


@dataclass(frozen=True, slots=True)
class KeyType:
    """One transit key type and the operations it supports."""

    name: str
    generate: Callable[[], bytes]
    load: Callable[[bytes], Any] | None = None  # material → private key object (signers)
    sign_with: Callable[[Any, bytes], bytes] | None = None

    @property
    def encrypts(self) -> bool:
        return self.load is None

    @property
    def signs(self) -> bool:
        return self.sign_with is not None


def _p256_generate() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_numbers().private_value.to_bytes(32, "big")


def _p256_load(material: bytes) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(material, "big"), ec.SECP256R1())


def _mldsa_generate() -> bytes:
    try:
        return mldsa.MLDSA65PrivateKey.generate().private_bytes_raw()
    except UnsupportedAlgorithm:
        raise InvalidArgument("key type ml-dsa-65 is not supported by the crypto backend "
                              "of this build", details={"field": "type"}) from None


TYPES: dict[str, KeyType] = {
    "aes256-gcm": KeyType("aes256-gcm", lambda: secrets.token_bytes(32)),
    "ed25519": KeyType(
        "ed25519", lambda: ed25519.Ed25519PrivateKey.generate().private_bytes_raw(),
        ed25519.Ed25519PrivateKey.from_private_bytes, lambda k, m: k.sign(m)),
    "ecdsa-p256": KeyType(
        "ecdsa-p256", _p256_generate, _p256_load,
        lambda k, m: k.sign(m, ec.ECDSA(hashes.SHA256()))),
    "ml-dsa-65": KeyType(
        "ml-dsa-65", _mldsa_generate, mldsa.MLDSA65PrivateKey.from_seed_bytes,
        lambda k, m: k.sign(m)),
}


def key_type(value: object) -> KeyType:
    """The KeyType named by `value`; anything else is a 400 listing the valid names."""
    if not isinstance(value, str) or value not in TYPES:
        raise InvalidArgument(f"unknown key type {value!r}; use one of {', '.join(TYPES)}",
                              details={"field": "type"})
    return TYPES[value]


def public_pem(kind: KeyType, material: bytes) -> str:
    """The PEM public key of a signing key version ("" for symmetric keys)."""
    if kind.load is None:
        return ""
    public = kind.load(material).public_key()
    return str(public.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode())


def encrypt(material: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM: nonce ‖ ciphertext ‖ tag."""
    nonce = secrets.token_bytes(NONCE)
    return nonce + AESGCM(material).encrypt(nonce, plaintext, aad)


def decrypt(material: bytes, blob: bytes, aad: bytes) -> bytes:
    """Open `encrypt` output; a mismatch is a 400 that does not say which part was wrong."""
    if len(blob) < NONCE + 16:
        raise DecryptFailed("ciphertext is too short")
    try:
        return AESGCM(material).decrypt(blob[:NONCE], blob[NONCE:], aad)
    except InvalidTag:
        raise DecryptFailed("ciphertext does not decrypt with this key") from None


def sign(kind: KeyType, material: bytes, message: bytes) -> bytes:
    """A signature of `message` (ECDSA: SHA-256, DER-encoded; Ed25519 and ML-DSA: pure)."""
    assert kind.load is not None and kind.sign_with is not None
    return kind.sign_with(kind.load(material), message)


def verify(kind: KeyType, material: bytes, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is valid for `message` under this key version."""
    assert kind.load is not None
    public = kind.load(material).public_key()
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            public.verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
