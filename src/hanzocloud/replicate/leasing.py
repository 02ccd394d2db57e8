"""Leases: who may write a database, and what a replica does when it is unsure.

The replicator's base. On open (`before_open`, and `before_connect` for `connect_sync`) it
takes the database's lease, restoring the file from the sink first when it is missing here
or another replica has written since. When the sink cannot be reached, the file is served
and followed but its lease is deferred; once the sink answers, `_settle` decides whether the
copy continues the sink's `latest` (it ships), is the only copy (a new generation starts),
or conflicts with another replica's writes (it is kept aside and the sink's state served).
A lease whose heartbeat lapsed is checked again, and the database dropped if it moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from hanzocloud import metrics
from hanzocloud.replicate.crypto import SinkKeys
from hanzocloud.replicate.errors import ChainError, SinkError, TenantUnavailable
from hanzocloud.replicate.hydrate import take_over
from hanzocloud.replicate.lease import LeaseHeld, Leases
from hanzocloud.replicate.objects import org_label
from hanzocloud.replicate.options import Followed, ReplicateOptions
from hanzocloud.replicate.restore import latest_generation
from hanzocloud.replicate.sink import Sink

if TYPE_CHECKING:
    from hanzocloud.storage import TenantStore

log = structlog.get_logger("hanzocloud.replicate")
Key = tuple[str, str]
# How long `connect_sync` waits for a lease and hydration (a restore of a big file included).
CONNECT_TIMEOUT = 120.0


class Leasing:
    """The lease side of a replicator (see the module docstring)."""

    def __init__(self, sink: Sink, keys: SinkKeys, options: ReplicateOptions,
                 leases: Leases) -> None:
        self.sink, self.keys, self.options, self.leases = sink, keys, options, leases
        self.store: TenantStore | None = None
        self._followed: dict[Key, Followed] = {}
        self._unleased: set[Key] = set()  # opened during an outage; lease taken on recovery
        # Who held a deferred lease before we took it, until `_settle` has used the answer
        # (taking it again would only name us).
        self._taken_from: dict[Key, str | None] = {}
        self._key_locks: dict[Key, asyncio.Lock] = {}
        self._to_release: set[Key] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    # -- taking a lease -------------------------------------------------------------------------

    def _key_lock(self, key: Key) -> asyncio.Lock:
        # Orders lease take-over (open) against lease release (close) for one database.
        return self._key_locks.setdefault(key, asyncio.Lock())

    async def before_open(self, org: str, service: str, path: Path) -> None:
        """Take the lease; restore the file first if it is missing here or was superseded."""
        key = (org, service)
        if self._stopping:
            self._refuse_missing(org, service, path)
            return
        if key in self._followed:
            return
        async with self._key_lock(key):
            if key not in self._followed:
                await self._take(org, service, path)

    async def _take(self, org: str, service: str, path: Path) -> None:
        key = (org, service)
        try:
            leased = await take_over(self.sink, self.keys, self.leases, org, service, path)
        except TenantUnavailable:
            if key in self.leases.held:
                await self._release(key)
            raise
        if leased:
            self._unleased.discard(key)
            self._taken_from.pop(key, None)
        else:
            self._unleased.add(key)

    def before_connect(self, org: str, service: str, path: Path) -> None:
        """`connect_sync` is about to open a file: lease and hydrate it as an open would.

        Blocking, and raising TenantUnavailable as an open does, so a replica without the
        file never creates it empty over the sink's history. A worker thread waits for the
        replicator's loop (where the key lock orders it with opens); the loop's own thread
        cannot wait for itself, so there (and before `start`) it runs in a thread of its own.
        """
        if (org, service) in self._followed:
            return  # leased, and the file here is the one being shipped
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self.before_open(org, service, path), loop)
            try:
                future.result(CONNECT_TIMEOUT)
            except TimeoutError:
                future.cancel()
                raise TenantUnavailable(f"{org_label(org)}/{service} could not be leased and "
                                        "restored in time; retry shortly") from None
            return
        if self._stopping:
            self._refuse_missing(org, service, path)
            return
        # Not the key lock: it may belong to a coroutine of the loop this thread now blocks.
        with ThreadPoolExecutor(1, thread_name_prefix="hanzocloud-connect") as pool:
            pool.submit(asyncio.run, self._take(org, service, path)).result()

    @staticmethod
    def _refuse_missing(org: str, service: str, path: Path) -> None:
        # Nothing is hydrated while stopping: a missing file must not be started empty.
        if not (path.exists() or path.with_name(path.name + ".dek").exists()):
            raise TenantUnavailable(f"{org_label(org)}/{service} is not on this replica, and "
                                    "the replicator is stopping; retry shortly")

    # -- settling after an outage ---------------------------------------------------------------

    async def _claim(self, followed: Followed) -> bool:
        """Settle a deferred lease (see `_settle`) under the database's key lock."""
        async with self._key_lock((followed.org, followed.service)):
            return await self._settle(followed)

    async def _settle(self, followed: Followed) -> bool:
        """Take the deferred lease of a followed file; True once its copy may ship.

        It may when the sink's `latest` still names the generation the copy continues, or
        when no other replica held the lease since this one (its copy is then the newest,
        and a new generation starts from it). Otherwise another replica wrote a history
        this copy lacks, while writes made here during the outage are in no other copy:
        both cannot be kept, so the copy is set aside (`_keep_aside`) and the sink's state
        is served. False as well while the sink cannot be read (retried after a heartbeat).
        The caller holds the key lock.
        """
        key = (followed.org, followed.service)
        if self._followed.get(key) is not followed or followed.log.closed:
            return False
        if key not in self._unleased:
            return True
        if time.time() > self.leases.alive_until:
            return False  # others would find a lease taken now already dead: beat first
        try:
            if key not in self._taken_from:
                grant = await asyncio.to_thread(self.leases.acquire, *key)
                self._taken_from[key] = grant.previous
            try:
                latest = await asyncio.to_thread(latest_generation, self.sink, self.keys, *key)
            except ChainError:
                latest = "(unreadable)"  # continues nothing this replica shipped
        except LeaseHeld:
            await self._lose(followed, "another replica took the lease during an outage")
            return False
        except (SinkError, ChainError):
            return False
        previous = self._taken_from.pop(key)
        self._unleased.discard(key)
        if followed.log.generation is not None and latest == followed.log.generation:
            return True
        if previous in (None, self.leases.id) or latest is None:
            followed.log.abandon_generation()  # the copy here is all there is: start afresh
            return True
        await self._keep_aside(followed, holder=previous)
        return False

    async def _keep_aside(self, followed: Followed, *, holder: str | None) -> None:
        """Move a copy that conflicts with the sink's history out of the way, loudly; the
        next open restores the sink's `latest`, which is what every replica and a restore see.
        The caller holds the key lock."""
        key = (followed.org, followed.service)
        self._forget(followed)
        if self.store is not None:
            await self.store.evict(*key)  # no handle may write on into the moved file
        async with followed.lock:
            aside = await asyncio.to_thread(followed.log.set_aside)
        metrics.REPLICATE_FAILURES.labels("conflict").inc()
        log.error("replicate_conflict_kept_aside", org=org_label(followed.org),
                  service=followed.service, kept=str(aside), other_replica=holder,
                  reason="another replica wrote while this one could not reach the sink; the "
                         "writes made here meanwhile are only in the kept copy")
        await self._release(key)

    async def _lose(self, followed: Followed, reason: str) -> None:
        log.error("replicate_lease_lost", org=org_label(followed.org),
                  service=followed.service, reason=reason)
        metrics.REPLICATE_FAILURES.labels("lease").inc()
        self.leases.forget(followed.org, followed.service)
        await asyncio.to_thread(followed.log.release)
        self._forget(followed)
        if self.store is not None:
            await self.store.evict(followed.org, followed.service)

    async def _beat(self) -> None:
        period = max(0.2, self.options.lease_ttl / 3)
        while True:
            await asyncio.sleep(period)
            lapsed = time.time() > self.leases.alive_until
            try:
                await asyncio.to_thread(self.leases.heartbeat)
            except SinkError:
                metrics.REPLICATE_FAILURES.labels("heartbeat").inc()
                continue
            for key in list(self._to_release):
                if key not in self._followed:
                    await self._release(key)
            if lapsed or self._unleased:
                await self._revalidate(lapsed=lapsed)

    async def _revalidate(self, *, lapsed: bool) -> None:
        """After an outage: settle deferred leases, and drop files whose lease moved away."""
        for key in list(self._unleased):
            followed = self._followed.get(key)
            if followed is not None:
                await self._claim(followed)
        if not lapsed:
            return  # our heartbeat never expired: no lease of ours can have been taken
        for key, followed in list(self._followed.items()):
            try:
                held = await asyncio.to_thread(self.leases.still_held, *key)
            except SinkError:
                return
            if not held and key not in self._unleased:
                await self._lose(followed, "lease expired while the sink was unreachable")

    async def _release(self, key: Key) -> None:
        try:
            await asyncio.to_thread(self.leases.release, *key)
            self._to_release.discard(key)
        except (SinkError, ChainError):
            self._to_release.add(key)  # retried after the next heartbeat

    def _forget(self, followed: Followed) -> None:
        key = (followed.org, followed.service)
        if self._followed.get(key) is followed:
            del self._followed[key]
            self._unleased.discard(key)
            self._taken_from.pop(key, None)
            with contextlib.suppress(KeyError):
                metrics.REPLICATE_LAG.remove(org_label(followed.org), followed.service)
