"""The object store behind the replicator, through fsspec: `file://`, `s3://`, `memory://`, …

All calls are blocking (run them in a worker thread). Every backend failure surfaces as
`SinkError`, so the replicator can tell "the sink is down" (retry later, let lag grow) from
"the object is not there" (None / empty listings).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

from hanzocloud.replicate.errors import SinkError
from hanzocloud.storage import write_file_atomic

T = TypeVar("T")
ROOT = "replicate"
CONDITIONAL_CREATE = {"s3", "s3a", "memory"}


def redact(url: str) -> str:
    """The URL without any user:password part, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Sink:
    """Named byte objects under `<url>/replicate/`."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = redact(url)
        try:
            # Listings must be fresh: another replica may have written since the last look.
            fs, path = fsspec.core.url_to_fs(url, use_listings_cache=False,
                                             skip_instance_cache=True, **storage_options)
        except (ImportError, ValueError) as exc:
            raise SinkError(f"replicate url {self.url}: {exc}") from None
        self.fs = fs
        self.local = isinstance(fs, LocalFileSystem)
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        # Backends whose create mode is a real conditional write; others get a read-back.
        self.conditional = bool(protocols & CONDITIONAL_CREATE)
        self.root = f"{path.rstrip('/')}/{ROOT}" if path.strip("/") else ROOT

    def __repr__(self) -> str:
        return f"Sink({self.url!r})"

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except SinkError:
            raise
        except Exception as exc:  # any backend failure: the sink is unavailable
            raise SinkError(f"sink {self.url}: {what} {key} failed: "
                            f"{type(exc).__name__}: {exc}") from exc

    def put(self, key: str, data: bytes) -> None:
        """Write (or replace) one object atomically."""
        def run() -> None:
            if self.local:
                target = Path(self.path(key))
                target.parent.mkdir(parents=True, exist_ok=True)
                write_file_atomic(target, data)
            else:
                self.fs.pipe_file(self.path(key), data)
        self._call("put", key, run)

    def create(self, key: str, data: bytes) -> bool:
        """Write one object only if absent; False if something was already there.

        Local files use an exclusive link, S3 `If-None-Match: *`, memory an exclusive open.
        A backend without conditional writes falls back to write-then-read-back.
        """
        def run() -> bool:
            if self.local:
                target = Path(self.path(key))
                target.parent.mkdir(parents=True, exist_ok=True)
                return write_file_atomic(target, data, exclusive=True)
            try:
                self.fs.pipe_file(self.path(key), data, mode="create")
            except FileExistsError:
                return False
            except OSError as exc:
                if "precondition" in str(exc).lower():
                    return False
                raise
            if self.conditional:
                return True
            return bool(self.fs.cat_file(self.path(key)) == data)
        return self._call("create", key, run)

    def get(self, key: str) -> bytes | None:
        """One object's bytes, or None if it does not exist."""
        def run() -> bytes | None:
            try:
                return bytes(self.fs.cat_file(self.path(key)))
            except FileNotFoundError:
                return None
        return self._call("get", key, run)

    def listdir(self, prefix: str) -> list[str]:
        """Names (not paths) directly under `prefix`, sorted; empty if there is none."""
        def run() -> list[str]:
            path = self.path(prefix).rstrip("/")
            if self.local:
                if os.path.isdir(path):
                    return sorted(n for n in os.listdir(path) if not n.startswith("."))
                ancestor = _first_existing(path)
                if not os.path.isdir(ancestor):  # a parent that is a file: the sink is broken
                    raise NotADirectoryError(f"{ancestor} is not a directory")
                return []
            try:
                entries = self.fs.ls(path, detail=False)
            except FileNotFoundError:
                return []
            return sorted({str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries})
        return self._call("list", prefix, run)

    def delete(self, keys: list[str]) -> None:
        """Remove objects (missing ones are fine)."""
        def run() -> None:
            for key in keys:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(self.path(key))
        if keys:
            self._call("delete", keys[0], run)

    def prune(self, prefix: str) -> None:
        """Remove empty folders under `prefix` (local sinks; object stores have none)."""
        def run() -> None:
            for folder, _, _ in os.walk(self.path(prefix), topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
        if self.local:
            self._call("prune", prefix, run)


def _first_existing(path: str) -> str:
    while path and not os.path.lexists(path):
        path = os.path.dirname(path)
    return path or "/"
