"""Password hashing (argon2id) and login throttling with exponential backoff.

Unknown accounts cost the same as known ones: their attempts verify a dummy hash, fail with
the same message and are throttled under the same key (the submitted email), so neither the
answer nor its timing tells whether an account exists.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from hanzocloud.errors import InvalidArgument, RateLimited
from subsystems.iam.config import IamConfig

MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # argon2 cost grows with input; a cap keeps one request cheap
GENERIC_FAILURE = "invalid email or password"


def check_password_policy(password: str) -> None:
    """Reject passwords that are too short or absurdly long."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidArgument(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")


class Passwords:
    """argon2id hashing off the event loop, and a dummy hash for unknown accounts."""

    def __init__(self, config: IamConfig) -> None:
        self.hasher = PasswordHasher(time_cost=config.argon2_time_cost,
                                     memory_cost=config.argon2_memory_kib, parallelism=2)
        self._dummy: asyncio.Future[str] | None = None

    def prepare(self) -> None:
        """Start hashing the dummy in a worker thread (iam's lifespan calls this at start,
        so it is ready long before the first sign-in and never delays the boot)."""
        if self._dummy is None:
            self._dummy = asyncio.ensure_future(
                asyncio.to_thread(self.hasher.hash, secrets.token_urlsafe(24)))

    async def dummy(self) -> str:
        """A hash of a random password with the current parameters, for unknown accounts."""
        self.prepare()
        assert self._dummy is not None
        return await asyncio.shield(self._dummy)

    async def hash(self, password: str) -> str:
        """The argon2id hash of `password`."""
        check_password_policy(password)
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether `password` matches `stored`; with no account, verifies the dummy hash."""
        candidate = password if isinstance(password, str) else ""
        if len(candidate) > MAX_PASSWORD:
            candidate = candidate[:MAX_PASSWORD]
        target = stored if stored is not None else await self.dummy()

        def check() -> bool:
            try:
                return bool(self.hasher.verify(target, candidate))
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        ok = await asyncio.to_thread(check)
        return ok and stored is not None


@dataclass
class _Failures:
    count: int
    last: float


class Throttle:
    """Failed-login counters per account and per client IP, with exponential backoff."""

    def __init__(self, config: IamConfig, *, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, _Failures] = OrderedDict()

    def _free(self, key: str) -> int:
        # Many people can share one address (NAT), so an IP gets more attempts than an account.
        return self.config.throttle_free * (10 if key.startswith("ip:") else 1)

    def wait(self, key: str) -> float:
        """Seconds before `key` may try again (0 when it may try now)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        over = entry.count - self._free(key)
        if over < 0:
            return 0.0
        delay = min(self.config.throttle_max, self.config.throttle_base * (2 ** min(over, 30)))
        return max(0.0, float(entry.last + delay - self.clock()))

    def check(self, *keys: str) -> None:
        """Raise RateLimited when any key is backing off (same message for every key)."""
        wait = max((self.wait(k) for k in keys), default=0.0)
        if wait > 0:
            raise RateLimited(f"too many failed sign-in attempts; try again in {int(wait) + 1} s",
                              retry_after=wait)

    def failure(self, *keys: str) -> None:
        """Count one failed attempt against each key."""
        now = self.clock()
        for key in keys:
            entry = self._entries.pop(key, None)
            if entry is not None and now - entry.last > 2 * self.config.throttle_max:
                entry = None  # long quiet: start over
            self._entries[key] = _Failures((entry.count if entry else 0) + 1, now)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def success(self, account_key: str, *others: str) -> None:
        """A successful login clears the account's counter, and takes back the attempt it
        counted against each of `others` (the IP's earlier failures stay)."""
        self._entries.pop(account_key, None)
        for key in others:
            entry = self._entries.get(key)
            if entry is not None:
                if entry.count <= 1:
                    del self._entries[key]
                else:
                    self._entries[key] = _Failures(entry.count - 1, entry.last)
