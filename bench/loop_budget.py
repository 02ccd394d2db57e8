"""What one tenant's heavy transactions cost every other tenant, with and without the loop's
read and write budgets.

    .venv/bin/python bench/loop_budget.py [--seconds 4] [--budget-ms 20]

One TenantStore, two tenants. A light task reads one row of tenant `b` after another, on the
event loop, as request handlers do (`run_sync(read_only=True)`), and records each read's
latency from its arrival, waits for the loop included. In the same run:
  quiet          the light reads alone (the baseline);
  reads inline   while a heavy task reads tenant `a` without pause (a scan of about 2 million
                 rows, some hundreds of milliseconds), with the budget off: the scan holds
                 the loop;
  reads budget   the same, with the read budget on: the scan moves to a worker thread;
  writes inline  while a heavy task writes tenant `a` without pause (a movable transaction
                 that inserts 300,000 rows and deletes them again), with the budget off;
  writes budget  the same, with the write budget on: the write is rolled back and moves.
Printed: light-read p50 and p99, each as a ratio to the quiet run, and how many heavy
transactions finished.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from hanzocloud import logging as cloud_logging
from hanzocloud.keys import MasterKey
from hanzocloud.storage import TenantStore

HEAVY = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
         "SELECT count(*) FROM c")
BULK = ("INSERT INTO big SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
        "SELECT x + 1 FROM c WHERE x < 300000) SELECT x FROM c)")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def heavy_read(conn: Any) -> Any:
    return conn.exec_driver_sql(HEAVY).one()


def heavy_write(conn: Any) -> None:
    conn.exec_driver_sql(BULK)
    conn.exec_driver_sql("DELETE FROM big")


async def phase(store: TenantStore, seconds: float, *,
                heavy: str | None) -> tuple[list[float], int]:
    until = time.perf_counter() + seconds
    latencies: list[float] = []
    finished = 0

    async def light() -> None:
        while time.perf_counter() < until:
            # A request arrives 1 ms after the last one ended; its latency counts from then,
            # so a loop held by someone else's read shows in it.
            arrival = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            await store.run_sync("b", "bench", lambda c: c.exec_driver_sql(
                "SELECT v FROM kv WHERE k = 'k'").one(), read_only=True)
            latencies.append(time.perf_counter() - arrival)

    async def scan() -> None:
        nonlocal finished
        while time.perf_counter() < until:
            if heavy == "read":
                await store.run_sync("a", "bench", heavy_read, read_only=True)
            else:
                await store.run_sync("a", "bench", heavy_write, movable=True)
            finished += 1
            await asyncio.sleep(0)  # the next heavy request, as another request would

    await asyncio.gather(light(), *([scan()] if heavy else []))
    return latencies, finished


async def main(args: argparse.Namespace) -> None:
    cloud_logging.configure("warning")
    data = Path(tempfile.mkdtemp(prefix="read-budget-"))
    try:
        store = TenantStore(data, MasterKey(os.urandom(32), "bench"))

        def setup(conn: Any) -> None:
            conn.exec_driver_sql("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
            conn.exec_driver_sql("INSERT INTO kv VALUES ('k', 'v')")
            conn.exec_driver_sql("CREATE TABLE big (x INTEGER)")

        for org in ("a", "b"):
            await store.run_sync(org, "bench", setup)
        budget = args.budget_ms / 1000
        runs: list[tuple[str, float, str | None]] = [
            ("quiet", budget, None), ("reads inline", 0.0, "read"),
            ("reads budget", budget, "read"), ("writes inline", 0.0, "write"),
            ("writes budget", budget, "write")]
        results: dict[str, tuple[list[float], int]] = {}
        for name, seconds, heavy in runs:
            store.read_budget = store.write_budget = seconds
            results[name] = await phase(store, args.seconds, heavy=heavy)
        await store.close()
    finally:
        shutil.rmtree(data)
    quiet = results["quiet"][0]
    base50, base99 = pct(quiet, 0.5), pct(quiet, 0.99)
    print(f"light reads of tenant b; heavy transactions of tenant a; "
          f"budget {args.budget_ms:g} ms")
    for name, (latencies, finished) in results.items():
        p50, p99 = pct(latencies, 0.5), pct(latencies, 0.99)
        print(f"  {name:<13} p50 {p50 * 1e3:8.3f} ms ({p50 / base50:7.1f}x quiet)   "
              f"p99 {p99 * 1e3:8.3f} ms ({p99 / base99:7.1f}x quiet)   "
              f"{len(latencies)} light reads, {finished} heavy")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--budget-ms", type=float, default=20.0)
    asyncio.run(main(parser.parse_args()))
