"""Sink keys and the sealed record format: deterministic recipient, tamper detection."""

from __future__ import annotations

import secrets

import pyrage
import pytest

from hanzocloud.keys import MasterKey
from hanzocloud.replicate import objects
from hanzocloud.replicate.crypto import SECRET_KEY_HRP, SinkKeys, bech32_encode
from hanzocloud.replicate.errors import ChainError

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32_payload(text: str) -> bytes:
    """Decode the data part of a Bech32 string back to bytes (test-side reference)."""
    data = text.lower().rsplit("1", 1)[1][:-6]
    acc = bits = 0
    out = bytearray()
    for char in data:
        acc = (acc << 5) | CHARSET.index(char)
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    return bytes(out)


def master_key() -> MasterKey:
    return MasterKey(secrets.token_bytes(32), "test:random")


@pytest.mark.parametrize("round_", range(5), ids=lambda i: f"identity{i}")
def test_bech32_matches_age_identities(round_: int) -> None:
    identity = str(pyrage.x25519.Identity.generate())
    secret = bech32_payload(identity)
    assert len(secret) == 32
    assert bech32_encode(SECRET_KEY_HRP, secret).upper() == identity


def test_recipient_is_deterministic_per_master_key() -> None:
    master = master_key()
    first, again, other = SinkKeys.derive(master), SinkKeys.derive(master), SinkKeys.derive(
        master_key())
    assert str(first.recipient) == str(again.recipient)
    assert str(first.recipient) != str(other.recipient)
    assert first.mac_key == again.mac_key != other.mac_key
    assert "SECRET" not in repr(first) and first.mac_key.hex() not in repr(first)


def _header(**extra: object) -> dict[str, object]:
    return {"kind": "wal", "org": "acme", "service": "alpha", "generation": "g", "index": 3,
            "prev": "p", **extra}


def test_record_roundtrip_and_chain() -> None:
    keys = SinkKeys.derive(master_key())
    blob, chain = objects.seal_record(keys, _header(), b"page bytes")
    assert blob.startswith(b"age-encryption.org/v1") and b"page bytes" not in blob
    record = objects.open_record(keys, blob, where="k", kind="wal", index=3)
    assert record.payload == b"page bytes" and record.chain == chain


def _flip(blob: bytes) -> bytes:
    middle = len(blob) - 20
    return blob[:middle] + bytes([blob[middle] ^ 1]) + blob[middle + 1:]


def _forged(keys: SinkKeys) -> bytes:
    # Anyone who knows the public recipient can encrypt to it, but not MAC the header.
    wrong = SinkKeys.derive(master_key())
    plain = wrong.unseal(objects.seal_record(wrong, _header(), b"evil")[0])
    return bytes(pyrage.encrypt(plain, [keys.recipient]))


CASES = [
    ("flipped-byte", lambda keys, blob: _flip(blob), "cannot be decrypted"),
    ("truncated", lambda keys, blob: blob[: len(blob) // 2], "cannot be decrypted"),
    ("other-deployment", lambda keys, blob: objects.seal_record(
        SinkKeys.derive(master_key()), _header(), b"x")[0], "cannot be decrypted"),
    ("forged-to-recipient", lambda keys, blob: _forged(keys), "authentication failed"),
    ("moved-index", lambda keys, blob: objects.seal_record(keys, _header(index=4), b"x")[0],
     "expected 3"),
    ("not-a-record", lambda keys, blob: bytes(pyrage.encrypt(b"hello", [keys.recipient])),
     "not a replication record"),
]


@pytest.mark.parametrize(("mutate", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_tampered_records_are_refused(mutate: object, message: str) -> None:
    keys = SinkKeys.derive(master_key())
    blob, _ = objects.seal_record(keys, _header(), b"page bytes")
    bad = mutate(keys, blob)  # type: ignore[operator]
    with pytest.raises(ChainError, match=message):
        objects.open_record(keys, bad, where="acme/alpha/g/wal/3", kind="wal", index=3)
