"""Sink object names and the sealed record format every object uses.

Layout under `<url>/replicate/` (org `_global` holds the platform-wide files):

    <org>/<service>/latest.age                              → current generation
    <org>/<service>/lease/<epoch:016x>.age                  → single-writer lease
    <org>/<service>/<generation>/dek.age                    → the wrapped page-key sidecar
    <org>/<service>/<generation>/snapshots/<index:016x>-<created_ms>.age
    <org>/<service>/<generation>/wal/<index:016x>.age       → one shipped WAL segment
    replicas/<owner-hash>.age                               → replica heartbeat

Inside the age envelope a record is `MAGIC ‖ u32 len ‖ header JSON ‖ HMAC(header) ‖ payload`.
The header names the object (kind, org, service, generation, index), carries the SHA-256 of
the payload and `prev`, the chain value of the segment before; a record's own chain value is
SHA-256 of its header, so each WAL segment commits to every segment before it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import struct
import time
from dataclasses import dataclass
from typing import Any

import pyrage

from hanzocloud.replicate.crypto import SinkKeys
from hanzocloud.replicate.errors import ChainError

MAGIC = b"HZREPL1\n"
MAC_BYTES = 32
GLOBAL_LABEL = "_global"  # no org slug can start with '_'
SNAPSHOT_RE = re.compile(r"^([0-9a-f]{16})-([0-9]{1,15})\.age$")
WAL_RE = re.compile(r"^([0-9a-f]{16})\.age$")
LEASE_RE = re.compile(r"^([0-9a-f]{16})\.age$")
GENERATION_RE = re.compile(r"^[0-9a-f]{12}-[0-9a-f]{8}$")


def org_label(org: str) -> str:
    """The sink folder of an org; the global org (empty) becomes `_global`."""
    return org or GLOBAL_LABEL


def tenant_prefix(org: str, service: str) -> str:
    """`<org>/<service>` for one database."""
    return f"{org_label(org)}/{service}"


def new_generation() -> str:
    """A fresh generation id: time-ordered (ms, hex) plus 32 random bits."""
    return f"{int(time.time() * 1000):012x}-{secrets.token_hex(4)}"


def genesis(generation: str) -> str:
    """The chain value before the first segment of a generation."""
    return hashlib.sha256(b"hanzocloud/v1/replicate/genesis\x00" + generation.encode()).hexdigest()


def snapshot_name(index: int, created: float) -> str:
    return f"{index:016x}-{int(created * 1000)}.age"


def wal_name(index: int) -> str:
    return f"{index:016x}.age"


@dataclass(frozen=True, slots=True)
class Record:
    """A verified record: its header fields, payload and chain value."""

    header: dict[str, Any]
    payload: bytes
    chain: str


def seal_record(keys: SinkKeys, header: dict[str, Any], payload: bytes) -> tuple[bytes, str]:
    """Seal one record; returns (age bytes, chain value)."""
    fields = {**header, "v": 1, "sha256": hashlib.sha256(payload).hexdigest()}
    body = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    plain = MAGIC + struct.pack(">I", len(body)) + body + keys.mac(body) + payload
    return keys.seal(plain), hashlib.sha256(body).hexdigest()


def open_record(keys: SinkKeys, blob: bytes, *, where: str, **expect: Any) -> Record:
    """Decrypt and verify one record; raises ChainError naming `where` if anything is off."""
    try:
        plain = keys.unseal(blob)
    except pyrage.DecryptError:
        raise ChainError(f"{where}: cannot be decrypted with this deployment's key (corrupt, "
                         "tampered with, or written under another master key)") from None
    if not plain.startswith(MAGIC) or len(plain) < len(MAGIC) + 4:
        raise ChainError(f"{where}: not a replication record")
    (size,) = struct.unpack(">I", plain[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    body = plain[start:start + size]
    mac = plain[start + size:start + size + MAC_BYTES]
    payload = plain[start + size + MAC_BYTES:]
    if len(mac) != MAC_BYTES or not hmac.compare_digest(mac, keys.mac(body)):
        raise ChainError(f"{where}: header authentication failed (tampered with or forged)")
    try:
        header = json.loads(body)
    except ValueError:
        raise ChainError(f"{where}: unreadable header") from None
    if not isinstance(header, dict) or header.get("v") != 1:
        raise ChainError(f"{where}: unknown record version")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise ChainError(f"{where}: payload checksum mismatch (corrupt or tampered with)")
    for name, value in expect.items():
        if header.get(name) != value:
            raise ChainError(f"{where}: header says {name}={header.get(name)!r}, expected "
                             f"{value!r} (object moved or replaced)")
    return Record(header, payload, hashlib.sha256(body).hexdigest())
