"""Concurrent writers over real HTTP (uvicorn on a local port): no lost or duplicated version.

Each test runs twice: as shipped, and with the in-process per-org write lock replaced by a
no-op, to show that version numbering and check-and-set are atomic in SQLite itself (what
keeps two processes sharing a data dir correct).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from cloud import Cloud

from subsystems.kms.store import KmsDb

from .support import Kms, served

WRITERS = 50


@pytest.fixture(params=["process-lock", "sqlite-only"], autouse=True)
def locking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "sqlite-only":
        monkeypatch.setattr(KmsDb, "_lock", lambda self, org: asyncio.Lock())
    return str(request.param)


async def _put_all(cloud: Cloud, url: str, path: str, bodies: list[dict[str, object]]
                   ) -> list[httpx.Response]:
    headers = await cloud.headers(org="acme", roles=["admin"])
    limits = httpx.Limits(max_connections=WRITERS)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=60) as client:
        start = asyncio.Event()

        async def one(body: dict[str, object]) -> httpx.Response:
            await start.wait()  # release every writer at once
            return await client.put(f"/v1/kms/secrets/{path}", json=body)

        tasks = [asyncio.create_task(one(b)) for b in bodies]
        await asyncio.sleep(0)
        start.set()
        return list(await asyncio.gather(*tasks))


async def test_fifty_writers_leave_gap_free_history(cloud: Cloud, kms: Kms) -> None:
    async with served(cloud.host.public) as url:
        bodies = [{"value": f"writer-{i}"} for i in range(WRITERS)]
        responses = await _put_all(cloud, url, "shared/config", bodies)
    assert [r.status_code for r in responses] == [200] * WRITERS
    versions = {r.json()["version"]: bodies[i]["value"] for i, r in enumerate(responses)}
    assert sorted(versions) == list(range(1, WRITERS + 1))  # unique and gap-free

    meta = await kms.ok("GET", "/metadata/shared/config")
    assert meta["current_version"] == WRITERS
    assert [v["version"] for v in meta["versions"]] == list(range(1, WRITERS + 1))
    for version, value in versions.items():  # each version holds its own writer's value
        got = await kms.ok("GET", "/secrets/shared/config", params={"version": str(version)})
        assert got["value"] == value


async def test_racing_check_and_set_has_one_winner_per_version(cloud: Cloud, kms: Kms) -> None:
    async with served(cloud.host.public) as url:
        first = await _put_all(cloud, url, "shared/cas",
                               [{"value": f"a-{i}", "cas": 0} for i in range(WRITERS)])
        second = await _put_all(cloud, url, "shared/cas",
                                [{"value": f"b-{i}", "cas": 1} for i in range(WRITERS)])
    for round_ in (first, second):
        statuses = sorted(r.status_code for r in round_)
        assert statuses == [200] + [409] * (WRITERS - 1)
        for r in round_:
            if r.status_code == 409:
                assert r.json()["error"]["code"] == "conflict"
    winner_a = next(r for r in first if r.status_code == 200)
    winner_b = next(r for r in second if r.status_code == 200)
    assert (winner_a.json()["version"], winner_b.json()["version"]) == (1, 2)
    meta = await kms.ok("GET", "/metadata/shared/cas")
    assert [v["version"] for v in meta["versions"]] == [1, 2]
    v1 = await kms.ok("GET", "/secrets/shared/cas", params={"version": "1"})
    v2 = await kms.ok("GET", "/secrets/shared/cas", params={"version": "2"})
    assert v1["value"].startswith("a-") and v2["value"].startswith("b-")
