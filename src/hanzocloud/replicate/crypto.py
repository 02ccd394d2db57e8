"""The deployment's sink keys: an age X25519 identity and a MAC key, both from the master key.

Every object the replicator writes is age-encrypted to one recipient. Its secret scalar is
HKDF(master, info `hanzocloud/v1/replicate`); age reads identities only as Bech32 strings
(`AGE-SECRET-KEY-1…`, BIP-173), so the 32 bytes are Bech32-encoded here before pyrage parses
them. A second key, HKDF(master, info `hanzocloud/v1/replicate-mac`), authenticates object
headers: anyone who knows the public recipient can encrypt to it, so decryption alone does
not prove that an object was written by this deployment.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import pyrage
from pyrage import x25519

from hanzocloud.keys import MasterKey

RECIPIENT_INFO = b"hanzocloud/v1/replicate"
MAC_INFO = b"hanzocloud/v1/replicate-mac"
SECRET_KEY_HRP = "age-secret-key-"

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    check = 1
    for value in values:
        top = check >> 25
        check = ((check & 0x1FFFFFF) << 5) ^ value
        for i, gen in enumerate(_GENERATOR):
            if (top >> i) & 1:
                check ^= gen
    return check


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _to_five_bits(data: bytes) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    for byte in data:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            out.append((acc >> bits) & 31)
    if bits:
        out.append((acc << (5 - bits)) & 31)
    return out


def bech32_encode(hrp: str, data: bytes) -> str:
    """Bech32 (BIP-173, not Bech32m) of `data` under a lower-case `hrp`, without a length cap."""
    words = _to_five_bits(data)
    polymod = _polymod(_hrp_expand(hrp) + words + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[w] for w in words + checksum)


@dataclass(frozen=True, slots=True)
class SinkKeys:
    """The age identity/recipient and the header MAC key of one deployment."""

    identity: x25519.Identity
    recipient: x25519.Recipient
    mac_key: bytes
    fingerprint: str

    @classmethod
    def derive(cls, master: MasterKey) -> SinkKeys:
        """Derive the sink keys from the master key (deterministic: same key, same recipient)."""
        secret = master.derive(RECIPIENT_INFO)
        identity = x25519.Identity.from_str(bech32_encode(SECRET_KEY_HRP, secret).upper())
        recipient = identity.to_public()
        return cls(identity, recipient, master.derive(MAC_INFO), str(recipient)[:16])

    def __repr__(self) -> str:  # never print key material
        return f"SinkKeys(recipient={self.fingerprint}…)"

    def seal(self, plaintext: bytes) -> bytes:
        """age-encrypt `plaintext` to the deployment recipient."""
        return bytes(pyrage.encrypt(plaintext, [self.recipient]))

    def unseal(self, blob: bytes) -> bytes:
        """Decrypt an age object; raises pyrage.DecryptError if it is not ours or was altered."""
        return bytes(pyrage.decrypt(blob, [self.identity]))

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of `data` under the deployment's header key."""
        return hmac.new(self.mac_key, data, hashlib.sha256).digest()
