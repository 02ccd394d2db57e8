"""Replication cost and speed: write throughput with the replicator on vs off (same run),
ship lag p50/p99, and the restore time of a large tenant.

Run: .venv/bin/python bench/replicate.py [--writes 2000] [--tenants 4] [--rounds 2]
     [--restore-mb 100]
     [--sink-url file:///tmp/x]   (default: a temporary local folder)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from hanzocloud import metrics
from hanzocloud.keys import MasterKey
from hanzocloud.replicate.replicator import Replicator
from hanzocloud.replicate.restore import restore
from hanzocloud.replicate.sink import Sink
from hanzocloud.storage import TenantStore


async def writes(store: TenantStore, tenants: int, count: int) -> float:
    """`count` single-row transactions spread over `tenants` concurrent writers; writes/s."""
    async def writer(org: str, n: int) -> None:
        for i in range(n):
            async with store.session(org, "bench") as s:
                await s.execute(text("CREATE TABLE IF NOT EXISTS t (k INTEGER, v TEXT)"))
                await s.execute(text("INSERT INTO t VALUES (:k, :v)"), {"k": i, "v": "x" * 200})
                await s.commit()

    await asyncio.gather(*(writer(f"warm{t}", 5) for t in range(tenants)))  # opens, schema
    start = time.perf_counter()
    await asyncio.gather(*(writer(f"warm{t}", count // tenants) for t in range(tenants)))
    return count / (time.perf_counter() - start)


def histogram_quantile(q: float) -> float:
    """Quantile of the ship-lag histogram, interpolated inside its bucket (as Prometheus does)."""
    buckets: list[tuple[float, float]] = []
    for family in metrics.REGISTRY.collect():
        if family.name == "hanzocloud_replicate_ship_lag_seconds":
            buckets = [(float(s.labels["le"]), s.value) for s in family.samples
                       if s.name.endswith("_bucket")]
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


async def run(args: argparse.Namespace) -> None:
    master = MasterKey(secrets.token_bytes(32), "bench:random")
    root = Path(tempfile.mkdtemp(prefix="hanzocloud-bench-replicate-"))
    url = args.sink_url or f"file://{root / 'sink'}"

    # Alternate off/on rounds on fresh stores so warm-up favours neither; keep each best.
    store = TenantStore(root / "on", master)
    replicator = Replicator(Sink(url), master, owner="bench")
    replicator.attach(store)
    await replicator.start()
    stale: list[float] = []

    async def sample() -> None:
        while True:
            await asyncio.sleep(0.01)
            stale.extend(replicator.lag(f"warm{t}", "bench") or 0.0 for t in range(args.tenants))

    off = on = 0.0
    for round_ in range(args.rounds):
        plain = TenantStore(root / f"off{round_}", master)
        off = max(off, await writes(plain, args.tenants, args.writes))
        await plain.close()
        sampler = asyncio.create_task(sample())
        on = max(on, await writes(store, args.tenants, args.writes))
        sampler.cancel()
    await asyncio.sleep(0.5)
    p50, p99 = histogram_quantile(0.5), histogram_quantile(0.99)
    stale.sort()
    print(f"writes ({args.writes} single-row commits, {args.tenants} tenants, best of "
          f"{args.rounds} rounds, sink {url})")
    print(f"  replication off   {off:9.0f} writes/s")
    print(f"  replication on    {on:9.0f} writes/s   ratio {on / off:.2f} (target >= 0.80)")
    print(f"  ship lag          p50 {p50 * 1000:6.0f} ms   p99 {p99 * 1000:6.0f} ms "
          "(histogram, interpolated)")
    if stale:
        print(f"  sink staleness    p99 {stale[int(len(stale) * 0.99)] * 1000:6.0f} ms   "
              f"max {stale[-1] * 1000:6.0f} ms (sampled every 10 ms)")

    # A large tenant: random (incompressible) rows, shipped as WAL, then restored.
    size = args.restore_mb * 1024 * 1024
    chunk = os.urandom(256 * 1024)
    start = time.perf_counter()
    for i in range(size // len(chunk)):
        async with store.session("large", "bench") as s:
            await s.execute(text("CREATE TABLE IF NOT EXISTS blobs (k INTEGER, v BLOB)"))
            await s.execute(text("INSERT INTO blobs VALUES (:k, :v)"), {"k": i, "v": chunk})
            await s.commit()
    wrote = time.perf_counter() - start
    deadline = time.monotonic() + 300
    replicator.touched("large", "bench")
    await asyncio.sleep(0.2)
    while (replicator.lag("large", "bench") or 0.0) > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    shipped = time.perf_counter() - start
    await store.close()
    await replicator.stop()
    start = time.perf_counter()
    result = restore(Sink(url), replicator.keys, "large", "bench", root / "restored" / "b.db")
    took = time.perf_counter() - start
    assert result is not None
    print(f"large tenant ({args.restore_mb} MB of rows written in {wrote:.1f} s, in the sink "
          f"after {shipped:.1f} s)")
    print(f"  restore           {took:6.2f} s for {result.size / 1e6:.0f} MB "
          f"({result.size / 1e6 / took:.0f} MB/s; snapshot {result.snapshot_index} + "
          f"{result.segments} WAL segments)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--restore-mb", type=int, default=100)
    parser.add_argument("--sink-url", default=None)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
