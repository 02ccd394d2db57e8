"""Single writer per database: the replica without the lease answers 503 until it moves."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from conftest import client_for, make_settings
from hanzocloud.host import build_host
from hanzocloud.keys import MasterKey
from hanzocloud.replicate.crypto import SinkKeys
from hanzocloud.replicate.errors import TenantUnavailable
from hanzocloud.replicate.lease import Leases
from hanzocloud.replicate.sink import Sink
from testsubsystems import TEST_REGISTRY

from .conftest import add_notes, read_notes, replicated, settled


async def test_lease_moves_between_replicas(tmp_path: Path, sink_url: str,
                                            master: MasterKey) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    async with replicated(a_dir, sink_url, master, owner="a") as (store_a, rep_a), \
            replicated(b_dir, sink_url, master, owner="b") as (store_b, rep_b):
        await add_notes(store_a, "acme", ["from a"])
        await settled(rep_a, "acme")
        with pytest.raises(TenantUnavailable) as held:
            await read_notes(store_b, "acme")
        assert held.value.status == 503 and "another replica" in held.value.message
        await add_notes(store_b, "globex", ["b serves other tenants"])  # unaffected

        await store_a.evict("acme", "alpha")  # a ships its tail and releases the lease
        assert await read_notes(store_b, "acme") == ["from a"]  # hydrated on b
        await add_notes(store_b, "acme", ["from b"])
        await settled(rep_b, "acme")
        with pytest.raises(TenantUnavailable):
            await read_notes(store_a, "acme")

        await store_b.evict("acme", "alpha")
        # a's local copy is now stale: it is set aside and replaced by the sink's state.
        assert await read_notes(store_a, "acme") == ["from a", "from b"]
    assert list((a_dir / "orgs" / "acme").glob("alpha.db.superseded-*"))


async def test_dead_holder_lease_expires(tmp_path: Path, master: MasterKey) -> None:
    url = f"file://{tmp_path / 'sink'}"
    ghost = Leases(Sink(url), SinkKeys.derive(master), "ghost-replica", ttl=1.0)
    ghost.heartbeat()
    ghost.acquire("acme", "alpha")  # then the ghost dies without releasing
    async with replicated(tmp_path / "data", url, master) as (store, replicator):
        with pytest.raises(TenantUnavailable):
            await read_notes(store, "acme")
        deadline = time.monotonic() + 5
        while True:
            try:
                assert await read_notes(store, "acme") == []
                break
            except TenantUnavailable:
                assert time.monotonic() < deadline, "an expired lease was never taken over"
                await asyncio.sleep(0.2)


async def test_leased_tenant_answers_503_over_http(tmp_path: Path, master: MasterKey) -> None:
    url = f"file://{tmp_path / 'sink'}"
    ghost = Leases(Sink(url), SinkKeys.derive(master), "other-replica", ttl=60.0)
    ghost.heartbeat()
    ghost.acquire("acme", "alpha")
    settings = make_settings(tmp_path / "data", enable="testgate,alpha", replicate_url=url)
    host = build_host(settings, registry=TEST_REGISTRY, master=master)
    async with host.lifespan(), client_for(host.public) as client:
        cases = [("acme/alice/editor", 503), ("globex/bob/editor", 200)]
        for identity, status in cases:
            response = await client.get("/v1/alpha/notes", headers={"X-Test-Identity": identity})
            assert response.status_code == status, (identity, response.text)
        body = (await client.get("/v1/alpha/notes",
                                 headers={"X-Test-Identity": "acme/alice/editor"})).json()
        assert body["error"]["code"] == "tenant_unavailable"
        assert "ghost" not in body["error"]["message"] and "other-replica" not in str(body)
