"""Concurrent writers: nothing lost, and unique violations are 400s, never 500s."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
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


async def test_a_cascade_over_the_write_budget_moves_to_a_thread_and_applies_once(
        cloud: Cloud, api: Api) -> None:
    # A record write that outruns the loop's budget is rolled back and runs again in a
    # worker thread: it must apply exactly once, announce its events, and keep write order.
    from hanzocloud import metrics

    from .support import SseStream

    parents = await api.collection("parents", [TEXT])
    await api.collection("kids", [
        {"name": "parent", "type": "relation", "collectionId": parents["id"],
         "maxSelect": 1, "cascadeDelete": True}, {"name": "n", "type": "number"}])
    parent = await api.create("parents", {"title": "p"})
    kids = []
    for chunk in range(24):
        r = await api.post("/batch", {"requests": [
            {"method": "POST", "url": "/api/collections/kids/records",
             "body": {"parent": parent["id"], "n": n}}
            for n in range(chunk * 50, chunk * 50 + 50)]})
        assert r.status_code == 200, r.text
        kids += [x["body"]["id"] for x in r.json()]
    tenants = cloud.host.deps.tenants
    before, budget = metrics.SLOW_WRITES._value.get(), tenants.write_budget
    async with SseStream(cloud.host.public, "/v1/base/api/realtime", {}) as stream:
        client_id = (await stream.event())[0]
        r = await api.post("/realtime", {"clientId": client_id,
                                         "subscriptions": [f"kids/{kids[7]}", "parents/*"]})
        assert r.status_code == 204, r.text
        tenants.write_budget = 1e-9
        try:
            deleted, made = await asyncio.gather(
                api.delete(f"/collections/parents/records/{parent['id']}"),
                api.create("parents", {"title": "after"}))
        finally:
            tenants.write_budget = budget
        got = [await stream.event() for _ in range(3)]
    assert deleted.status_code == 204, deleted.text
    assert metrics.SLOW_WRITES._value.get() > before
    assert await api.items("kids", perPage=10) == []
    assert [p["id"] for p in await api.items("parents")] == [made["id"]]
    # In commit order: the cascade's events together (the kid's, then its parent's), and the
    # create, which waited on the org's lock, before or after them, never in between.
    events = [(g[2]["action"], g[2]["record"]["id"]) for g in got]
    cascade = [("delete", kids[7]), ("delete", parent["id"])]
    assert events in ([*cascade, ("create", made["id"])], [("create", made["id"]), *cascade])


async def test_a_full_thread_backlog_answers_503_with_retry_after(
        cloud: Cloud, api: Api, monkeypatch: Any) -> None:
    from hanzocloud.storage import sqlite, store

    await api.collection("wide", [{"name": "n", "type": "number"}])
    r = await api.post("/batch", {"requests": [
        {"method": "POST", "url": "/api/collections/wide/records", "body": {"n": n}}
        for n in range(50)]})
    assert r.status_code == 200, r.text
    tenants = cloud.host.deps.tenants
    monkeypatch.setattr(store, "THREAD_BACKLOG", 0)  # no room: every move is refused
    monkeypatch.setattr(tenants, "read_budget", 1e-9)
    monkeypatch.setattr(sqlite, "PROGRESS_STEPS", 1)  # even a short read checks the clock
    r = await api.get("/collections/wide/records", perPage=50, sort="-n")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    body = r.json()
    assert body["status"] == 503 and body["error"]["code"] == "overloaded"
    assert "retry" in body["message"] and "Traceback" not in r.text
    monkeypatch.undo()
    assert len(await api.items("wide", perPage=50)) == 50  # nothing was lost meanwhile


async def test_a_moved_write_whose_caller_is_cancelled_still_announces_its_events(
        cloud: Cloud, api: Api) -> None:
    import threading

    from hanzocloud.identity import Identity
    from subsystems.base import records
    from subsystems.base.store import BaseStore

    await api.collection("logs", [TEXT])
    tenants = cloud.host.deps.tenants
    store = BaseStore(tenants)
    announced: list[tuple[str, list[Any]]] = []
    store.on_commit.append(lambda org, events: announced.append((org, events)))
    entered, release = threading.Event(), threading.Event()
    heavy = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
             "WHERE x < 300000) SELECT count(*) FROM c")

    def write(tx: Any) -> dict[str, Any]:
        made = records.create_record(tx, "logs", {"title": "kept"})
        if threading.current_thread() is not threading.main_thread():
            entered.set()
            release.wait(30)
        tx.conn.exec_driver_sql(heavy).scalar_one()  # outruns the budget on the loop
        return made

    budget, tenants.write_budget = tenants.write_budget, 0.001
    try:
        task = asyncio.create_task(store.write("acme", Identity(org="acme", is_admin=True),
                                               write))
        await asyncio.to_thread(entered.wait, 30)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        tenants.write_budget = budget
    kept = await api.items("logs")
    assert [r["title"] for r in kept] == ["kept"]  # it committed
    assert [(org, [(e.action, e.record["id"]) for e in events])
            for org, events in announced] == [("acme", [("create", kept[0]["id"])])]


async def test_a_write_locked_out_for_too_long_is_503_with_retry_after(cloud: Cloud,
                                                                        api: Api) -> None:
    from .support import assert_error

    await api.collection("notes", [{"name": "title", "type": "text"}])
    tenants = cloud.host.deps.tenants
    tenants.busy_seconds = 0.2
    blocker = tenants.connect_sync("acme", "base")  # another process's writer, say
    blocker.execute("BEGIN IMMEDIATE")
    try:
        r = await api.post("/collections/notes/records", {"title": "waited"})
    finally:
        blocker.rollback()
        blocker.close()
    body = assert_error(r, 503)  # PocketBase's shape, and retry soon
    assert r.headers["retry-after"] == "1" and "busy" in body["message"]
    assert await api.items("notes") == []
    await api.create("notes", {"title": "later"})
