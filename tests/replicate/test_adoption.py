"""Taking a lease over a local copy: after an outage, and for files opened with connect_sync.

A copy that no longer continues the sink's `latest` must never be shipped as if it did: the
outage-time writes of a replica that another replica overtook are kept aside (loudly), and a
replica without the file never starts it empty over the sink's history.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import pytest
import structlog

from hanzocloud import metrics
from hanzocloud.extensions import TenantKv
from hanzocloud.keys import MasterKey, unwrap_dek
from hanzocloud.replicate.crypto import SinkKeys
from hanzocloud.replicate.errors import TenantUnavailable
from hanzocloud.replicate.restore import restore
from hanzocloud.replicate.sink import Sink
from hanzocloud.storage import TenantStore, connect_sqlcipher

from .conftest import add_notes, read_notes, replicated, rows, settled
from .test_outage import Flaky


def conflicts() -> float:
    return float(metrics.REGISTRY.get_sample_value("hanzocloud_replicate_failures_total",
                                                   {"op": "conflict"}) or 0.0)


def flaky_sink() -> tuple[str, Sink, Flaky]:
    """A fresh memory sink URL, and one Sink on it whose backend can be taken down."""
    url = f"memory://adopt-{secrets.token_hex(6)}"
    sink = Sink(url)
    flaky = Flaky(sink.fs)
    sink.fs = flaky
    return url, sink, flaky


def kept_aside(folder: Path, master: MasterKey, org: str, service: str = "alpha") -> list[str]:
    """The notes of the one `.superseded-*` copy of `service` in `folder`."""
    (aside,) = [p for p in folder.glob(f"{service}.db.superseded-*") if p.suffix != ".dek"
                and not p.name.endswith(("-wal", "-shm"))]
    stamp = aside.name.rsplit(".superseded-", 1)[1]
    dek = unwrap_dek(master, org, service,
                     (folder / f"{service}.db.dek.superseded-{stamp}").read_bytes())
    conn = connect_sqlcipher(aside, dek)
    try:
        return [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY rowid")]
    finally:
        conn.close()


async def eventually_reads(store: TenantStore, org: str, expected: list[str],
                           timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := await read_notes(store, org)) != expected:
        assert time.monotonic() < deadline, f"still serving {seen}, not {expected}"
        await asyncio.sleep(0.2)


async def test_outage_writes_over_another_replicas_history_are_kept_aside(
        tmp_path: Path, master: MasterKey) -> None:
    url, sink_a, flaky = flaky_sink()
    before = conflicts()
    async with replicated(tmp_path / "a", sink_a, master, owner="a") as (store_a, rep_a), \
            replicated(tmp_path / "b", url, master, owner="b") as (store_b, rep_b):
        await add_notes(store_a, "acme", ["a1"])
        await settled(rep_a, "acme")
        await store_a.evict("acme", "alpha")  # ships, records its position, releases
        assert await read_notes(store_b, "acme") == ["a1"]
        await add_notes(store_b, "acme", ["b1"])  # a new generation: `latest` moves to b's
        await settled(rep_b, "acme")
        await store_b.evict("acme", "alpha")

        flaky.down = True  # a's copy (a1) is served with the lease deferred
        assert await read_notes(store_a, "acme") == ["a1"]
        await add_notes(store_a, "acme", ["a2"])  # acknowledged, conflicts with b1
        with structlog.testing.capture_logs() as logs:
            flaky.down = False
            await eventually_reads(store_a, "acme", ["a1", "b1"])  # the sink's history
        assert conflicts() == before + 1
        (event,) = [e for e in logs if e["event"] == "replicate_conflict_kept_aside"]
        assert event["log_level"] == "error" and "superseded-" in event["kept"]
        await add_notes(store_a, "acme", ["a3"])  # and a goes on from there
        await settled(rep_a, "acme")
    assert kept_aside(tmp_path / "a" / "orgs" / "acme", master, "acme") == ["a1", "a2"]
    target = tmp_path / "restored" / "alpha.db"
    assert restore(Sink(url), rep_a.keys, "acme", "alpha", target) is not None
    assert rows(target, master, "acme") == ["a1", "b1", "a3"]


async def test_outage_writes_ship_when_nobody_else_wrote(tmp_path: Path,
                                                         master: MasterKey) -> None:
    url, sink_a, flaky = flaky_sink()
    before = conflicts()
    async with replicated(tmp_path / "a", sink_a, master, owner="a") as (store_a, rep_a), \
            replicated(tmp_path / "b", url, master, owner="b") as (store_b, _):
        await add_notes(store_a, "acme", ["a1"])
        await settled(rep_a, "acme")
        await store_a.evict("acme", "alpha")
        flaky.down = True
        assert await read_notes(store_a, "acme") == ["a1"]
        await add_notes(store_a, "acme", ["a2"])
        flaky.down = False
        await settled(rep_a, "acme")  # the deferred lease is taken and the backlog ships
        with pytest.raises(TenantUnavailable):  # a holds the lease again
            await read_notes(store_b, "acme")
    assert conflicts() == before
    assert not list((tmp_path / "a" / "orgs" / "acme").glob("*.superseded-*"))
    target = tmp_path / "restored" / "alpha.db"
    assert restore(Sink(url), rep_a.keys, "acme", "alpha", target) is not None
    assert rows(target, master, "acme") == ["a1", "a2"]


def restored_kv(url: str, master: MasterKey, target: Path) -> bytes | None:
    """The value of kv "k" in the sink's latest acme/ext."""
    assert restore(Sink(url), SinkKeys.derive(master), "acme", "ext", target) is not None
    dek = unwrap_dek(master, "acme", "ext", target.with_name(target.name + ".dek").read_bytes())
    conn = connect_sqlcipher(target, dek)
    try:
        row = conn.execute("SELECT v FROM kv WHERE k = 'k'").fetchone()
    finally:
        conn.close()
    return None if row is None else bytes(row[0])


async def ship_kv(data_dir: Path, url: str, master: MasterKey) -> None:
    """Replica "one" stores kv k=precious for acme, ships it, and shuts down (releasing)."""
    async with replicated(data_dir, url, master, owner="one") as (store, rep):
        await asyncio.to_thread(TenantKv(store).set, "acme", "k", b"precious")
        await settled(rep, "acme", "ext")


@pytest.mark.parametrize("thread", ["worker", "loop"])
async def test_kv_on_a_fresh_replica_reads_what_was_shipped(tmp_path: Path, master: MasterKey,
                                                           thread: str) -> None:
    url = f"file://{tmp_path / 'sink'}"
    await ship_kv(tmp_path / "one", url, master)
    async with replicated(tmp_path / "two", url, master, owner="two") as (store, rep):
        kv = TenantKv(store)
        if thread == "worker":  # where guest calls run
            value = await asyncio.to_thread(kv.get, "acme", "k")
        else:  # the loop's own thread cannot wait for itself: hydrated beside it
            value = kv.get("acme", "k")
        assert value == b"precious"  # hydrated before the connection opened
        await asyncio.to_thread(kv.set, "acme", "other", b"x")
        await settled(rep, "acme", "ext")
    assert restored_kv(url, master, tmp_path / "restored.db") == b"precious"


async def test_kv_without_the_file_and_without_the_sink_is_unavailable(
        tmp_path: Path, master: MasterKey) -> None:
    url, sink, flaky = flaky_sink()
    await ship_kv(tmp_path / "one", url, master)
    async with replicated(tmp_path / "two", sink, master, owner="two") as (store, _):
        flaky.down = True
        with pytest.raises(TenantUnavailable) as info:
            await asyncio.to_thread(TenantKv(store).get, "acme", "k")
        assert info.value.status == 503
        assert not store.exists("acme", "ext")  # nothing created to ship over the sink
        flaky.down = False
        assert await asyncio.to_thread(TenantKv(store).get, "acme", "k") == b"precious"
    assert restored_kv(url, master, tmp_path / "restored.db") == b"precious"


async def test_a_file_created_behind_the_replicator_never_becomes_latest(
        tmp_path: Path, master: MasterKey) -> None:
    url = f"file://{tmp_path / 'sink'}"
    await ship_kv(tmp_path / "one", url, master)
    before = conflicts()
    async with replicated(tmp_path / "two", url, master, owner="two") as (store, rep):
        # Another process creates the file without hydrating it, and writes to it.
        conn = connect_sqlcipher(store.path_for("acme", "ext"), store.load_dek("acme", "ext"))
        conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
        conn.execute("INSERT INTO kv VALUES ('k', x'00')")
        conn.commit()
        conn.close()
        rep.touched("acme", "ext")  # adopted: the lease was one's, `latest` is one's
        deadline = time.monotonic() + 10
        while conflicts() == before:
            assert time.monotonic() < deadline, "the stray file was never kept aside"
            await asyncio.sleep(0.05)
        assert list((tmp_path / "two" / "orgs" / "acme").glob("ext.db.superseded-*"))
        assert await asyncio.to_thread(TenantKv(store).get, "acme", "k") == b"precious"
    assert restored_kv(url, master, tmp_path / "restored.db") == b"precious"
