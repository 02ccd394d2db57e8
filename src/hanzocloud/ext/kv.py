"""The org-scoped key-value store behind the `kv` capability."""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable


@runtime_checkable
class KvStore(Protocol):
    """Key-value storage partitioned by org; called from worker threads, so it may block.

    The runtime always passes the org of the call, never one chosen by the guest.
    """

    def get(self, org: str, key: str) -> bytes | None:
        """Return the value stored under `key` for `org`, or None."""
        ...

    def set(self, org: str, key: str, value: bytes) -> None:
        """Store `value` under `key` for `org`, replacing any previous value."""
        ...


class MemoryKvStore:
    """A thread-safe in-process KvStore; data lives as long as the object."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def get(self, org: str, key: str) -> bytes | None:
        """Return the value stored under `key` for `org`, or None."""
        with self._lock:
            return self._data.get((org, key))

    def set(self, org: str, key: str, value: bytes) -> None:
        """Store `value` under `key` for `org`."""
        with self._lock:
            self._data[(org, key)] = bytes(value)

    def keys(self, org: str) -> list[str]:
        """The keys `org` has stored, sorted."""
        with self._lock:
            return sorted(k for o, k in self._data if o == org)
