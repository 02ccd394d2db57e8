"""The ZAP wire format: frame header, handshake, request/response/error bodies, service key."""

from __future__ import annotations

import asyncio
import enum
import functools
import hashlib
import hmac
import os
import struct
from collections.abc import Mapping
from typing import Any

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hanzocloud.errors import ERRORS_BY_CODE, CloudError, SubsystemUnavailable
from hanzocloud.identity import Identity, current_request_id

MAGIC = b"ZAP\x00"
PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
HEADER = struct.Struct("<III")  # body length, request id, kind; little-endian u32 each
NONCE_SIZE = 32
TOKEN_ENV = "CLOUD_ZAP_TOKEN"
_KEY_INFO = b"hanzocloud/v1/zap"


class Kind(enum.IntEnum):
    """The third header word."""

    HANDSHAKE = 0  # challenge, hello and welcome; request id 0
    REQUEST = 1
    RESPONSE = 2
    ERROR = 3  # request id 0: the connection is being closed for the reason given
    CANCEL = 4  # client -> server, empty body: stop working on that request id


class FrameTooLarge(Exception):
    """A peer announced a body larger than this side accepts."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds the {limit}-byte limit")
        self.length = length
        self.limit = limit


def encode_frame(request_id: int, kind: int, body: bytes) -> bytes:
    """Header plus body, ready for one `write` (so concurrent writers never interleave)."""
    return HEADER.pack(len(body), request_id, kind) + body


async def read_frame(reader: asyncio.StreamReader, max_frame: int) -> tuple[int, int, bytes]:
    """(request id, kind, body); raises IncompleteReadError at EOF, FrameTooLarge before reading."""
    length, request_id, kind = HEADER.unpack(await reader.readexactly(HEADER.size))
    if length > max_frame:
        raise FrameTooLarge(length, max_frame)
    body = await reader.readexactly(length) if length else b""
    return request_id, kind, body


class Challenge(msgspec.Struct, array_like=True, frozen=True):
    """Server -> client, first frame on a connection."""

    magic: bytes
    version: int
    nonce: bytes


class Hello(msgspec.Struct, array_like=True, frozen=True):
    """Client -> server: the credential, an HMAC over both nonces."""

    magic: bytes
    version: int
    nonce: bytes
    proof: bytes


class Welcome(msgspec.Struct, array_like=True, frozen=True):
    """Server -> client: proves the server holds the key too."""

    magic: bytes
    version: int
    proof: bytes


class IdentityBody(msgspec.Struct, array_like=True, frozen=True):
    """The caller's identity, carried with every request."""

    org: str = ""
    user: str = ""
    email: str = ""
    roles: list[str] = msgspec.field(default_factory=list)
    is_admin: bool = False
    request_id: str = ""

    @classmethod
    def of(cls, identity: Identity) -> IdentityBody:
        """The wire form of `identity`."""
        return cls(
            identity.org, identity.user, identity.email, list(identity.roles),
            identity.is_admin, identity.request_id or current_request_id.get(),
        )

    def to_identity(self) -> Identity:
        """The `hanzocloud.identity.Identity` this carries."""
        return Identity(
            self.org, self.user, self.email, tuple(self.roles), self.is_admin, self.request_id
        )


class RequestBody(msgspec.Struct, array_like=True, frozen=True):
    """Kind 1. `timeout_ms` is the time left when sent (0 = no deadline); params stay raw."""

    service: str
    method: str
    timeout_ms: int
    identity: IdentityBody
    params: msgspec.Raw


class ErrorBody(msgspec.Struct, array_like=True, frozen=True):
    """Kind 3: a `hanzocloud.errors.CloudError` by code."""

    code: str
    message: str
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    status: int = 500


def proof(key: bytes, role: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """HMAC-SHA256(key, "zap/v1/" role ‖ server nonce ‖ client nonce); role: client or server."""
    message = b"zap/v1/" + role + server_nonce + client_nonce
    return hmac.new(key, message, hashlib.sha256).digest()


def proof_matches(expected: bytes, given: bytes) -> bool:
    """Constant-time comparison, so timing says nothing about the expected proof."""
    return hmac.compare_digest(expected, given)


def new_nonce() -> bytes:
    """Fresh random bytes for one handshake."""
    return os.urandom(NONCE_SIZE)


def derive_service_key(master_key: bytes) -> bytes:
    """The ZAP service credential key: HKDF-SHA256(master, info="hanzocloud/v1/zap"), 32 bytes."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(master_key)


def service_key(*, master_key: bytes | None, environ: Mapping[str, str] | None = None) -> bytes:
    """CLOUD_ZAP_TOKEN's bytes when set (shared across processes), else derived from master."""
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "")
    if token:
        return token.encode("utf-8")
    if master_key:
        return derive_service_key(master_key)
    raise ValueError(f"no ZAP service key: set {TOKEN_ENV} or configure a master key")


def error_body(exc: CloudError) -> ErrorBody:
    """The wire form of `exc`; details that are not plain data are sent as their str().

    Raises when the details still cannot be sent: an int past 64 bits, or a key that is not
    text (no client could decode it).
    """
    encoded = msgspec.msgpack.encode(exc.details, enc_hook=str)
    details = msgspec.msgpack.decode(encoded, type=dict[str, Any])
    return ErrorBody(exc.code, exc.message, details, exc.status)


def error_from_body(body: ErrorBody) -> CloudError:
    """The `hanzocloud.errors` class for `body.code`; unknown codes keep their code and status."""
    cls = ERRORS_BY_CODE.get(body.code) or _remote_class(body.code, body.status)
    if issubclass(cls, SubsystemUnavailable):
        subsystem = str(body.details.get("subsystem", ""))
        return cls(subsystem, body.message, details=dict(body.details))
    return cls(body.message, details=dict(body.details))


@functools.lru_cache(maxsize=256)
def _remote_class(code: str, status: int) -> type[CloudError]:
    # A newer peer may send a code this build does not know: keep code and status intact.
    safe_status = status if 400 <= status <= 599 else 500
    return type("RemoteError", (CloudError,), {"code": code, "status": safe_status})
