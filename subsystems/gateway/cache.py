"""The verified-credential cache: a bounded LRU whose entries expire with the credential,
and never outlive the revocation window."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from hanzocloud.identity import Identity


@dataclass(frozen=True, slots=True)
class Verified:
    """What a credential proved: the identity, its minted headers, and when to re-check."""

    identity: Identity
    headers: list[tuple[bytes, bytes]]
    bucket_keys: tuple[str, ...]
    expires_at: float        # wall clock: min(credential expiry, cached-at + window)


class TokenCache:
    """LRU of credential → Verified; counts hits and misses for the status route."""

    def __init__(self, size: int, *, clock: Callable[[], float] = time.time) -> None:
        self.size = size
        self.clock = clock
        # keyed by the credential, and also by the raw Authorization value that carried it
        # (so a repeat request skips parsing the header)
        self._items: OrderedDict[str | bytes, Verified] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, credential: str | bytes, *, count: bool = True) -> Verified | None:
        """The cached verification of `credential`, if still fresh."""
        item = self._items.get(credential)
        if item is None:
            self.misses += count
            return None
        if item.expires_at <= self.clock():
            del self._items[credential]
            self.misses += count
            return None
        self._items.move_to_end(credential)
        self.hits += 1
        return item

    def put(self, credential: str | bytes, item: Verified) -> None:
        """Remember a verification (evicting the least recently used beyond the bound)."""
        if item.expires_at <= self.clock():
            return
        self._items[credential] = item
        self._items.move_to_end(credential)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def drop_org(self, org: str) -> None:
        """Forget the verifications of one org's credentials (one of them was revoked)."""
        for key in [k for k, v in self._items.items() if v.identity.org == org]:
            del self._items[key]

    def clear(self) -> None:
        """Forget everything (a credential was revoked somewhere in this process)."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
