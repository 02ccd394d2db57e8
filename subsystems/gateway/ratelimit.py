"""Token buckets per (org, API key or client address) and route class, with the IETF
`RateLimit-Policy` / `RateLimit` header fields (draft-ietf-httpapi-ratelimit-headers)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Decision:
    """The outcome of taking one token: allowed or not, and what the headers say.
    (Not frozen: a frozen dataclass costs a setattr per field on every request.)"""

    allowed: bool
    cls: str
    policy: str          # RateLimit-Policy value
    tokens: float        # left in the bucket after this take
    reset: int           # seconds until the bucket is full again
    retry_after: float   # seconds until a token is available (0 when allowed)

    @property
    def state(self) -> str:
        """The RateLimit value (formatted only for the decision that answers)."""
        return (f'"{self.cls}";r={int(self.tokens)};'
                f't={max(self.reset, math.ceil(self.retry_after))}')


def route_class(method: str, path: str) -> str:
    """The rate-limit class of a request: sign-in traffic, reads or writes."""
    if path.startswith("/v1/iam/oauth/"):
        return "auth"
    return "read" if method in ("GET", "HEAD", "OPTIONS") else "write"


class RateLimiter:
    """In-memory token buckets (per process), bounded by an LRU."""

    def __init__(self, limits: dict[str, tuple[float, float]], *, max_buckets: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.max_buckets = max_buckets
        self.clock = clock
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._policy = {cls: f'"{cls}";q={int(burst)};w={max(1, math.ceil(burst / rate))}'
                        for cls, (rate, burst) in limits.items()}

    def take(self, key: str, cls: str) -> Decision:
        """Take one token from the bucket of (`key`, `cls`)."""
        rate, burst = self.limits[cls]
        now = self.clock()
        bucket = self._buckets.get((key, cls))
        if bucket is None:
            bucket = [burst, now]
            self._buckets[(key, cls)] = bucket
            if len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end((key, cls))
            bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        allowed = bucket[0] >= 1.0
        if allowed:
            bucket[0] -= 1.0
        retry = 0.0 if allowed else (1.0 - bucket[0]) / rate
        reset = math.ceil((burst - bucket[0]) / rate) if bucket[0] < burst else 0
        return Decision(allowed, cls, self._policy[cls], bucket[0], reset, retry)

    def peek(self, key: str, cls: str) -> dict[str, float]:
        """A bucket's current state, for the status route (takes nothing)."""
        rate, burst = self.limits[cls]
        bucket = self._buckets.get((key, cls))
        tokens = burst if bucket is None else min(
            burst, bucket[0] + (self.clock() - bucket[1]) * rate)
        return {"limit": burst, "remaining": math.floor(tokens), "ratePerSecond": rate}

    def __len__(self) -> int:
        return len(self._buckets)
