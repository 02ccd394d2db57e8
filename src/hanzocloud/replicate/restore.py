"""Restore one database from the sink: the latest state, or its state at a moment.

Restore picks a generation (`latest`, or for a point in time the newest generation with a
snapshot taken at or before it), the newest such snapshot, then applies that generation's WAL
segments in order while they were sealed at or before the moment. Each record's MAC, payload
checksum and `prev` link are verified; a missing, reordered, corrupt or forged segment stops
the restore with a ChainError naming it, and nothing is put in place.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hanzocloud.replicate import objects
from hanzocloud.replicate.crypto import SinkKeys
from hanzocloud.replicate.errors import ChainError
from hanzocloud.replicate.sink import Sink
from hanzocloud.replicate.tenant import remove_marker
from hanzocloud.replicate.wal import apply_frames, remove_wal_files


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What was restored: from which generation and snapshot, how many segments, as of when."""

    generation: str
    snapshot_index: int
    segments: int
    as_of: float
    size: int


def latest_generation(sink: Sink, keys: SinkKeys, org: str, service: str) -> str | None:
    """The generation `latest` points at, or None if this database was never shipped."""
    prefix = objects.tenant_prefix(org, service)
    blob = sink.get(f"{prefix}/latest.age")
    if blob is None:
        return None
    record = objects.open_record(keys, blob, where=f"{prefix}/latest.age", kind="latest",
                                 org=objects.org_label(org), service=service)
    return str(record.header["generation"])


def generations(sink: Sink, org: str, service: str) -> list[str]:
    """Every generation folder of one database, oldest first."""
    names = sink.listdir(objects.tenant_prefix(org, service))
    return [n for n in names if objects.GENERATION_RE.match(n)]


def snapshots(sink: Sink, prefix: str, generation: str) -> list[tuple[int, float, str]]:
    """(index, created, name) of a generation's snapshots, by index."""
    out = []
    for name in sink.listdir(f"{prefix}/{generation}/snapshots"):
        match = objects.SNAPSHOT_RE.match(name)
        if match:
            out.append((int(match[1], 16), int(match[2]) / 1000, name))
    return sorted(out)


def wal_indexes(sink: Sink, prefix: str, generation: str) -> list[int]:
    """The segment numbers present in a generation, ascending."""
    names = sink.listdir(f"{prefix}/{generation}/wal")
    return sorted(int(m[1], 16) for n in names if (m := objects.WAL_RE.match(n)))


def _choose(sink: Sink, keys: SinkKeys, org: str, service: str,
            at: float | None) -> tuple[str, tuple[int, float, str]] | None:
    prefix = objects.tenant_prefix(org, service)
    if at is None:
        latest = latest_generation(sink, keys, org, service)
        if latest:
            found = snapshots(sink, prefix, latest)
            if not found:  # never "nothing": that would start an empty file over the history
                raise ChainError(f"{prefix}/latest.age names generation {latest}, which has no "
                                 "snapshot left: the sink is damaged")
            return latest, found[-1]
        candidates = list(reversed(generations(sink, org, service)))
    else:
        candidates = list(reversed(generations(sink, org, service)))
    for generation in candidates:
        usable = [s for s in snapshots(sink, prefix, generation) if at is None or s[1] <= at]
        if usable:
            return generation, usable[-1]
    return None


def restore(sink: Sink, keys: SinkKeys, org: str, service: str, target: Path, *,
            at: float | None = None) -> RestoreResult | None:
    """Rebuild `target` (and its `.dek` sidecar) from the sink; None if there is nothing."""
    chosen = _choose(sink, keys, org, service, at)
    if chosen is None:
        return None
    generation, (index, created, name) = chosen
    prefix = objects.tenant_prefix(org, service)
    ident = {"org": objects.org_label(org), "service": service, "generation": generation}
    where = f"{prefix}/{generation}"
    blob = sink.get(f"{where}/snapshots/{name}")
    if blob is None:
        raise ChainError(f"{where}/snapshots/{name} disappeared during the restore")
    snap = objects.open_record(keys, blob, where=f"{where}/snapshots/{name}", kind="snapshot",
                               index=index, **ident)
    # The time in the name chose the snapshot, but only the sealed header is authentic.
    if objects.snapshot_name(index, float(snap.header["created"])) != name:
        raise ChainError(f"{where}/snapshots/{name}: its name does not carry the time it was "
                         "taken (renamed?)")
    dek_blob = sink.get(f"{where}/dek.age")
    if dek_blob is None:
        raise ChainError(f"{where}/dek.age is missing: the generation cannot be opened")
    sidecar = objects.open_record(keys, dek_blob, where=f"{where}/dek.age", kind="dek",
                                  **ident).payload
    page_size = int(snap.header["page_size"])
    chain, as_of, applied, pages = str(snap.header["prev"]), float(snap.header["created"]), 0, 0
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(f".{target.name}.restore-{os.getpid()}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, snap.payload)
        for number in [i for i in wal_indexes(sink, prefix, generation) if i >= index]:
            expected = index + applied
            if number != expected:
                raise ChainError(f"{where}/wal: segment {expected:016x} is missing (found "
                                 f"{number:016x} next); the chain is broken")
            key = f"{where}/wal/{objects.wal_name(number)}"
            seg_blob = sink.get(key)
            if seg_blob is None:
                raise ChainError(f"{key} disappeared during the restore")
            seg = objects.open_record(keys, seg_blob, where=key, kind="wal", index=number, **ident)
            if seg.header["prev"] != chain:
                raise ChainError(f"{key} does not follow the segment before it (chain "
                                 "mismatch: replaced, reordered or from another history)")
            if at is not None and float(seg.header["created"]) > at:
                break
            if int(seg.header["page_size"]) != page_size:
                raise ChainError(f"{key}: page size differs from the snapshot's")
            pages = apply_frames(fd, seg.payload, page_size) or pages
            chain, as_of, applied = seg.chain, float(seg.header["created"]), applied + 1
        if pages:
            os.ftruncate(fd, pages * page_size)
        os.fsync(fd)
        size = os.fstat(fd).st_size
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    _put_in_place(tmp, target, sidecar)
    return RestoreResult(generation, index, applied, as_of, size)


def restore_beside(sink: Sink, keys: SinkKeys, org: str, service: str, target: Path, *,
                   at: float | None = None,
                   check: Callable[[Path], None] | None = None) -> RestoreResult | None:
    """`restore`, built beside `target` and checked by `check(staged file)` (which raises to
    refuse it) before it takes `target`'s place; the file there is kept as
    `.superseded-<time>`. A restore that fails, finds nothing or is refused leaves `target`
    as it was."""
    staging = target.with_name(f".{target.name}.incoming")
    staged = (staging, staging.with_name(staging.name + ".dek"))
    try:
        result = restore(sink, keys, org, service, staging, at=at)
        if result is None:
            return None
        if check is not None:
            check(staging)
        set_aside(target)  # the old file, if any, and a stale WAL that would replay onto ours
        os.replace(staged[1], target.with_name(target.name + ".dek"))
        os.replace(staging, target)
        return result
    finally:
        for leftover in staged:
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        remove_wal_files(staging)  # the check's connection leaves them behind


def _put_in_place(tmp: Path, target: Path, sidecar: bytes) -> None:
    remove_wal_files(target)
    remove_marker(target)
    dek = target.with_name(target.name + ".dek")
    dek_tmp = dek.with_name(f".{dek.name}.restore-{os.getpid()}")
    dek_tmp.write_bytes(sidecar)
    os.chmod(dek_tmp, 0o600)
    os.replace(tmp, target)
    os.replace(dek_tmp, dek)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_aside(path: Path) -> None:
    """Move a superseded local copy (and its sidecar) out of the way before restoring."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for item in (path, path.with_name(path.name + ".dek")):
        if item.exists():
            os.replace(item, item.with_name(f"{item.name}.superseded-{stamp}"))
    remove_wal_files(path)
    remove_marker(path)


def parse_moment(text: str) -> float:
    """`--to`: unix seconds, or an ISO 8601 time (UTC when it names no zone)."""
    from datetime import UTC, datetime

    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):  # not nan or inf, which float() also reads
            return seconds
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--to: '{text}' is neither unix seconds nor an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
