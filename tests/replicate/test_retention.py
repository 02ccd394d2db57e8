"""Retention: the WAL window for point-in-time restores, the snapshot window, old generations."""

from __future__ import annotations

from pathlib import Path

import pytest

from hanzocloud.keys import MasterKey
from hanzocloud.replicate import objects
from hanzocloud.replicate.crypto import SinkKeys
from hanzocloud.replicate.restore import (
    generations,
    latest_generation,
    restore,
    snapshots,
    wal_indexes,
)
from hanzocloud.replicate.retention import apply_retention
from hanzocloud.replicate.sink import Sink

HOUR, DAY = 3600.0, 86400.0
NOW = 1_900_000_000.0
PREFIX = "acme/alpha"


def gen_id(created: float) -> str:
    return f"{int(created * 1000):012x}-00000000"


def fabricate(sink: Sink, layout: dict[float, list[tuple[int, float]]], segments: int) -> None:
    """Generations (by start time) with snapshots (index, created) and `segments` WAL objects."""
    for start, snaps in layout.items():
        gen = gen_id(start)
        sink.put(f"{PREFIX}/{gen}/dek.age", b"x")
        for index, created in snaps:
            sink.put(f"{PREFIX}/{gen}/snapshots/{objects.snapshot_name(index, created)}", b"x")
        for index in range(segments):
            sink.put(f"{PREFIX}/{gen}/wal/{objects.wal_name(index)}", b"x")


CASES = [
    # (layout, current start, expected {gen start: (snapshot indexes, first wal, wal count)})
    ("all-recent", {NOW - HOUR: [(0, NOW - HOUR), (5, NOW - 0.5 * HOUR)]}, NOW - HOUR,
     {NOW - HOUR: ([0, 5], 0, 10)}),
    ("wal-window", {NOW - 5 * DAY: [(0, NOW - 5 * DAY), (4, NOW - 4 * DAY), (8, NOW - HOUR)]},
     NOW - 5 * DAY, {NOW - 5 * DAY: ([0, 4, 8], 4, 6)}),
    ("snapshot-window", {NOW - 40 * DAY: [(0, NOW - 40 * DAY), (6, NOW - 35 * DAY)]},
     NOW - 40 * DAY, {NOW - 40 * DAY: ([6], 6, 4)}),
    ("old-generation", {NOW - 40 * DAY: [(0, NOW - 40 * DAY)], NOW - 10 * DAY: [
        (0, NOW - 10 * DAY)], NOW - HOUR: [(0, NOW - HOUR)]}, NOW - HOUR,
     {NOW - 10 * DAY: ([0], 0, 10), NOW - HOUR: ([0], 0, 10)}),
    ("replaced-long-ago", {NOW - 10 * DAY: [(0, NOW - 10 * DAY)], NOW - 5 * DAY: [
        (0, NOW - 5 * DAY)]}, NOW - 5 * DAY,
     {NOW - 10 * DAY: ([0], None, 0), NOW - 5 * DAY: ([0], 0, 10)}),
]


@pytest.mark.parametrize(("layout", "current", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_retention_windows(tmp_path: Path, layout: dict[float, list[tuple[int, float]]],
                           current: float, expected: dict[float, tuple[list[int], int | None,
                                                                       int]]) -> None:
    sink = Sink(f"file://{tmp_path / 'sink'}")
    fabricate(sink, layout, segments=10)
    apply_retention(sink, "acme", "alpha", gen_id(current), now=NOW, wal_seconds=72 * HOUR,
                    snapshot_seconds=30 * DAY)
    kept = {g: ([s[0] for s in snapshots(sink, PREFIX, g)], wal_indexes(sink, PREFIX, g))
            for g in generations(sink, "acme", "alpha")}
    assert set(kept) == {gen_id(start) for start in expected}
    for start, (snaps, first, count) in expected.items():
        indexes, wal = kept[gen_id(start)]
        assert indexes == snaps
        assert len(wal) == count and (wal[:1] == [first] if count else first is None)


async def test_retention_keeps_restores_working(tmp_path: Path, master: MasterKey) -> None:
    from .conftest import add_notes, replicated, rows, settled

    url = f"file://{tmp_path / 'sink'}"
    async with replicated(tmp_path / "data", url, master) as (store, replicator):
        await add_notes(store, "acme", ["one", "two"])
        await settled(replicator, "acme")
    sink = Sink(url)
    current = latest_generation(sink, SinkKeys.derive(master), "acme", "alpha")
    far_future = NOW * 2  # every window has passed; the newest snapshot must survive
    apply_retention(sink, "acme", "alpha", current, now=far_future, wal_seconds=HOUR,
                    snapshot_seconds=HOUR)
    assert snapshots(sink, "acme/alpha", str(current))
    assert restore(sink, SinkKeys.derive(master), "acme", "alpha", tmp_path / "r.db")
    assert rows(tmp_path / "r.db", master, "acme") == ["one", "two"]
