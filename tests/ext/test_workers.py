"""WorkerPool: results and errors reach the right loop; cancelled work is skipped."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from hanzocloud.ext.workers import WorkerPool


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    made = WorkerPool(3, name="test-workers")
    yield made
    made.shutdown()


async def test_results_errors_and_threads(pool: WorkerPool) -> None:
    def boom() -> None:
        raise ValueError("guest said no")

    results = await asyncio.gather(*[pool.submit(pow, n, 2) for n in range(200)])
    assert results == [n * n for n in range(200)]
    with pytest.raises(ValueError, match="guest said no"):
        await pool.submit(boom)
    name = await pool.submit(lambda: threading.current_thread().name)
    assert name.startswith("test-workers-") and name != threading.current_thread().name


async def test_cancelled_jobs_are_not_run(pool: WorkerPool) -> None:
    gate = threading.Event()
    ran: list[int] = []
    blockers = [pool.submit(gate.wait, 5) for _ in range(3)]  # occupy every worker
    queued = pool.submit(ran.append, 1)
    queued.cancel()
    gate.set()
    await asyncio.gather(*blockers)
    await pool.submit(time.sleep, 0)  # everything queued before this has been handled
    assert ran == []


def test_two_event_loops_share_one_pool(pool: WorkerPool) -> None:
    def on_own_loop(base: int) -> list[int]:
        async def main() -> list[int]:
            return list(await asyncio.gather(*[pool.submit(abs, -(base + n))
                                               for n in range(50)]))
        return asyncio.run(main())

    out: dict[int, list[int]] = {}
    threads = [threading.Thread(target=lambda b=b: out.__setitem__(b, on_own_loop(b)))
               for b in (0, 1000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert out == {0: list(range(50)), 1000: list(range(1000, 1050))}


async def test_shutdown_refuses_new_work() -> None:
    pool = WorkerPool(1, name="short-lived")
    assert await pool.submit(len, "abc") == 3
    pool.shutdown()
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(len, "abc")
