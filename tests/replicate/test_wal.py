"""Reading the wal-index header: a torn header is re-read, but never waited on after the
last attempt (the replicator's idle check reads it once, on the event loop)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hanzocloud.replicate import wal
from hanzocloud.replicate.errors import ContinuityLost


def test_a_torn_header_is_reread_without_a_last_wait(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "x.db"
    copy = wal._SHM_COPY
    wal.shm_path(db).write_bytes(b"\1" * copy + b"\2" * copy)  # the two copies disagree
    naps: list[float] = []
    monkeypatch.setattr(wal.time, "sleep", naps.append)
    with pytest.raises(ContinuityLost):
        wal.read_state(db, attempts=1)
    assert naps == []
    with pytest.raises(ContinuityLost):
        wal.read_state(db, attempts=3)
    assert len(naps) == 2


def test_no_wal_index_means_no_wal(tmp_path: Path) -> None:
    assert wal.read_state(tmp_path / "absent.db", attempts=1) is None
    db = tmp_path / "short.db"
    wal.shm_path(db).write_bytes(b"\0" * 10)
    assert wal.read_state(db, attempts=1) is None
