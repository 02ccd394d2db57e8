"""Concurrent writers: nothing lost, and unique violations are 400s, never 500s."""

from __future__ import annotations

import asyncio
from typing import Any

from cloud import Cloud

from .support import Api

TEXT = {"name": "title", "type": "text"}


async def test_hundred_concurrent_writers_lose_no_rows(api: Api) -> None:
    await api.collection("hits", [{"name": "n", "type": "number", "unique": True}])

    async def write(i: int) -> int:
        r = await api.post("/collections/hits/records", {"n": i})
        return r.status_code

    statuses = await asyncio.gather(*(write(i) for i in range(100)))
    assert statuses == [200] * 100
    page = (await api.get("/collections/hits/records", perPage=500)).json()
    assert page["totalItems"] == 100
    assert sorted(i["n"] for i in page["items"]) == list(range(100))


async def test_concurrent_unique_violations_are_400(api: Api) -> None:
    await api.collection("names", [{"name": "name", "type": "text", "unique": True}])

    async def write(i: int) -> int:
        r = await api.post("/collections/names/records", {"name": f"n{i % 10}"})
        assert "Traceback" not in r.text
        return r.status_code

    statuses = await asyncio.gather(*(write(i) for i in range(60)))
    assert statuses.count(200) == 10 and statuses.count(400) == 50
    assert len(await api.items("names", perPage=100)) == 10


async def test_concurrent_updates_of_one_record_all_apply(api: Api) -> None:
    await api.collection("counters", [{"name": "n", "type": "number"}])
    rec = await api.create("counters", {"n": 0})
    path = f"/collections/counters/records/{rec['id']}"
    statuses = await asyncio.gather(*(api.patch(path, {"n+": 1}) for _ in range(50)))
    assert [s.status_code for s in statuses] == [200] * 50
    assert (await api.get(path)).json()["n"] == 50


async def test_reads_moved_to_worker_threads_answer_the_same(cloud: Cloud, api: Api) -> None:
    # A read that outruns the loop's budget runs again in a worker thread. With a budget of
    # (almost) nothing, every read of some size moves: its answers must not change, also
    # while other reads, writes and a schema change run at the same time.
    from hanzocloud import metrics

    await api.collection("many", [{"name": "n", "type": "number"},
                                  {"name": "label", "type": "text"}])
    for chunk in range(6):
        r = await api.post("/batch", {"requests": [
            {"method": "POST", "url": "/api/collections/many/records",
             "body": {"n": n, "label": f"item {n % 7}"}}
            for n in range(chunk * 50, chunk * 50 + 50)]})
        assert r.status_code == 200, r.text
    queries = [{"perPage": 100, "sort": "-n"}, {"filter": "n >= 150 && label ~ 'item 3'"},
               {"filter": "label = 'item 5'", "sort": "label,-n", "perPage": 7, "page": 3},
               {"perPage": 500, "fields": "id,n"}]

    async def answers() -> list[Any]:
        return [(await api.get("/collections/many/records", **q)).json() for q in queries]

    inline = await answers()
    tenants = cloud.host.deps.tenants
    before, budget = metrics.SLOW_READS._value.get(), tenants.read_budget
    tenants.read_budget = 1e-9
    try:
        await api.collection("other", [{"name": "x", "type": "number"}])
        moved = await asyncio.gather(*(answers() for _ in range(4)),
                                     *(api.create("other", {"x": i}) for i in range(10)),
                                     api.collection("third", [TEXT]))
    finally:
        tenants.read_budget = budget
    assert moved[:4] == [inline] * 4
    assert metrics.SLOW_READS._value.get() > before
    assert len(await api.items("other", perPage=100)) == 10
    assert (await api.get("/collections/third")).status_code == 200
