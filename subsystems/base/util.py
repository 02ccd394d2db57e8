"""Small shared helpers: record ids, PocketBase timestamps, identifier checks."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from hanzocloud.errors import InvalidArgument

ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
ID_LENGTH = 15
ID_RE = re.compile(r"[a-z0-9]{15}", re.ASCII)
# Collection and field names become SQL identifiers, so they are checked before any DDL.
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}", re.ASCII)
RESERVED_NAMES = frozenset({
    "id", "created", "updated", "collectionId", "collectionName", "expand",
    "null", "true", "false", "rowid", "oid", "_rowid_",
})


def new_id() -> str:
    """A PocketBase-style record id: 15 random characters of [a-z0-9]."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def valid_id(value: object) -> bool:
    """Whether `value` looks like a record id."""
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def check_name(value: object, what: str) -> str:
    """Return `value` if it is a valid collection or field name, else 400."""
    if not isinstance(value, str) or NAME_RE.fullmatch(value) is None:
        raise InvalidArgument(
            f"invalid {what} name {value!r}: use 1-63 letters, digits and '_', starting "
            "with a letter",
            details={"field": what},
        )
    return value


def format_time(moment: datetime) -> str:
    """PocketBase's date format: `2024-01-01 10:00:00.000Z` (UTC, milliseconds)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_text() -> str:
    """The current time in PocketBase's date format."""
    return format_time(datetime.now(UTC))


def parse_time(value: str) -> datetime | None:
    """Parse an ISO-8601 / PocketBase date string (naive means UTC); None if it is not one."""
    text = value.strip()
    if not text or len(text) > 40:
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment
