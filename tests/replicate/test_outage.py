"""Sink outages: writes go on locally, lag grows and is reported, shipping catches up."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hanzocloud import metrics
from hanzocloud.keys import MasterKey
from hanzocloud.replicate.errors import TenantUnavailable
from hanzocloud.replicate.restore import restore
from hanzocloud.replicate.sink import Sink

from .conftest import add_notes, read_notes, replicated, rows, settled


class Flaky:
    """An fsspec filesystem whose every call fails while `down` (a failing backend)."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.fs, name)
        if callable(attr) and self.down:
            def fail(*_: Any, **__: Any) -> Any:
                raise ConnectionError("simulated sink outage")
            return fail
        return attr


def memory_sink(tmp: Path) -> tuple[Sink, Callable[[bool], None]]:
    sink = Sink(f"memory://outage-{secrets.token_hex(6)}")
    flaky = Flaky(sink.fs)
    sink.fs = flaky

    def set_down(down: bool) -> None:
        flaky.down = down
    return sink, set_down


def blocked_dir_sink(tmp: Path) -> tuple[Sink, Callable[[bool], None]]:
    # Root ignores permissions, so the outage is a sink path whose parent is a file.
    mount = tmp / "mount"
    mount.mkdir()
    sink = Sink(f"file://{mount / 'sink'}")

    def set_down(down: bool) -> None:
        if down:
            mount.rename(tmp / "mount.away")
            mount.write_text("not a directory")
        else:
            mount.unlink()
            (tmp / "mount.away").rename(mount)
    return sink, set_down


def lag_metric(org: str) -> float:
    value = metrics.REGISTRY.get_sample_value("hanzocloud_replicate_lag_seconds",
                                              {"org": org, "service": "alpha"})
    return float(value or 0.0)


def failures() -> float:
    return float(metrics.REGISTRY.get_sample_value("hanzocloud_replicate_failures_total",
                                                   {"op": "ship"}) or 0.0)


@pytest.mark.parametrize("make", [blocked_dir_sink, memory_sink],
                         ids=["unwritable-directory", "failing-backend"])
async def test_outage_lag_and_catch_up(tmp_path: Path, master: MasterKey,
                                       make: Callable[[Path], tuple[Sink, Any]]) -> None:
    sink, set_down = make(tmp_path)
    async with replicated(tmp_path / "data", sink, master) as (store, replicator):
        await add_notes(store, "acme", ["before"])
        await settled(replicator, "acme")
        failed_before = failures()
        set_down(True)
        during = [f"during-{i}" for i in range(60)]  # past the checkpoint threshold
        await add_notes(store, "acme", during)  # acknowledged locally, not shipped
        deadline = time.monotonic() + 10
        while lag_metric("acme") < 0.6:
            assert time.monotonic() < deadline, "lag never grew during the outage"
            await asyncio.sleep(0.1)
        assert (replicator.lag("acme", "alpha") or 0) >= 0.6
        assert failures() > failed_before
        with pytest.raises(TenantUnavailable) as info:  # cannot restore blind: 503
            await read_notes(store, "initech")
        assert info.value.status == 503
        assert await read_notes(store, "acme") == ["before", *during]
        set_down(False)
        await settled(replicator, "acme")
        assert lag_metric("acme") == 0.0
    target = tmp_path / "restored" / "alpha.db"
    assert restore(sink, replicator.keys, "acme", "alpha", target) is not None
    assert rows(target, master, "acme") == ["before", *during]


async def test_close_during_outage_ships_later(tmp_path: Path, master: MasterKey) -> None:
    sink, set_down = memory_sink(tmp_path)
    async with replicated(tmp_path / "data", sink, master) as (store, replicator):
        await add_notes(store, "acme", ["one"])
        await settled(replicator, "acme")
        set_down(True)
        await add_notes(store, "acme", ["two"])
        await store.evict("acme", "alpha")  # the handle goes; the WAL must stay
        assert replicator.lag("acme", "alpha") is not None  # still followed
        set_down(False)
        deadline = time.monotonic() + 10
        while replicator.lag("acme", "alpha") is not None:
            assert time.monotonic() < deadline, "final ship never retried"
            await asyncio.sleep(0.1)
    target = tmp_path / "restored" / "alpha.db"
    assert restore(sink, replicator.keys, "acme", "alpha", target) is not None
    assert rows(target, master, "acme") == ["one", "two"]
