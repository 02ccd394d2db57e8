"""Input checks for kms: secret paths, key names, kms:// references, base64 and sizes.

Everything a client sends is checked here before it reaches SQL or a cipher, so a bad
request is a 400 (or 413) that names the field and stores nothing.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from hanzocloud.errors import InvalidArgument, PayloadTooLarge

MAX_PATH = 512
MAX_VALUE_BYTES = 1024 * 1024  # a secret value, UTF-8 encoded
MAX_PLAINTEXT_BYTES = 1024 * 1024  # one transit plaintext or message, decoded
MAX_BATCH = 1000
_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,128}", re.ASCII)
_KEY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}", re.ASCII)
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}", re.ASCII)
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}", re.ASCII)
_CIPHERTEXT = re.compile(r"hz:v([1-9][0-9]{0,8}):([A-Za-z0-9+/]+={0,2})", re.ASCII)
REF_SCHEME = "kms://"


def secret_path(value: object, *, field: str = "path") -> str:
    """A secret path: `/`-separated segments of [A-Za-z0-9._-], no `.`/`..`, no empty ones."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{field} is required", details={"field": field})
    if len(value) > MAX_PATH:
        raise InvalidArgument(f"{field} is longer than {MAX_PATH} characters",
                              details={"field": field})
    for segment in value.split("/"):
        if segment in ("", ".", "..") or _SEGMENT.fullmatch(segment) is None:
            raise InvalidArgument(
                f"invalid {field}: use segments of A-Z, a-z, 0-9, '.', '_' and '-' separated "
                "by '/', with no empty, '.' or '..' segment",
                details={"field": field})
    return value


def path_prefix(value: object) -> str:
    """A list prefix: empty, or a path optionally ending with `/`."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise InvalidArgument("prefix must be a string", details={"field": "prefix"})
    secret_path(value.removesuffix("/"), field="prefix")
    return value


def key_name(value: object) -> str:
    """A transit key name: 1-128 characters of [A-Za-z0-9._-], not starting with '.'."""
    if not isinstance(value, str) or _KEY_NAME.fullmatch(value) is None:
        raise InvalidArgument("invalid key name: use 1-128 characters of A-Z, a-z, 0-9, '.', "
                              "'_' and '-', not starting with '.'", details={"field": "name"})
    return value


def secret_value(value: object) -> str:
    """A secret value: a string of at most 1 MiB (UTF-8); larger is 413."""
    if not isinstance(value, str):
        raise InvalidArgument("value must be a string", details={"field": "value"})
    try:
        size = len(value.encode("utf-8")) if len(value) <= MAX_VALUE_BYTES else len(value)
    except UnicodeEncodeError:  # a lone surrogate, from an in-process caller
        raise InvalidArgument("value is not valid Unicode text",
                              details={"field": "value"}) from None
    if size > MAX_VALUE_BYTES:
        raise PayloadTooLarge(f"value is over the {MAX_VALUE_BYTES}-byte limit",
                              details={"field": "value", "limit": MAX_VALUE_BYTES})
    return value


def b64decode(value: object, *, field: str, required: bool = True) -> bytes:
    """Strict standard base64 (padding required) into bytes; anything else is a 400."""
    if value is None and not required:
        return b""
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} must be a base64 string", details={"field": field})
    if len(value) > (MAX_PLAINTEXT_BYTES * 4) // 3 + 4:
        raise PayloadTooLarge(f"{field} is over the {MAX_PLAINTEXT_BYTES}-byte limit",
                              details={"field": field, "limit": MAX_PLAINTEXT_BYTES})
    if _B64.fullmatch(value) is None or len(value) % 4:
        raise InvalidArgument(f"{field} is not valid base64", details={"field": field})
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{field} is not valid base64", details={"field": field}) from None
    if len(data) > MAX_PLAINTEXT_BYTES:
        raise PayloadTooLarge(f"{field} is over the {MAX_PLAINTEXT_BYTES}-byte limit",
                              details={"field": field, "limit": MAX_PLAINTEXT_BYTES})
    return data


def b64encode(data: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def versioned(value: object, *, field: str = "ciphertext") -> tuple[int, bytes]:
    """Parse `hz:v<N>:<base64>` into (N, bytes); anything else is a 400."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} must be a string", details={"field": field})
    match = _CIPHERTEXT.fullmatch(value)
    if match is None:
        raise InvalidArgument(f"{field} is malformed: expected hz:v<N>:<base64>",
                              details={"field": field})
    return int(match[1]), b64decode(match[2], field=field)


def positive_int(value: object, *, field: str, minimum: int = 0,
                 maximum: int = 2**31 - 1) -> int:
    """An integer in [minimum, maximum] (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidArgument(f"{field} must be an integer from {minimum} to {maximum}",
                              details={"field": field})
    return value


def optional_int(body: dict[str, Any], field: str, *, minimum: int = 0) -> int | None:
    """`body[field]` as an int ≥ minimum, or None when absent/null."""
    value = body.get(field)
    return None if value is None else positive_int(value, field=field, minimum=minimum)


def query_int(raw: str | None, *, field: str, default: int, minimum: int, maximum: int) -> int:
    """A query parameter as an int in range, or the default when absent."""
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise InvalidArgument(f"{field} must be an integer", details={"field": field})
    return positive_int(int(raw), field=field, minimum=minimum, maximum=maximum)


def json_object(body: object) -> dict[str, Any]:
    """The request body must be a JSON object."""
    if not isinstance(body, dict):
        raise InvalidArgument("request body must be a JSON object")
    return body


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed `kms://<deployment>/<org>/<purpose>`; the purpose is a secret path."""

    deployment: str
    org: str
    purpose: str


def reference(value: object) -> Reference:
    """Parse a kms:// reference; malformed is a 400 (it says nothing about existence)."""
    if not isinstance(value, str) or not value.startswith(REF_SCHEME):
        raise InvalidArgument("malformed reference: expected kms://<deployment>/<org>/<purpose>",
                              details={"field": "ref"})
    parts = value[len(REF_SCHEME):].split("/", 2)
    if len(parts) != 3 or _SLUG.fullmatch(parts[0]) is None or _SLUG.fullmatch(parts[1]) is None:
        raise InvalidArgument("malformed reference: expected kms://<deployment>/<org>/<purpose> "
                              "with lower-case deployment and org slugs", details={"field": "ref"})
    return Reference(parts[0], parts[1], secret_path(parts[2], field="ref"))
