"""Reading a live SQLite WAL (header, wal-index, frames) and applying frames to a db file.

The replicator reads committed frames straight from `<db>-wal`. How far is committed comes
from the wal-index header of `<db>-shm` (the same two-copy, checksummed header SQLite's
readers use, read through SQLite's own mapping of it: see `read_state`), so a transaction
being written is never shipped half-done. Frames carry the WAL salt; a frame whose salt
differs from the header's was overwritten after a WAL restart, which means continuity was
lost. SQLCipher encrypts page images inside frames; this module never needs the key.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hanzocloud.replicate.errors import ContinuityLost

WAL_HEADER_BYTES = 32
FRAME_HEADER_BYTES = 24
_SHM_HEADER = struct.Struct("=IIIBBHII8s8s8s")  # one WalIndexHdr, native byte order
_SHM_COPY = 48


@dataclass(frozen=True, slots=True)
class WalState:
    """What the wal-index says right now: current salt, committed frames, page size."""

    salt: bytes
    frames: int
    page_size: int

    @property
    def frame_bytes(self) -> int:
        return FRAME_HEADER_BYTES + self.page_size


def _native_checksum(data: bytes) -> tuple[int, int]:
    # SQLite's WAL checksum over native-order 32-bit words (used for the wal-index header).
    s1 = s2 = 0
    words = struct.unpack(f"={len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s1 = (s1 + words[i] + s2) & 0xFFFFFFFF
        s2 = (s2 + words[i + 1] + s1) & 0xFFFFFFFF
    return s1, s2


# Reads the wal-index's first n bytes; None when there is none.
WalIndex = Callable[[int], bytes | None]


def wal_path(db: Path) -> Path:
    return db.with_name(db.name + "-wal")


def shm_path(db: Path) -> Path:
    return db.with_name(db.name + "-shm")


def remove_wal_files(db: Path) -> None:
    """Delete `db`'s `-wal` and `-shm` if present: before another file takes its place (a WAL
    left there would be replayed onto it), or with a staged copy that is not kept."""
    for path in (wal_path(db), shm_path(db)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def read_state(db: Path, wal_index: WalIndex, *, attempts: int = 50) -> WalState | None:
    """The committed WAL state from the wal-index, or None when the WAL holds no frames.

    `wal_index(n)` returns the wal-index's first n bytes (None if it has none): from
    SQLite's own mapping of it (`hanzocloud.storage.sqlitefile`) while this process has the
    database open, since opening and closing the `-shm` would drop SQLite's locks on it.

    An empty WAL counts as none: its header's salt binds nothing (the first writer of a
    WAL left empty at a close picks a new one), and the wal-index a closed file keeps
    beside it (see `hanzocloud.storage.walfiles`) still describes its last session."""
    try:
        if os.stat(wal_path(db)).st_size <= WAL_HEADER_BYTES:
            return None
    except FileNotFoundError:
        return None
    for attempt in range(attempts):
        raw = wal_index(2 * _SHM_COPY)
        if raw is None or len(raw) < 2 * _SHM_COPY:
            return None
        first, second = raw[:_SHM_COPY], raw[_SHM_COPY:]
        if first == second:
            (_, _, _, is_init, _, size_code, frames, _, _, salt,
             checksum) = _SHM_HEADER.unpack(first)
            if not is_init or not frames:
                return None
            if struct.unpack("=II", checksum) == _native_checksum(first[:40]):
                page_size = 65536 if size_code == 1 else size_code
                return WalState(salt, frames, page_size)
        if attempt + 1 < attempts:
            time.sleep(0.0005)  # a writer is updating the header: read again
    raise ContinuityLost(f"{shm_path(db)}: wal-index header never read consistently")


def read_frames(db: Path, state: WalState, start: int, end: int) -> bytes:
    """Frames [start, end) of the WAL, checked to belong to the salt of `state`."""
    size = state.frame_bytes
    with open(wal_path(db), "rb") as fh:
        header = fh.read(WAL_HEADER_BYTES)
        if len(header) < WAL_HEADER_BYTES or header[16:24] != state.salt:
            raise ContinuityLost(f"{wal_path(db)}: WAL header salt changed")
        fh.seek(WAL_HEADER_BYTES + start * size)
        data = fh.read((end - start) * size)
    if len(data) != (end - start) * size:
        raise ContinuityLost(f"{wal_path(db)}: WAL shorter than its index says")
    for offset in range(0, len(data), size):
        if data[offset + 8:offset + 16] != state.salt:
            raise ContinuityLost(f"{wal_path(db)}: frame {start + offset // size} was "
                                 "overwritten after a WAL restart")
    return data


def last_commit_pages(frames: bytes, page_size: int) -> int:
    """The database size (pages) recorded by the last commit frame in `frames` (0 if none)."""
    size = FRAME_HEADER_BYTES + page_size
    for offset in range(len(frames) - size, -1, -size):
        (pages,) = struct.unpack_from(">I", frames, offset + 4)
        if pages:
            return int(pages)
    return 0


def apply_frames(fd: int, frames: bytes, page_size: int) -> int:
    """Write each frame's page image into the db file at `fd`; returns the last commit size."""
    size = FRAME_HEADER_BYTES + page_size
    if len(frames) % size:
        raise ValueError("frame data is not a whole number of frames")
    pages = 0
    view = memoryview(frames)
    for offset in range(0, len(frames), size):
        pgno, commit = struct.unpack_from(">II", frames, offset)
        os.pwrite(fd, view[offset + FRAME_HEADER_BYTES:offset + size], (pgno - 1) * page_size)
        if commit:
            pages = commit
    return pages
