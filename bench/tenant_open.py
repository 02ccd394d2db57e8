"""Tenant cold open (sidecar unwrap + key + first read) p50/p99, and flat handles/RSS at scale.

Run: .venv/bin/python bench/tenant_open.py [--tenants 1000] [--scale 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from hanzocloud.keys import MasterKey
from hanzocloud.storage import TenantStore, connect_sqlcipher


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def create(store: TenantStore, count: int, start: int = 0) -> None:
    for i in range(start, count):
        async with store.session(f"t{i}", "bench") as s:
            await s.execute(text("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT)"))
            await s.execute(text("INSERT OR REPLACE INTO kv VALUES ('k', 'v')"))
            await s.commit()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--scale", type=int, default=10000)
    parser.add_argument("--cache", type=int, default=256)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="tenants-"))
    try:
        await measure(args, data)
    finally:
        shutil.rmtree(data)


async def measure(args: argparse.Namespace, data: Path) -> None:
    master = MasterKey(os.urandom(32), "bench")
    setup = TenantStore(data, master, max_open=args.cache)
    await create(setup, 3 * args.tenants + 1)  # the last one warms each path up
    await setup.close()
    # A tenant is cold-opened long after its files were last written: sync first, so each
    # open finds its files written back, as it would then (and not this setup's flush).
    os.sync()

    # Three ways to open a tenant cold and read it, taken in turn (so a machine whose speed
    # drifts during the run weighs on all three alike), each on tenants of its own (so none
    # finds a file another has open):
    #   baseline  plain sqlcipher3, no pooling layer: unwrap the key, connect, read (the
    #             close, like the store's evictions, is not timed);
    #   run_sync  the path base's reads take: one read-only transaction on the loop thread;
    #   session   an AsyncSession, the path iam and kms use (statements on the loop thread
    #             through hanzocloud.inline_sqlite).
    inline = TenantStore(data, master, max_open=args.cache)
    store = TenantStore(data, master, max_open=args.cache)
    # A process's first open also builds what every later one shares (the probed dialect,
    # the compiled statements): not a tenant's cold open, so it is done before timing.
    warm_up = f"t{3 * args.tenants}"
    await inline.run_sync(warm_up, "bench", lambda c: c.exec_driver_sql("SELECT 1").one(),
                          read_only=True)
    async with store.session(warm_up, "bench") as s:
        await s.execute(text("SELECT 1"))
    raw: list[float] = []
    cold_sync: list[float] = []
    cold: list[float] = []
    query = "SELECT v FROM kv WHERE k = 'k'"
    for i in range(args.tenants):
        org = f"t{3 * i}"
        t0 = time.perf_counter()
        dek = setup.load_dek(org, "bench")
        conn = connect_sqlcipher(setup.path_for(org, "bench"), dek)
        conn.execute(query).fetchone()
        raw.append(time.perf_counter() - t0)  # not the close: the store's closes come later
        conn.close()

        org = f"t{3 * i + 1}"
        t0 = time.perf_counter()
        await inline.run_sync(org, "bench", lambda c: c.exec_driver_sql(query).one(),
                              read_only=True)
        cold_sync.append(time.perf_counter() - t0)
        await asyncio.sleep(0)  # let an eviction close its handle, as a serving loop would

        org = f"t{3 * i + 2}"
        t0 = time.perf_counter()
        async with store.session(org, "bench") as s:
            (await s.execute(text(query))).one()
        cold.append(time.perf_counter() - t0)
        await asyncio.sleep(0)
    await inline.close()
    warm: list[float] = []
    for i in range(args.tenants - args.cache, args.tenants):  # still open in `store`
        t0 = time.perf_counter()
        async with store.session(f"t{3 * i + 2}", "bench") as s:
            (await s.execute(text("SELECT v FROM kv WHERE k = 'k'"))).one()
        warm.append(time.perf_counter() - t0)
    print(f"{args.tenants} tenants, LRU bound {args.cache}")
    print(f"  baseline sync sqlcipher open+read  p50 {pct(raw, .5) * 1e3:6.3f} ms  "
          f"p99 {pct(raw, .99) * 1e3:6.3f} ms")
    for label, values in (("run_sync", cold_sync), ("session ", cold)):
        print(f"  cold open+first read, {label}   p50 {pct(values, .5) * 1e3:6.3f} ms  "
              f"p99 {pct(values, .99) * 1e3:6.3f} ms  (target p99 < 2 ms; "
              f"{pct(values, .5) / pct(raw, .5):.1f}x baseline p50)")
    print(f"  TenantStore warm (cached) read    p50 {pct(warm, .5) * 1e3:6.3f} ms  "
          f"p99 {pct(warm, .99) * 1e3:6.3f} ms")
    await create(store, args.scale, start=3 * args.tenants)
    checkpoints = sorted({m for m in (args.scale // 4, args.scale // 2, args.scale)
                          if m > 3 * args.tenants} | {3 * args.tenants})
    done = 3 * args.tenants
    for mark in checkpoints:
        for i in range(done, mark):
            async with store.session(f"t{i}", "bench") as s:
                await s.execute(text("SELECT 1"))
        done = mark
        print(f"  after touching {mark:>6} tenants: open handles {store.open_count:4d} "
              f"(peak {store.peak_open}), RSS {rss_mib():7.1f} MiB")
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
