"""Concurrent writers: nothing lost, and unique violations are 400s, never 500s."""

from __future__ import annotations

import asyncio

from .support import Api


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
