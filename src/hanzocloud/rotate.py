"""Master-key bookkeeping and rotation: rewrap every sidecar, crash-safe and resumable.

The data dir remembers the fingerprint of its master key (`keys/master.json`). Every process
that uses the data dir's keys (a server, `iam bootstrap`, `replicate restore`, …) holds a
shared lock on `keys/lock` for as long as it runs, taken in `check_master_key`; a rotation
takes that lock exclusively, so it never runs beside a process that would go on wrapping new
tenants' keys under the old master key, and no such process starts while it runs.

A rotation first checks that every sidecar opens with the old (or, when resuming, the new)
key, and changes nothing if one does not. It then writes a journal (`keys/rotation.json`),
rewraps each sidecar with write-temp, fsync, rename, and removes the journal last. A crash
leaves every sidecar openable by the old or the new key; rerunning the same command finishes
the job, and the server refuses to start while a journal is present.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from hanzocloud.errors import ConfigError
from hanzocloud.keys import KeyUnwrapError, MasterKey, unwrap_dek, wrap_dek
from hanzocloud.storage import GLOBAL_ORG, write_file_atomic

log = structlog.get_logger("hanzocloud.rotate")
MASTER_FILE = Path("keys") / "master.json"
JOURNAL_FILE = Path("keys") / "rotation.json"
LOCK_FILE = Path("keys") / "lock"
LISTED_SIDECARS = 20  # a refusal names at most this many damaged sidecars

# The shared locks this process holds, by resolved data dir. A process-wide table on purpose:
# the lock lives as long as the process uses the data dir, which outlives any host or store
# built on it, and a bare descriptor is never closed by garbage collection.
_SHARED: dict[Path, int] = {}


def _write_json(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_file_atomic(path, json.dumps(data, sort_keys=True).encode())


def _read_record(data_dir: Path, name: Path, fields: tuple[str, ...],
                 advice: str) -> dict[str, str]:
    """The string fields of a small JSON object under keys/, or a ConfigError naming the file."""
    path = data_dir / name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # not JSON, or not UTF-8
        problem = "not valid JSON"
    else:
        if isinstance(data, dict) and all(isinstance(data.get(f), str) for f in fields):
            return {f: data[f] for f in fields}
        problem = "not a JSON object with " + " and ".join(f"a string '{f}'" for f in fields)
    raise ConfigError(f"{path} is damaged ({problem}); {advice}")


def _recorded_fingerprint(data_dir: Path) -> str:
    return _read_record(data_dir, MASTER_FILE, ("fingerprint",),
                        "restore it from a backup, or remove it to have the master key checked "
                        "against a tenant's key sidecar instead")["fingerprint"]


def _journal(data_dir: Path) -> dict[str, str]:
    return _read_record(data_dir, JOURNAL_FILE, ("from", "to"),
                        "it marks an unfinished master-key rotation: remove it and rerun "
                        "`hanzocloud keys rotate-master` with the same old and new keys to "
                        "finish that rotation")


def _open_lock(data_dir: Path) -> int:
    path = data_dir / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def _try_flock(fd: int, operation: int) -> bool:
    """flock without waiting: False if another process holds a conflicting lock."""
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _hold_shared(data_dir: Path) -> Path | None:
    """Take this process's shared lock on the data dir's keys; its table key if newly taken."""
    key = data_dir.resolve()
    if key in _SHARED:
        return None
    fd = _open_lock(data_dir)
    if not _try_flock(fd, fcntl.LOCK_SH):
        os.close(fd)
        raise ConfigError(f"a master-key rotation is running on {data_dir} (it holds "
                          f"{data_dir / LOCK_FILE}); start again once it has finished")
    _SHARED[key] = fd
    return key


@contextlib.contextmanager
def exclusive(data_dir: Path, *, then: str = "rerun the rotation") -> Iterator[None]:
    """Hold the data dir's keys alone, or refuse at once if any other process uses them."""
    key = data_dir.resolve()
    own = _SHARED.pop(key, None)  # this process used the data dir itself: convert its lock
    fd = own if own is not None else _open_lock(data_dir)
    if not _try_flock(fd, fcntl.LOCK_EX):
        _back_to_shared(key, fd, own)
        raise ConfigError(f"a server or tool is using {data_dir} (it holds "
                          f"{data_dir / LOCK_FILE}); stop every hanzocloud process on this "
                          f"data dir first, then {then}")
    try:
        yield
    finally:
        _back_to_shared(key, fd, own)


def _back_to_shared(key: Path, fd: int, own: int | None) -> None:
    """Give up an exclusive (or failed) lock: back to shared if this process held one."""
    if own is not None and _try_flock(fd, fcntl.LOCK_SH):
        _SHARED[key] = fd
    else:
        os.close(fd)


def check_master_key(data_dir: Path, master: MasterKey) -> None:
    """Hold the data dir's keys (shared, for the life of the process); refuse a key that is not
    this data dir's, or any start during an unfinished rotation."""
    taken = _hold_shared(data_dir)
    try:
        _check(data_dir, master)
    except BaseException:
        if taken is not None:  # this process does not use the data dir after all
            os.close(_SHARED.pop(taken))
        raise


def _check(data_dir: Path, master: MasterKey) -> None:
    if (data_dir / JOURNAL_FILE).exists():
        info = _journal(data_dir)
        raise ConfigError(
            f"an unfinished master-key rotation ({info['from']} → {info['to']}) was "
            f"found in {data_dir}; rerun `hanzocloud keys rotate-master --new-key-ref=…` "
            "with the old key to finish it"
        )
    if (data_dir / MASTER_FILE).exists():
        expected = _recorded_fingerprint(data_dir)
        if expected != master.fingerprint:
            raise ConfigError(
                f"master key {master.fingerprint} ({master.ref}) does not match this data dir, "
                f"which expects key {expected}; pass the right --kms-master-key-ref"
            )
        return
    # No record: a data dir that already holds tenants must prove the key on one of them
    # before its fingerprint becomes the one every later start is held to.
    first = next(iter_sidecars(data_dir), None)
    if first is not None:
        org, service, path = first
        try:
            unwrap_dek(master, org, service, path.read_bytes())
        except KeyUnwrapError as exc:
            raise ConfigError(
                f"{data_dir / MASTER_FILE} is missing and master key {master.fingerprint} "
                f"({master.ref}) does not open {path.relative_to(data_dir)} ({exc.reason}); "
                "pass the key this data dir's tenants were created with"
            ) from None
    _write_json(data_dir / MASTER_FILE, {"fingerprint": master.fingerprint})


def iter_sidecars(data_dir: Path) -> Iterator[tuple[str, str, Path]]:
    """Every (org, service, sidecar path) under the data dir, global files included."""
    for path in sorted((data_dir / "global").glob("*.db.dek")):
        yield GLOBAL_ORG, path.name.removesuffix(".db.dek"), path
    for path in sorted((data_dir / "orgs").glob("*/*.db.dek")):
        yield path.parent.name, path.name.removesuffix(".db.dek"), path


@dataclass(frozen=True, slots=True)
class RotationReport:
    rewrapped: int
    already: int

    @property
    def total(self) -> int:
        return self.rewrapped + self.already


def _opens(master: MasterKey, org: str, service: str, sidecar: bytes) -> bool:
    try:
        unwrap_dek(master, org, service, sidecar)
    except KeyUnwrapError:
        return False
    return True


def _survey(data_dir: Path, old: MasterKey,
            new: MasterKey) -> tuple[list[tuple[str, str, Path]], int]:
    """The sidecars still on `old` and how many are on `new`; refuse if any opens with neither."""
    pending: list[tuple[str, str, Path]] = []
    already = 0
    unusable: list[str] = []
    for org, service, path in iter_sidecars(data_dir):
        try:
            sidecar = path.read_bytes()
        except OSError as exc:
            unusable.append(f"{path.relative_to(data_dir)} ({exc.strerror})")
            continue
        if _opens(new, org, service, sidecar):
            already += 1
        elif _opens(old, org, service, sidecar):
            pending.append((org, service, path))
        else:
            unusable.append(str(path.relative_to(data_dir)))
    if unusable:
        named = ", ".join(unusable[:LISTED_SIDECARS])
        if len(unusable) > LISTED_SIDECARS:
            named += f" and {len(unusable) - LISTED_SIDECARS} more"
        raise ConfigError(
            f"{len(unusable)} key sidecar(s) in {data_dir} open with neither the old nor the "
            f"new master key: {named}; rotation refused, nothing was changed. Restore them "
            "(or move their tenants aside) and rerun"
        )
    return pending, already


def rotate_master(
    data_dir: Path,
    old: MasterKey,
    new: MasterKey,
    *,
    after_each: Callable[[Path], None] | None = None,
) -> RotationReport:
    """Rewrap every sidecar from `old` to `new`; safe to rerun after a crash."""
    if old.fingerprint == new.fingerprint:
        raise ConfigError("the new master key is the same as the current one")
    with exclusive(data_dir):
        return _rotate(data_dir, old, new, after_each)


def _rotate(data_dir: Path, old: MasterKey, new: MasterKey,
            after_each: Callable[[Path], None] | None) -> RotationReport:
    journal = data_dir / JOURNAL_FILE
    resuming = journal.exists()
    if resuming:
        info = _journal(data_dir)
        if info["to"] != new.fingerprint or info["from"] != old.fingerprint:
            raise ConfigError(
                f"an unfinished rotation {info['from']} → {info['to']} is in progress; "
                "finish it with the same keys first"
            )
    elif (data_dir / MASTER_FILE).exists():
        expected = _recorded_fingerprint(data_dir)
        if expected != old.fingerprint:
            raise ConfigError(f"current key {old.fingerprint} does not match this data dir "
                              f"(expects {expected})")
    pending, already = _survey(data_dir, old, new)
    if not resuming:
        _write_json(journal, {"from": old.fingerprint, "to": new.fingerprint,
                              "started": time.time()})
    for org, service, path in pending:
        sidecar = path.read_bytes()
        try:
            dek = unwrap_dek(old, org, service, sidecar)
        except KeyUnwrapError:  # only if something else wrote it under the exclusive lock
            raise ConfigError(f"{path} changed during the rotation; rerun the same command "
                              "to finish it") from None
        write_file_atomic(path, wrap_dek(new, org, service, dek, sidecar[:16]))
        if after_each is not None:
            after_each(path)
    _write_json(data_dir / MASTER_FILE, {"fingerprint": new.fingerprint})
    journal.unlink()
    log.info("master_key_rotated", rewrapped=len(pending), already=already, to=new.fingerprint)
    return RotationReport(len(pending), already)
