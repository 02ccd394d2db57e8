"""The replicator's settings and its per-database bookkeeping."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from hanzocloud.replicate.tenant import Policy, TenantLog


@dataclass(frozen=True, slots=True)
class ReplicateOptions:
    """Timings and windows; the defaults are the production ones."""

    debounce: float = 0.1
    interval: float = 1.0
    policy: Policy = field(default_factory=Policy)
    wal_retention: float = 72 * 3600.0
    snapshot_retention: float = 30 * 86400.0
    retention_every: float = 600.0
    lease_ttl: float = 15.0
    idle_close: float = 30.0  # files followed without an open handle (connect_sync users)
    close_timeout: float = 10.0
    concurrency: int = 4


@dataclass(eq=False)
class Followed:
    """One database the replicator follows: its log, lock and lag bookkeeping."""

    org: str
    service: str
    log: TenantLog
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    open: bool = True  # a TenantStore handle is open on it
    since: float | None = None  # monotonic time of the oldest change not yet shipped
    failing: bool = False
    last_change: float = field(default_factory=time.monotonic)
    last_retention: float = field(default_factory=time.monotonic)
