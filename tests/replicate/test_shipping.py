"""WAL shipping, snapshots and restores against each sink backend (local files, S3 on loopback)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import conftest
from hanzocloud.keys import MasterKey
from hanzocloud.replicate import objects
from hanzocloud.replicate.errors import ChainError, TenantUnavailable
from hanzocloud.replicate.restore import generations, restore, wal_indexes
from hanzocloud.replicate.sink import Sink
from hanzocloud.replicate.tenant import TenantLog
from hanzocloud.storage import GLOBAL_ORG, connect_sqlcipher, walfiles

from .conftest import FAST, add_notes, all_objects, read_notes, replicated, rows, settled


async def test_restore_returns_every_shipped_write(tmp_path: Path, sink_url: str,
                                                   master: MasterKey) -> None:
    bodies = [f"note-{i}" for i in range(120)]  # enough commits for several checkpoints
    async with replicated(tmp_path / "data", sink_url, master) as (store, replicator):
        for start in range(0, len(bodies), 30):
            await add_notes(store, "acme", bodies[start:start + 30])
            await settled(replicator, "acme")
        await add_notes(store, "globex", ["other tenant"])
        await settled(replicator, "globex")
        sink = replicator.sink
        result = restore(sink, replicator.keys, "acme", "alpha", tmp_path / "r" / "alpha.db")
    assert result is not None and result.segments >= 3
    # The replicator's final close came last, and emptied the wal-index for the file's rest.
    assert (tmp_path / "data" / "orgs" / "acme" / "alpha.db-shm").stat().st_size == 0
    assert rows(tmp_path / "r" / "alpha.db", master, "acme") == bodies
    assert len(generations(sink, "acme", "alpha")) == 1  # checkpoints kept continuity


async def test_shipping_keeps_sqlites_locks(tmp_path: Path, master: MasterKey) -> None:
    # The replicator reads the wal-index and copies the file through SQLite's handles: had
    # it opened and closed them, this process's locks on them would be gone, and another
    # process opening the file would reset the wal-index under the open handle.
    async with replicated(tmp_path / "data", f"file://{tmp_path / 'sink'}", master) as (
            store, replicator):
        await add_notes(store, "acme", ["a", "b"])
        await settled(replicator, "acme")  # a generation begun (a snapshot), frames shipped
        await add_notes(store, "acme", ["c"])
        await settled(replicator, "acme")
        assert conftest.sqlite_locks_held(store.path_for("acme", "alpha")) == (True, True)
        await replicator.stop()  # the final ship, with the store's handle still open
        assert conftest.sqlite_locks_held(store.path_for("acme", "alpha")) == (True, True)
        assert await read_notes(store, "acme") == ["a", "b", "c"]
    # The store closed last: its close, finding no connection left, emptied the wal-index.
    assert (tmp_path / "data" / "orgs" / "acme" / "alpha.db-shm").stat().st_size == 0


async def test_shipping_without_sqlites_handles(tmp_path: Path, master: MasterKey,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # Where the binding's SQLite cannot be reached, the replicator reads the files by
    # opening them (which drops this process's locks on them), and nothing may then empty a
    # -shm the replicator still has mapped: evictions, reopens and the final close, and the
    # restore still holds every row.
    monkeypatch.setattr(walfiles, "sqlite_library", lambda: None)
    bodies = [f"n{i}" for i in range(40)]
    async with replicated(tmp_path / "data", f"file://{tmp_path / 'sink'}", master) as (
            store, replicator):
        for start in range(0, len(bodies), 10):
            await add_notes(store, "acme", bodies[start:start + 10])
            await settled(replicator, "acme")  # it read the -shm by opening it
            await store.evict("acme", "alpha")  # the handle closes; the replicator's stay
            await settled(replicator, "acme")
        assert await read_notes(store, "acme") == bodies
        sink, keys = replicator.sink, replicator.keys
    assert restore(sink, keys, "acme", "alpha", tmp_path / "r" / "alpha.db") is not None
    assert rows(tmp_path / "r" / "alpha.db", master, "acme") == bodies


async def test_a_released_log_has_nothing_to_step(tmp_path: Path, master: MasterKey) -> None:
    # A lost lease releases the log in a thread while the loop may be asking it whether it
    # has work: the answer is no, not an error from its closed connection.
    async with replicated(tmp_path / "data", f"file://{tmp_path / 'sink'}", master) as (
            store, replicator):
        await add_notes(store, "acme", ["a"])
        await settled(replicator, "acme")
        log = replicator._followed[("acme", "alpha")].log
        file = log._file
        log.release()
        assert log.settled() is True
        log.closed = False  # as if the release were still running in its thread
        assert log.settled() is True and file._conn is None
        log.closed = True


async def test_point_in_time_restore(tmp_path: Path, sink_url: str, master: MasterKey) -> None:
    async with replicated(tmp_path / "data", sink_url, master) as (store, replicator):
        await add_notes(store, "acme", ["a1", "a2", "a3"])
        await settled(replicator, "acme")
        moment = time.time()
        await asyncio.sleep(0.1)
        await add_notes(store, "acme", ["b1", "b2"])
        await settled(replicator, "acme")
        middle = time.time()
        await asyncio.sleep(0.1)
        await add_notes(store, "acme", ["c1"])
        await settled(replicator, "acme")
        sink, keys = replicator.sink, replicator.keys
    cases = {"first": (moment, ["a1", "a2", "a3"]), "second": (middle, ["a1", "a2", "a3",
                                                                        "b1", "b2"]),
             "latest": (None, ["a1", "a2", "a3", "b1", "b2", "c1"])}
    for name, (at, expected) in cases.items():
        target = tmp_path / name / "alpha.db"
        assert restore(sink, keys, "acme", "alpha", target, at=at) is not None
        assert rows(target, master, "acme") == expected, name
    assert restore(sink, keys, "acme", "alpha", tmp_path / "x.db", at=1.0) is None


async def test_no_object_holds_plaintext(tmp_path: Path, sink_url: str,
                                         master: MasterKey) -> None:
    secret = "TOP-SECRET-PLAINTEXT-MARKER"
    async with replicated(tmp_path / "data", sink_url, master) as (store, replicator):
        for _ in range(3):  # the first batch may land in snapshot 0, later ones as WAL
            await add_notes(store, "acme", [secret] * 5)
            await settled(replicator, "acme")
        stored = all_objects(replicator.sink)
    kinds = {key.split("/")[-2] if "/" in key else key for key in stored}
    assert {"wal", "snapshots"} <= kinds and any(k.endswith("dek.age") for k in stored)
    for key, blob in stored.items():
        assert blob.startswith(b"age-encryption.org/v1"), key
        for needle in (b"SQLite format 3", secret.encode(), b"notes", b"CREATE TABLE"):
            assert needle not in blob, (key, needle)


def _segment_keys(sink: Sink, generation: str) -> list[str]:
    base = f"acme/alpha/{generation}/wal"
    return [f"{base}/{objects.wal_name(i)}" for i in wal_indexes(sink, "acme/alpha", generation)]


def _flip(sink: Sink, key: str) -> None:
    blob = sink.get(key)
    assert blob is not None
    sink.put(key, blob[:-30] + bytes([blob[-30] ^ 0x40]) + blob[-29:])


def _drop(sink: Sink, key: str) -> None:
    sink.delete([key])


def _swap(sink: Sink, key: str) -> None:
    blob = sink.get(key)
    assert blob is not None
    sink.put(key.replace(objects.wal_name(1), objects.wal_name(0)), blob)


def _replay(sink: Sink, key: str) -> None:
    # A validly sealed segment from the same chain put back in place of a later one.
    earlier = sink.get(key.replace(objects.wal_name(1), objects.wal_name(0)))
    assert earlier is not None
    sink.put(key.replace(objects.wal_name(1), objects.wal_name(2)), earlier)


TAMPER = [("flipped-byte", _flip, "cannot be decrypted"),
          ("missing-segment", _drop, "0000000000000001 is missing"),
          ("moved-segment", _swap, "expected 0"),
          ("replayed-segment", _replay, "expected 2")]


@pytest.mark.parametrize(("tamper", "message"), [t[1:] for t in TAMPER],
                         ids=[t[0] for t in TAMPER])
async def test_tampered_chain_is_refused(tmp_path: Path, sink_url: str, master: MasterKey,
                                         tamper: object, message: str) -> None:
    async with replicated(tmp_path / "data", sink_url, master) as (store, replicator):
        for i in range(6):
            await add_notes(store, "acme", [f"n{i}"])
            await settled(replicator, "acme")
        sink, keys = replicator.sink, replicator.keys
    generation = generations(sink, "acme", "alpha")[0]
    keys_in_order = _segment_keys(sink, generation)
    assert len(keys_in_order) >= 4
    tamper(sink, keys_in_order[1])  # type: ignore[operator]
    target = tmp_path / "restored" / "alpha.db"
    with pytest.raises(ChainError, match=message):
        restore(sink, keys, "acme", "alpha", target)
    assert not target.exists()  # nothing is put in place from a broken chain


async def test_reopen_continues_the_generation(tmp_path: Path, sink_url: str,
                                               master: MasterKey) -> None:
    data = tmp_path / "data"
    async with replicated(data, sink_url, master) as (store, replicator):
        await add_notes(store, "acme", ["before close"])
        await settled(replicator, "acme")
        await store.evict("acme", "alpha")  # clean close: shipped, marker written
        await add_notes(store, "acme", ["after reopen"])
        await settled(replicator, "acme")
        sink, keys = replicator.sink, replicator.keys
    async with replicated(data, sink_url, master) as (store, replicator):  # process restart
        await add_notes(store, "acme", ["after restart"])
        await settled(replicator, "acme")
    assert len(generations(sink, "acme", "alpha")) == 1
    assert restore(sink, keys, "acme", "alpha", tmp_path / "r.db") is not None
    assert rows(tmp_path / "r.db", master, "acme") == ["before close", "after reopen",
                                                       "after restart"]


async def test_a_reopen_that_reads_before_it_writes_continues_the_generation(
        tmp_path: Path, sink_url: str, master: MasterKey) -> None:
    data = tmp_path / "data"
    async with replicated(data, sink_url, master) as (store, replicator):
        await add_notes(store, "acme", ["before close"])
        await settled(replicator, "acme")
        await store.evict("acme", "alpha")  # clean close: shipped, marker written
        assert await read_notes(store, "acme") == ["before close"]  # reopened, empty WAL
        await asyncio.sleep(FAST.interval * 3)  # idle passes look at the empty WAL
        await add_notes(store, "acme", ["after a read"])  # the first write picks a new salt
        await settled(replicator, "acme")
        sink, keys = replicator.sink, replicator.keys
    assert len(generations(sink, "acme", "alpha")) == 1  # no snapshot of the whole file again
    assert restore(sink, keys, "acme", "alpha", tmp_path / "r.db") is not None
    assert rows(tmp_path / "r.db", master, "acme") == ["before close", "after a read"]


async def test_hydrate_on_open_after_data_loss(tmp_path: Path, sink_url: str,
                                               master: MasterKey) -> None:
    async with replicated(tmp_path / "one", sink_url, master) as (store, replicator):
        await add_notes(store, "acme", ["kept"])
        await add_notes(store, GLOBAL_ORG, ["platform-wide"])
        await settled(replicator, "acme")
        await settled(replicator, GLOBAL_ORG)
    async with replicated(tmp_path / "two", sink_url, master) as (store, replicator):
        assert not store.exists("acme", "alpha")
        assert await read_notes(store, "acme") == ["kept"]
        assert await read_notes(store, GLOBAL_ORG) == ["platform-wide"]
        await add_notes(store, "acme", ["new here"])
        await settled(replicator, "acme")
        assert await read_notes(store, "globex") == []  # never shipped: starts empty
    target = tmp_path / "r" / "alpha.db"
    assert restore(Sink(sink_url), replicator.keys, "acme", "alpha", target) is not None
    assert rows(target, master, "acme") == ["kept", "new here"]


async def test_files_written_outside_handles_are_followed(tmp_path: Path, sink_url: str,
                                                          master: MasterKey) -> None:
    async with replicated(tmp_path / "data", sink_url, master) as (store, replicator):
        conn = store.connect_sync("acme", "alpha")  # the way operator tools write
        conn.execute("CREATE TABLE notes (body TEXT NOT NULL)")
        conn.execute("INSERT INTO notes VALUES ('sync one')")
        conn.commit()
        conn.close()
        deadline = asyncio.get_running_loop().time() + 10
        while replicator.lag("acme", "alpha") is None:  # adopted on the next loop turn
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        conn = store.connect_sync("acme", "alpha")
        conn.execute("INSERT INTO notes VALUES ('sync two')")
        conn.commit()
        conn.close()
        await settled(replicator, "acme")
        while replicator.lag("acme", "alpha") is not None:  # let go once idle
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        sink, keys = replicator.sink, replicator.keys
    assert restore(sink, keys, "acme", "alpha", tmp_path / "r.db") is not None
    assert rows(tmp_path / "r.db", master, "acme") == ["sync one", "sync two"]


async def test_idle_passes_stay_on_the_loop(tmp_path: Path, sink_url: str, master: MasterKey,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[str] = []
    step = TenantLog.step

    def counted(self: TenantLog) -> Any:
        steps.append(self.org)
        return step(self)

    monkeypatch.setattr(TenantLog, "step", counted)
    async with replicated(tmp_path / "data", sink_url, master) as (store, replicator):
        await add_notes(store, "acme", ["one"])
        await settled(replicator, "acme")
        await asyncio.sleep(FAST.policy.checkpoint_seconds + 0.5)  # the checkpoint is done
        steps.clear()
        await asyncio.sleep(FAST.interval * 4)  # several periodic passes over an idle file
        assert steps == []
        # A write nobody reports (another connection) is still found by the periodic pass.
        conn = connect_sqlcipher(store.path_for("acme", "alpha"), store.load_dek("acme", "alpha"))
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("INSERT INTO notes VALUES ('unannounced')")
        conn.commit()
        conn.close()
        deadline = time.monotonic() + 10
        while not steps or replicator.lag("acme", "alpha") != 0.0:
            assert time.monotonic() < deadline, "the periodic pass never shipped the write"
            await asyncio.sleep(0.05)
        sink, keys = replicator.sink, replicator.keys
    assert restore(sink, keys, "acme", "alpha", tmp_path / "r.db") is not None
    assert rows(tmp_path / "r.db", master, "acme") == ["one", "unannounced"]


async def test_a_failed_hydration_tells_the_client_nothing_of_the_sink(
        tmp_path: Path, sink_url: str, master: MasterKey) -> None:
    async with replicated(tmp_path / "one", sink_url, master) as (store, replicator):
        await add_notes(store, "acme", ["kept"])
        await settled(replicator, "acme")
        sink = replicator.sink
    _flip(sink, "acme/alpha/latest.age")
    async with replicated(tmp_path / "two", sink_url, master) as (store, _):
        with pytest.raises(TenantUnavailable) as info:
            await read_notes(store, "acme")
    message = info.value.message
    assert info.value.status == 503 and "could not be restored" in message
    assert "latest.age" not in message and "decrypt" not in message
    assert sink_url not in message and "replicate/" not in message
    assert not store.exists("acme", "alpha")  # nothing started empty in its place
