"""The replicator: follows every open database, ships its WAL, keeps leases and retention.

It hooks into the TenantStore (`store.replicator = self`): `before_open` (and `before_connect`
for `connect_sync`) takes the lease and hydrates a missing (or superseded) file from the sink
(see `hanzocloud.replicate.leasing`, the lease side), `opened` starts following the file,
`touched` marks it dirty after a session, `closed` ships the tail and stops following it.
A loop wakes on `touched` (debounced), and on a timer for every followed file, and runs each
file's blocking `TenantLog.step` on a worker thread. A sink outage leaves the frames in the
WAL (nothing is checkpointed until shipped); lag grows in /metrics and shipping catches up.
A file opened while the sink was down ships nothing until its lease is taken and its copy is
found to continue the sink's `latest` (`Leasing._settle`); one that conflicts is kept aside.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from hanzocloud import metrics
from hanzocloud.keys import MasterKey
from hanzocloud.replicate.crypto import SinkKeys
from hanzocloud.replicate.errors import ChainError, ContinuityLost, SinkError
from hanzocloud.replicate.lease import LeaseHeld, Leases
from hanzocloud.replicate.leasing import Key, Leasing
from hanzocloud.replicate.objects import org_label
from hanzocloud.replicate.options import Followed, ReplicateOptions
from hanzocloud.replicate.restore import latest_generation
from hanzocloud.replicate.retention import apply_retention
from hanzocloud.replicate.sink import Sink
from hanzocloud.replicate.tenant import StepReport, TenantLog

if TYPE_CHECKING:
    from hanzocloud.storage import TenantStore

log = structlog.get_logger("hanzocloud.replicate")


class Replicator(Leasing):
    """Streams every database the store opens to one sink, encrypted, under one lease set."""

    def __init__(self, sink: Sink, master: MasterKey, *, owner: str,
                 options: ReplicateOptions | None = None) -> None:
        keys = SinkKeys.derive(master)
        options = options or ReplicateOptions()
        super().__init__(sink, keys, options, Leases(sink, keys, owner, ttl=options.lease_ttl))
        self.writer = f"{self.leases.id}:{os.getpid()}:{time.time_ns():x}"
        self._dirty: set[Key] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sem = asyncio.Semaphore(self.options.concurrency)
        self._running: dict[Key, asyncio.Task[None]] = {}
        self._again: set[Key] = set()

    def attach(self, store: TenantStore) -> None:
        """Become the store's replicator (its connections then leave checkpoints to us)."""
        self.store = store
        store.replicator = self

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Announce this replica and start the shipping and heartbeat loops."""
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self.leases.heartbeat)
        except SinkError as exc:
            metrics.REPLICATE_FAILURES.labels("heartbeat").inc()
            log.warning("replicate_sink_unavailable", sink=self.sink.url, error=str(exc))
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._beat())]
        log.info("replicate_started", sink=self.sink.url, recipient=self.keys.fingerprint)

    async def stop(self) -> None:
        """Ship what is left (bounded by close_timeout), release leases, stop the loops."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        deadline = time.monotonic() + self.options.close_timeout
        for followed in list(self._followed.values()):
            followed.open = False
            remaining = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.wait_for(self._finish(followed), remaining)
            except TimeoutError:
                log.warning("replicate_final_ship_timeout", org=org_label(followed.org),
                            service=followed.service)
            if self._followed.get((followed.org, followed.service)) is followed:
                await asyncio.to_thread(followed.log.release)
                self._forget(followed)

    # -- TenantStore hooks ----------------------------------------------------------------------

    async def opened(self, org: str, service: str, path: Path) -> None:
        """Start following a database the store just opened."""
        key = (org, service)
        async with self._key_lock(key):
            followed = self._followed.get(key)
            if followed is not None:
                async with followed.lock:
                    followed.open = True
                    if not followed.log.closed:
                        return
            await self._follow(org, service, path, open_=True)

    def touched(self, org: str, service: str) -> None:
        """A session on the database ended: ship soon. Safe to call from any thread."""
        loop = self._loop
        if loop is None or self._stopping:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._mark((org, service))
        else:
            loop.call_soon_threadsafe(self._mark, (org, service))

    async def closed(self, org: str, service: str) -> None:
        """The store closed its handle: ship the tail and stop following (or retry later)."""
        followed = self._followed.get((org, service))
        if followed is not None:
            followed.open = False
            await self._finish(followed)

    # -- following ----------------------------------------------------------------------------

    async def _follow(self, org: str, service: str, path: Path, *, open_: bool) -> None:
        assert self.store is not None
        dek = self.store.load_dek(org, service)
        leased = (org, service) not in self._unleased  # else `_settle` checks `latest`

        def build() -> TenantLog:
            tenant = TenantLog(self.sink, self.keys, org, service, path, dek,
                               writer=self.writer, policy=self.options.policy)
            if tenant.resume() and leased and not self._is_latest(tenant):
                # Writes shipped into a generation `latest` no longer names are restored by
                # nobody. Holding the lease, with no other holder since ours (else the
                # take-over restored the file), the local copy is the newest: start afresh.
                tenant.abandon_generation()
            return tenant

        # Callers hold the key lock, so no other follower can appear meanwhile.
        tenant = await asyncio.to_thread(build)
        self._followed[(org, service)] = Followed(org, service, tenant, open=open_)
        self._mark((org, service))

    def _is_latest(self, tenant: TenantLog) -> bool:
        """Whether the sink's `latest` names the generation `tenant` resumed (blocking)."""
        try:
            latest = latest_generation(self.sink, self.keys, tenant.org, tenant.service)
        except (SinkError, ChainError):
            return False  # unknown: a new generation is safe where resuming may not be
        return latest == tenant.generation

    def _mark(self, key: Key) -> None:
        followed = self._followed.get(key)
        if followed is None:
            if self.store is not None and key not in self._dirty:
                # A file written outside a handle (connect_sync): follow it while it is busy.
                self._dirty.add(key)
                self._wake.set()
            return
        now = time.monotonic()
        followed.last_change = now
        if followed.since is None:
            followed.since = now
        self._dirty.add(key)
        self._wake.set()

    async def _finish(self, followed: Followed) -> None:
        if (followed.org, followed.service) in self._unleased and not await self._claim(followed):
            return  # nothing ships before its lease is settled: still followed, retried later
        async with followed.lock:
            if followed.open or followed.log.closed:
                return
            try:
                shipped = await asyncio.to_thread(followed.log.close)
            except SinkError as exc:
                if not followed.failing:
                    log.warning("replicate_final_ship_failed", org=org_label(followed.org),
                                service=followed.service, error=str(exc))
                followed.failing = True
                metrics.REPLICATE_FAILURES.labels("ship").inc()
                return  # still followed: the loop retries, the WAL stays
            except Exception:
                log.exception("replicate_close_failed", org=org_label(followed.org),
                              service=followed.service)
                await asyncio.to_thread(followed.log.release)
                shipped = False
        if not shipped:
            log.info("replicate_closed_unshipped", org=org_label(followed.org),
                     service=followed.service)
        key = (followed.org, followed.service)
        async with self._key_lock(key):
            if self._followed.get(key) is not followed:
                return  # reopened meanwhile: the new follower keeps the lease
            self._forget(followed)
            await self._release(key)

    # -- loops --------------------------------------------------------------------------------

    async def _run(self) -> None:
        next_tick = time.monotonic()
        # Not `while True`: Python 3.11's wait_for swallows a cancellation that arrives as the
        # wake event fires, and stop() would then wait for this loop for ever.
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_tick - time.monotonic()))
            if self._wake.is_set():
                await asyncio.sleep(self.options.debounce)  # let a burst of commits pile up
                self._wake.clear()
            keys, self._dirty = self._dirty, set()
            if time.monotonic() >= next_tick:
                keys |= set(self._followed)
                next_tick = time.monotonic() + self.options.interval
            for key in keys:
                # One slow database (a checkpoint waiting for writers) must not hold up the
                # others: each runs on its own, and one already running is simply re-marked.
                if key in self._running:
                    self._again.add(key)
                else:
                    self._running[key] = asyncio.create_task(self._sync_then(key))
            self._report_lag()

    async def _sync_then(self, key: Key) -> None:
        try:
            await self._sync(key)
        finally:
            del self._running[key]
            if key in self._again:
                self._again.discard(key)
                self._dirty.add(key)
                self._wake.set()

    async def _sync(self, key: Key) -> None:
        followed = self._followed.get(key)
        if followed is None:
            await self._adopt(key)
            return
        if key in self._unleased:
            return  # nothing ships before its lease is settled (after the next heartbeat)
        async with self._sem:
            if followed.log.closed:
                return
            idle = time.monotonic() - followed.last_change >= self.options.idle_close
            if not followed.open and (followed.failing or idle):
                # A closed handle whose last ship failed, or a connect_sync file gone quiet.
                await self._finish(followed)
                return
            async with followed.lock:
                if followed.log.closed:
                    return
                await self._step(followed)
            if time.monotonic() - followed.last_retention >= self.options.retention_every:
                followed.last_retention = time.monotonic()
                await self._retain(followed)

    async def _step(self, followed: Followed) -> None:
        where = {"org": org_label(followed.org), "service": followed.service}
        started, oldest = time.monotonic(), followed.since
        try:
            tenant = followed.log
            report = StepReport() if tenant.settled() else await asyncio.to_thread(tenant.step)
        except SinkError as exc:
            metrics.REPLICATE_FAILURES.labels("ship").inc()
            if not followed.failing:
                log.warning("replicate_ship_failed", **where, error=str(exc))
            followed.failing = True
            if followed.since is None:
                followed.since = time.monotonic()
            return
        except ContinuityLost as exc:
            log.info("replicate_new_generation", **where, reason=str(exc))
            followed.log.abandon_generation()
            self._dirty.add((followed.org, followed.service))
            self._wake.set()
            return
        except ChainError as exc:
            await self._lose(followed, str(exc))
            return
        except Exception:
            metrics.REPLICATE_FAILURES.labels("ship").inc()
            log.exception("replicate_step_failed", **where)
            return
        if followed.failing:
            log.info("replicate_caught_up", **where)
        followed.failing = False
        if report.wal_bytes:
            metrics.REPLICATE_BYTES.labels("wal").inc(report.wal_bytes)
        if report.snapshot_bytes:
            metrics.REPLICATE_BYTES.labels("snapshot").inc(report.snapshot_bytes)
        if report.wal_bytes and oldest is not None:
            metrics.REPLICATE_SHIP_LAG.observe(time.monotonic() - oldest)
        # What is still pending was committed after this step read the WAL, so after
        # `started`; a session that ended during the step set `since` later than that.
        late = followed.since if followed.since is not None and followed.since > started else None
        followed.since = started if report.pending_frames else late
        lag = 0.0 if followed.since is None else time.monotonic() - followed.since
        metrics.REPLICATE_LAG.labels(org_label(followed.org), followed.service).set(lag)

    async def _retain(self, followed: Followed) -> None:
        try:
            deleted = await asyncio.to_thread(
                apply_retention, self.sink, followed.org, followed.service,
                followed.log.generation, now=time.time(),
                wal_seconds=self.options.wal_retention,
                snapshot_seconds=self.options.snapshot_retention)
        except SinkError as exc:
            metrics.REPLICATE_FAILURES.labels("retention").inc()
            log.warning("replicate_retention_failed", org=org_label(followed.org),
                        service=followed.service, error=str(exc))
            return
        if deleted:
            log.info("replicate_retention", org=org_label(followed.org),
                     service=followed.service, deleted=deleted)

    async def _adopt(self, key: Key) -> None:
        """Follow a file that changed without a store handle (until it goes idle)."""
        assert self.store is not None
        org, service = key
        path = self.store.path_for(org, service)
        async with self._key_lock(key):  # never two followers (and logs) for one file
            if key in self._followed or self._stopping or not path.exists():
                return
            try:
                grant = await asyncio.to_thread(self.leases.acquire, org, service)
            except LeaseHeld as exc:
                metrics.REPLICATE_FAILURES.labels("lease").inc()
                log.warning("replicate_adopt_refused", org=org_label(org), service=service,
                            error=str(exc))
                return
            except (SinkError, ChainError) as exc:  # followed now, leased after the outage
                metrics.REPLICATE_FAILURES.labels("lease").inc()
                log.warning("replicate_lease_deferred", db=f"{org_label(org)}/{service}",
                            error=str(exc))
                grant = None
            # A file created here (empty) or left stale while another replica wrote must not
            # become `latest`: like a deferred lease, it ships only once `_settle` agrees.
            self._unleased.add(key)
            if grant is not None:
                self._taken_from[key] = grant.previous
            await self._follow(org, service, path, open_=False)
            if grant is not None:
                await self._settle(self._followed[key])

    def _report_lag(self) -> None:
        now = time.monotonic()
        for followed in self._followed.values():
            lag = 0.0 if followed.since is None else now - followed.since
            metrics.REPLICATE_LAG.labels(org_label(followed.org), followed.service).set(lag)

    # -- introspection ------------------------------------------------------------------------

    def lag(self, org: str, service: str) -> float | None:
        """Seconds the oldest unshipped change has waited (0 when caught up; None if unknown)."""
        followed = self._followed.get((org, service))
        if followed is None:
            return None
        return 0.0 if followed.since is None else time.monotonic() - followed.since

