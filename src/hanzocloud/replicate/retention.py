"""Retention: drop WAL segments outside the point-in-time window and snapshots past their age.

Per database: a snapshot older than the snapshot window is deleted, except the newest one of
the current generation. Segments before the newest snapshot that is older than the WAL
window are only needed for restores to moments outside that window, so they go, as do
segments that no remaining snapshot precedes. A generation replaced longer than the WAL
window ago keeps only its snapshots, and one without snapshots left is deleted whole.
"""

from __future__ import annotations

from hanzocloud.replicate import objects
from hanzocloud.replicate.restore import generations, snapshots, wal_indexes
from hanzocloud.replicate.sink import Sink

STARTING_GRACE = 3600.0  # seconds a generation without snapshots is left alone


def apply_retention(sink: Sink, org: str, service: str, current: str | None, *, now: float,
                    wal_seconds: float, snapshot_seconds: float) -> int:
    """Delete what the windows no longer need; returns the number of objects deleted."""
    prefix = objects.tenant_prefix(org, service)
    gens = generations(sink, org, service)
    snaps = {g: snapshots(sink, prefix, g) for g in gens}
    deleted = 0
    for position, gen in enumerate(gens):
        where = f"{prefix}/{gen}"
        keep = [s for s in snaps[gen] if s[1] >= now - snapshot_seconds]
        if gen == current and snaps[gen] and snaps[gen][-1] not in keep:
            keep.append(snaps[gen][-1])
        doomed = [f"{where}/snapshots/{s[2]}" for s in snaps[gen] if s not in keep]
        segments = wal_indexes(sink, prefix, gen)
        if not keep:
            if gen == current or now - int(gen.split("-")[0], 16) / 1000 < STARTING_GRACE:
                continue  # a generation still being started (here or elsewhere)
            doomed += [f"{where}/wal/{objects.wal_name(i)}" for i in segments]
            doomed.append(f"{where}/dek.age")
        else:
            outside = [s for s in keep if s[1] <= now - wal_seconds]
            cutoff = max(keep[0][0], outside[-1][0] if outside else 0)
            later = [snaps[g][0][1] for g in gens[position + 1:] if snaps[g]]
            if gen != current and later and later[0] <= now - wal_seconds:
                cutoff = max(segments, default=-1) + 1  # replaced long ago: no PITR need
            doomed += [f"{where}/wal/{objects.wal_name(i)}" for i in segments if i < cutoff]
        sink.delete(doomed)
        if not keep:
            sink.prune(where)
        deleted += len(doomed)
    return deleted
