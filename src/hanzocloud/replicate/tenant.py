"""One database's shipping state: position in its WAL, generation, chain, and its sink objects.

Everything here is blocking and runs on a worker thread, one call at a time per database
(the async `Replicator` serialises them). The replicator owns checkpointing: tenant
connections run with `wal_autocheckpoint=0`, and two connections of its own keep the WAL
alive (a last connection closing would checkpoint and delete it). A checkpoint happens only
while `_writer` holds the write lock and after every committed frame has been shipped, so no
frame can be backfilled and then lost to a WAL restart before it reached the sink.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlcipher3

from hanzocloud.replicate import objects
from hanzocloud.replicate.crypto import SinkKeys
from hanzocloud.replicate.errors import ChainError, ContinuityLost
from hanzocloud.replicate.sink import Sink
from hanzocloud.replicate.wal import (
    FRAME_HEADER_BYTES,
    WalState,
    read_frames,
    read_state,
    shm_path,
    wal_path,
)
from hanzocloud.storage import connect_sqlcipher, write_file_atomic
from hanzocloud.storage.shm import trim_wal_index
from hanzocloud.storage.sqlitefile import file_of

MARKER_SUFFIX = ".replicate"


@dataclass(frozen=True, slots=True)
class Policy:
    """When to checkpoint and snapshot, and how big a WAL segment may grow."""

    checkpoint_frames: int = 1000
    checkpoint_seconds: float = 30.0
    snapshot_seconds: float = 3600.0
    snapshot_wal_bytes: int = 256 * 1024 * 1024
    segment_bytes: int = 16 * 1024 * 1024


@dataclass(slots=True)
class StepReport:
    """What one step did: bytes shipped by kind, frames still waiting, a new generation."""

    wal_bytes: int = 0
    snapshot_bytes: int = 0
    pending_frames: int = 0
    generation_started: bool = False


def open_connection(path: Path, dek: bytes) -> sqlcipher3.Connection:
    """A replicator connection: autocommit, no automatic checkpoints."""
    conn = connect_sqlcipher(path, dek)
    conn.isolation_level = None
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn


def marker_path(db: Path) -> Path:
    return db.with_name(db.name + MARKER_SUFFIX)


class TenantLog:
    """Ships one SQLCipher file's WAL to the sink as a chain of sealed segments."""

    def __init__(self, sink: Sink, keys: SinkKeys, org: str, service: str, path: Path,
                 dek: bytes, *, writer: str, policy: Policy) -> None:
        self.sink, self.keys, self.org, self.service, self.path = sink, keys, org, service, path
        self.policy = policy
        self.label = objects.org_label(org)
        self.prefix = objects.tenant_prefix(org, service)
        self.writer = writer
        self._writer = open_connection(path, dek)
        self._checkpointer = open_connection(path, dek)
        # The wal-index and the main file are read through this connection's own handles:
        # opening and closing them here would drop SQLite's locks (see sqlitefile).
        self._file = file_of(self._checkpointer, path)
        self.generation: str | None = None
        self.index = 0  # the next WAL segment number in this generation
        self.chain = ""
        self.salt: bytes | None = None
        self.frames = 0  # frames of the current WAL already shipped
        self.checkpointed = True  # every shipped frame is in the db file (a restart is fine)
        self.last_checkpoint = time.monotonic()
        self.last_snapshot = 0.0
        self.wal_since_snapshot = 0
        self.closed = False

    # -- position ---------------------------------------------------------------------------

    def resume(self) -> bool:
        """Continue the generation a clean close recorded, if the file is exactly as it left it.

        The marker says nothing about the sink: before shipping into the generation, the
        replicator checks that `latest` still names it (another replica may have moved on).
        """
        marker = marker_path(self.path)
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            return False
        marker.unlink(missing_ok=True)  # consumed: a crash from here on needs a new generation
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        wal = wal_path(self.path)
        if (data.get("sink") != self.sink.url or data.get("keys") != self.keys.fingerprint
                or data.get("size") != stat.st_size
                or data.get("mtime_ns") != stat.st_mtime_ns
                or (wal.exists() and wal.stat().st_size > 0)):
            return False
        self.generation, self.index, self.chain = data["generation"], data["index"], data["chain"]
        self.last_snapshot = float(data.get("last_snapshot", 0.0))
        self.salt, self.frames, self.checkpointed = None, 0, True
        return True

    def _write_marker(self) -> None:
        stat = self.path.stat()
        write_file_atomic(marker_path(self.path), json.dumps({
            "sink": self.sink.url, "keys": self.keys.fingerprint,
            "generation": self.generation, "index": self.index,
            "chain": self.chain, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "last_snapshot": self.last_snapshot}).encode())

    def _follow(self, state: WalState) -> None:
        """Accept the WAL's current salt, or raise ContinuityLost if frames were lost."""
        if state.salt == self.salt:
            if state.frames < self.frames:
                raise ContinuityLost("the WAL shrank without a restart")
            return
        if not self.checkpointed:
            raise ContinuityLost("the WAL restarted before its frames were shipped")
        if self.salt is not None:
            (old,), (new,) = struct.unpack(">I", self.salt[:4]), struct.unpack(">I", state.salt[:4])
            if new != (old + 1) & 0xFFFFFFFF:
                raise ContinuityLost("the WAL restarted more than once between looks")
        self.salt, self.frames, self.checkpointed = state.salt, 0, False

    # -- one step ---------------------------------------------------------------------------

    def _due(self) -> tuple[bool, bool]:
        """Whether a checkpoint, and a snapshot, are due."""
        policy = self.policy
        # Only while some shipped frame is not in the db file yet.
        due_checkpoint = not self.checkpointed and (
            self.frames >= policy.checkpoint_frames or bool(
                self.frames
                and time.monotonic() - self.last_checkpoint >= policy.checkpoint_seconds))
        # A snapshot bounds how much WAL a restore replays: by age, and by WAL volume.
        due_snapshot = (time.time() - self.last_snapshot >= policy.snapshot_seconds
                        or self.wal_since_snapshot >= policy.snapshot_wal_bytes)
        return due_checkpoint, due_snapshot

    def settled(self) -> bool:
        """Whether a step now would do nothing: every frame in the WAL is shipped, and no
        checkpoint or snapshot is due. One read of the wal-index header, never a wait, so
        the replicator asks on the event loop before it hands a step to a worker thread
        (a thread hop per idle tenant per pass cost the serving loop about a third of its
        throughput)."""
        if self.closed:
            return True  # released (the lease was lost, say): there is nothing to step
        if self.generation is None:
            return False
        try:
            state = read_state(self.path, self._file.wal_index, attempts=1)
        except ContinuityLost:  # a writer is updating the header: let a step look properly
            return False
        except sqlcipher3.ProgrammingError:  # released in a thread meanwhile
            return True
        if state is not None and (state.salt != self.salt or state.frames != self.frames):
            return False
        return not any(self._due())

    def step(self) -> StepReport:
        """Ship new frames; checkpoint and snapshot when due. Raises SinkError on outages."""
        report = StepReport()
        if self.generation is None:
            self.start_generation(report)
        state = read_state(self.path, self._file.wal_index)
        if state is not None:
            self._follow(state)
            report.wal_bytes += self._ship(state)
        due_checkpoint, due_snapshot = self._due()
        if (due_checkpoint or due_snapshot) and self.checkpoint(report) and due_snapshot:
            report.snapshot_bytes += self._snapshot()
        state = read_state(self.path, self._file.wal_index)
        report.pending_frames = 0 if state is None or state.salt != self.salt else max(
            0, state.frames - self.frames)
        return report

    @contextlib.contextmanager
    def _write_locked(self) -> Iterator[None]:
        # Writers wait while this is held: nothing can be appended (or restart the WAL).
        self._writer.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            self._writer.execute("ROLLBACK")

    def checkpoint(self, report: StepReport) -> bool:
        """Ship the tail and backfill the WAL into the db file; True if it fully completed."""
        with self._write_locked():
            state = read_state(self.path, self._file.wal_index)
            if state is not None:
                self._follow(state)
                report.wal_bytes += self._ship(state)
            busy, log, done = self._passive_checkpoint()
        self.last_checkpoint = time.monotonic()
        complete = busy == 0 and log == done and (state is None or done == state.frames)
        if complete:
            self.checkpointed = True
        return bool(complete)

    def _passive_checkpoint(self) -> tuple[int, int, int]:
        busy, log, done = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(log), int(done)

    def start_generation(self, report: StepReport) -> None:
        """Begin a new generation: full checkpoint, sidecar, snapshot 0, then `latest`."""
        with self._write_locked():
            state = read_state(self.path, self._file.wal_index)
            busy, log, done = self._passive_checkpoint()
            if busy or log != done:
                raise ContinuityLost("a reader kept the checkpoint from completing; retry")
            image = self._file.read_all()
        generation = objects.new_generation()
        sidecar = self.path.with_name(self.path.name + ".dek").read_bytes()
        base = {"org": self.label, "service": self.service, "generation": generation}
        blob, _ = objects.seal_record(self.keys, {**base, "kind": "dek", "index": 0}, sidecar)
        self.sink.put(f"{self.prefix}/{generation}/dek.age", blob)
        chain = objects.genesis(generation)
        report.snapshot_bytes += self._put_snapshot(generation, 0, chain, image)
        blob, _ = objects.seal_record(self.keys, {**base, "kind": "latest", "index": 0,
                                                  "created": time.time()}, b"")
        self.sink.put(f"{self.prefix}/latest.age", blob)
        self.generation, self.index, self.chain = generation, 0, chain
        self.salt = state.salt if state is not None else None
        self.frames = state.frames if state is not None else 0
        self.checkpointed = True
        self.last_checkpoint = time.monotonic()
        report.generation_started = True

    def abandon_generation(self) -> None:
        """Forget the position after continuity was lost; the next step starts a generation."""
        self.generation = None

    # -- objects ----------------------------------------------------------------------------

    def _segments(self, data: bytes, page_size: int, limit: int) -> Iterator[tuple[int, bytes]]:
        """Split frames into (frame count, bytes) chunks that end on commit frames."""
        size = FRAME_HEADER_BYTES + page_size
        start = 0
        for offset in range(0, len(data), size):
            end = offset + size
            (commit,) = struct.unpack_from(">I", data, offset + 4)
            if commit and (end - start >= limit or end == len(data)):
                yield (end - start) // size, data[start:end]
                start = end
        if start != len(data):  # the index only covers whole transactions
            raise ContinuityLost("committed WAL range does not end on a commit frame")

    def _ship(self, state: WalState) -> int:
        if state.frames <= self.frames:
            return 0
        data = read_frames(self.path, state, self.frames, state.frames)
        shipped = 0
        for count, chunk in self._segments(data, state.page_size, self.policy.segment_bytes):
            shipped += self._put_segment(state, count, chunk)
        return shipped

    def _put_segment(self, state: WalState, count: int, chunk: bytes) -> int:
        assert self.generation is not None
        header: dict[str, Any] = {
            "kind": "wal", "org": self.label, "service": self.service,
            "generation": self.generation, "index": self.index, "created": time.time(),
            "prev": self.chain, "salt": state.salt.hex(), "first": self.frames,
            "frames": count, "page_size": state.page_size, "writer": self.writer}
        blob, chain = objects.seal_record(self.keys, header, chunk)
        key = f"{self.prefix}/{self.generation}/wal/{objects.wal_name(self.index)}"
        if not self.sink.create(key, blob):
            chain = self._adopt_existing(key, header)
        self.index, self.chain, self.frames = self.index + 1, chain, self.frames + count
        self.wal_since_snapshot += len(chunk)
        self.checkpointed = False  # these frames are not in the db file yet
        return len(blob)

    def _adopt_existing(self, key: str, header: dict[str, Any]) -> str:
        # An earlier attempt of ours may have landed even though its reply was lost.
        blob = self.sink.get(key)
        record = None if blob is None else objects.open_record(
            self.keys, blob, where=key, kind="wal", generation=self.generation, index=self.index)
        if record is None or any(record.header.get(k) != header[k]
                                 for k in ("writer", "prev", "first", "frames", "salt")):
            raise ChainError(f"{key} was written by another replica: this one no longer "
                             "owns the generation")
        return record.chain

    def _snapshot(self) -> int:
        # Only this replicator checkpoints, so the file is stable until its next checkpoint.
        assert self.generation is not None
        return self._put_snapshot(self.generation, self.index, self.chain, self._file.read_all())

    def _put_snapshot(self, generation: str, index: int, chain: str, image: bytes) -> int:
        created = time.time()
        page_size = int(self._writer.execute("PRAGMA page_size").fetchone()[0])
        header = {"kind": "snapshot", "org": self.label, "service": self.service,
                  "generation": generation, "index": index, "created": created, "prev": chain,
                  "page_size": page_size, "size": len(image), "writer": self.writer}
        blob, _ = objects.seal_record(self.keys, header, image)
        self.sink.put(f"{self.prefix}/{generation}/snapshots/"
                      f"{objects.snapshot_name(index, created)}", blob)
        self.last_snapshot, self.wal_since_snapshot = created, 0
        return len(blob)

    # -- close ------------------------------------------------------------------------------

    def close(self, *, final: bool = True) -> bool:
        """Ship the tail, then close; True if everything was shipped (and a marker written)."""
        shipped = False
        if final and self.generation is not None:
            try:
                with self._write_locked():
                    state = read_state(self.path, self._file.wal_index)
                    if state is not None:
                        self._follow(state)
                        self._ship(state)
                shipped = True
            except ContinuityLost:
                shipped = False
        self.release()
        if shipped and not (wal_path(self.path).exists() and wal_path(self.path).stat().st_size):
            self._write_marker()
        return shipped

    def set_aside(self) -> Path:
        """Close, and move the file out of the way as `<file>.superseded-<time>` (its path).

        For a copy that conflicts with the sink's history. Unlike a restore's set-aside, the
        WAL is moved along rather than deleted: a connection still open elsewhere (a
        `connect_sync` user) may hold frames that are in no other copy.
        """
        with contextlib.suppress(sqlcipher3.Error):  # fold the WAL in when nobody is in it
            self._checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.release()
        stamp, n = time.strftime("%Y%m%dT%H%M%S"), 0
        aside = self.path.with_name(f"{self.path.name}.superseded-{stamp}")
        while aside.exists():  # never over an earlier copy
            n += 1
            aside = self.path.with_name(f"{self.path.name}.superseded-{stamp}-{n}")
        suffix = aside.name.rsplit(".superseded-", 1)[1]
        dek = self.path.with_name(self.path.name + ".dek")
        for source, target in ((self.path, aside),
                               (wal_path(self.path), Path(f"{aside}-wal")),
                               (shm_path(self.path), Path(f"{aside}-shm")),
                               (dek, dek.with_name(f"{dek.name}.superseded-{suffix}"))):
            with contextlib.suppress(FileNotFoundError):
                os.replace(source, target)
        remove_marker(self.path)
        return aside

    def release(self) -> None:
        """Close the replicator's own connections (the last one to close checkpoints), and
        empty the wal-index if no connection is left on the file."""
        if not self.closed:
            self.closed = True
            for closable in (self._writer, self._file):
                with contextlib.suppress(Exception):
                    closable.close()
            trim_wal_index(self.path)  # the last connection here: empty the -shm for its rest


def remove_marker(db: Path) -> None:
    """Forget a recorded position (the file is about to be replaced)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(marker_path(db))
