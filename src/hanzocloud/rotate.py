"""Master-key bookkeeping and rotation: rewrap every sidecar, crash-safe and resumable.

The data dir remembers the fingerprint of its master key (`keys/master.json`). A rotation
writes a journal (`keys/rotation.json`) first, rewraps each sidecar with write-temp, fsync,
rename, and removes the journal last. A crash leaves every sidecar openable by the old or
the new key; rerunning the same command finishes the job, and the server refuses to start
while a journal is present.
"""

from __future__ import annotations

import json
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


def _write_json(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_file_atomic(path, json.dumps(data, sort_keys=True).encode())


def check_master_key(data_dir: Path, master: MasterKey) -> None:
    """Refuse a key that is not this data dir's, or any start during an unfinished rotation."""
    journal = data_dir / JOURNAL_FILE
    if journal.exists():
        info = json.loads(journal.read_text())
        raise ConfigError(
            f"an unfinished master-key rotation ({info.get('from')} → {info.get('to')}) was "
            f"found in {data_dir}; rerun `hanzocloud keys rotate-master --new-key-ref=…` "
            "with the old key to finish it"
        )
    record = data_dir / MASTER_FILE
    if record.exists():
        expected = json.loads(record.read_text()).get("fingerprint")
        if expected != master.fingerprint:
            raise ConfigError(
                f"master key {master.fingerprint} ({master.ref}) does not match this data dir, "
                f"which expects key {expected}; pass the right --kms-master-key-ref"
            )
    else:
        _write_json(record, {"fingerprint": master.fingerprint})


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
    journal = data_dir / JOURNAL_FILE
    if journal.exists():
        info = json.loads(journal.read_text())
        if info.get("to") != new.fingerprint or info.get("from") != old.fingerprint:
            raise ConfigError(
                f"an unfinished rotation {info.get('from')} → {info.get('to')} is in progress; "
                "finish it with the same keys first"
            )
    else:
        record = data_dir / MASTER_FILE
        if record.exists():
            expected = json.loads(record.read_text()).get("fingerprint")
            if expected != old.fingerprint:
                raise ConfigError(f"current key {old.fingerprint} does not match this data dir "
                                  f"(expects {expected})")
        _write_json(journal, {"from": old.fingerprint, "to": new.fingerprint,
                              "started": time.time()})
    rewrapped = already = 0
    for org, service, path in iter_sidecars(data_dir):
        sidecar = path.read_bytes()
        try:
            unwrap_dek(new, org, service, sidecar)
            already += 1
            continue
        except KeyUnwrapError:
            pass
        try:
            dek = unwrap_dek(old, org, service, sidecar)
        except KeyUnwrapError:
            raise ConfigError(f"{path} opens with neither the old nor the new master key; "
                              "rotation stopped, nothing else changed") from None
        write_file_atomic(path, wrap_dek(new, org, service, dek, sidecar[:16]))
        rewrapped += 1
        if after_each is not None:
            after_each(path)
    _write_json(data_dir / MASTER_FILE, {"fingerprint": new.fingerprint})
    journal.unlink()
    log.info("master_key_rotated", rewrapped=rewrapped, already=already, to=new.fingerprint)
    return RotationReport(rewrapped, already)
