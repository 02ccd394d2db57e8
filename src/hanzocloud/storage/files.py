"""Where tenant files live, and how small files are written safely.

Layout (SPEC §6): `{data_dir}/orgs/{org}/{service}.db` and `{data_dir}/global/{service}.db`,
each with a `.dek` sidecar holding its wrapped page key. Slugs are checked before any path
is built, so a hostile org name never reaches the filesystem.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

from hanzocloud.errors import InvalidArgument

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}", re.ASCII)
SERVICE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}", re.ASCII)
GLOBAL = ""  # the org label of platform-wide files in keys and AAD: no slug can be empty


class _GlobalOrg(str):
    """The one value that selects the global folder; a request-supplied "" is a bad slug.

    It reads as "" (in keys, AAD and logs) but never equals a plain "" and hashes apart from
    it, so a dict keyed by org (the store's open handles, its open locks) cannot hand the
    global file to a request that named the org ""."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _GlobalOrg)

    def __ne__(self, other: object) -> bool:
        return not isinstance(other, _GlobalOrg)

    def __hash__(self) -> int:
        return _GLOBAL_HASH


_GLOBAL_HASH = hash(("hanzocloud/global-org", GLOBAL))  # apart from hash(""), computed once
GLOBAL_ORG: str = _GlobalOrg(GLOBAL)


def validate_slug(org: object) -> str:
    """Return `org` if it is a valid org slug, else raise InvalidArgument (no path touched)."""
    if not isinstance(org, str) or SLUG_RE.fullmatch(org) is None:
        raise InvalidArgument(
            "invalid org slug: use 1-63 characters of a-z, 0-9 and '-', starting with a "
            "letter or digit",
            details={"field": "org"},
        )
    return org


def validate_service(service: object) -> str:
    """Return `service` if it is a valid service name, else raise InvalidArgument."""
    if not isinstance(service, str) or SERVICE_RE.fullmatch(service) is None:
        raise InvalidArgument("invalid service name", details={"field": "service"})
    return service


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write temp, fsync, then rename (or link when `exclusive`); False if it already existed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
            tmp = path  # nothing left to clean up
        _fsync_dir(path.parent)
        return True
    finally:
        if tmp != path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

