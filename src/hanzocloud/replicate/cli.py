"""`hanzocloud replicate restore --org ORG --service SVC [--to TIMESTAMP]`."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hanzocloud.config import Settings
from hanzocloud.errors import CloudError, ConfigError
from hanzocloud.replicate import with_dev_sink
from hanzocloud.replicate.objects import GLOBAL_LABEL

if TYPE_CHECKING:
    from hanzocloud.keys import MasterKey


def _target(settings: Settings, org: str, service: str, output: str | None) -> Path:
    from hanzocloud.storage import GLOBAL_ORG, validate_service, validate_slug

    validate_service(service)
    if org != GLOBAL_ORG:
        validate_slug(org)  # before any sink key or path is built from it
    if output:
        target = Path(output)
        if target.is_dir():
            raise ConfigError(f"--output: {target} is a directory; name the database file")
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"--output: cannot create {target.parent}: "
                              f"{exc.strerror}") from None
        return target
    if org == GLOBAL_ORG:
        return settings.data_dir / "global" / f"{service}.db"
    return settings.data_dir / "orgs" / org / f"{service}.db"


def run_restore(settings: Settings, args: argparse.Namespace) -> int:
    """Restore one database into the data dir (or `--output`) and check that it opens."""
    from hanzocloud.host import load_master
    from hanzocloud.replicate.restore import parse_moment
    from hanzocloud.rotate import check_master_key, exclusive
    from hanzocloud.storage import GLOBAL_ORG

    settings = with_dev_sink(settings)
    if not settings.replicate_url:
        raise ConfigError("no replication sink: pass --replicate-url (or CLOUD_REPLICATE_URL)")
    if not args.org:
        raise ConfigError(f"--org: empty; name an org, or {GLOBAL_LABEL} for a platform-wide file")
    org = GLOBAL_ORG if args.org == GLOBAL_LABEL else args.org
    try:
        target = _target(settings, org, args.service, args.output)
        at = parse_moment(args.to) if args.to else None
    except (CloudError, ValueError) as exc:
        raise ConfigError(str(getattr(exc, "message", exc))) from None
    master, _ = load_master(settings)
    if target.exists() and not args.force:
        raise ConfigError(f"{target} exists; stop the server that uses it and pass --force "
                          "(the current file is kept aside as .superseded-…), or choose "
                          "--output")
    if args.output:
        return _restore(settings, master, org, args, target, at)
    check_master_key(settings.data_dir, master)
    # A server on this data dir would go on writing to the file moved aside, and its
    # replicator would ship nothing more: acknowledged writes lost. Refuse while one runs.
    with exclusive(settings.data_dir, then="rerun the restore"):
        return _restore(settings, master, org, args, target, at)


class _Refused(Exception):
    """The restored file did not pass its checks (the message says why)."""


def _restore(settings: Settings, master: MasterKey, org: str, args: argparse.Namespace,
             target: Path, at: float | None) -> int:
    """Restore, check that the result opens, and only then put it in place
    (`restore_beside`): a restore that fails leaves the current file where it was."""
    from hanzocloud.keys import KeyUnwrapError, unwrap_dek
    from hanzocloud.replicate.crypto import SinkKeys
    from hanzocloud.replicate.errors import ChainError, SinkError
    from hanzocloud.replicate.restore import restore_beside
    from hanzocloud.replicate.sink import Sink
    from hanzocloud.storage import connect_sqlcipher

    label = f"{args.org}/{args.service}"

    def check(staged: Path) -> None:
        try:
            dek = unwrap_dek(master, org, args.service,
                             staged.with_name(staged.name + ".dek").read_bytes())
        except (KeyUnwrapError, OSError) as exc:  # a sidecar not ours, or none
            raise _Refused("the restored key sidecar does not open: "
                           f"{getattr(exc, 'reason', exc)}") from None
        conn = connect_sqlcipher(staged, dek)
        try:
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            conn.close()
        if verdict != "ok":
            raise _Refused(f"the restored file fails quick_check ({verdict})")

    try:
        sink = Sink(settings.replicate_url or "")
        result = restore_beside(sink, SinkKeys.derive(master), org, args.service, target,
                                at=at, check=check)
    except (SinkError, ChainError) as exc:
        print(f"hanzocloud: error: restore refused: {exc}", file=sys.stderr)
        return 1
    except _Refused as exc:
        print(f"hanzocloud: error: {label}: {exc}; {target} is unchanged", file=sys.stderr)
        return 1
    if result is None:
        print(f"hanzocloud: error: {label} has nothing in {sink.url}"
              + (" at or before that moment" if at is not None else ""), file=sys.stderr)
        return 1
    when = datetime.fromtimestamp(result.as_of, UTC).isoformat(timespec="milliseconds")
    print(f"hanzocloud: restored {label} to {target} from generation {result.generation} "
          f"(snapshot {result.snapshot_index} + {result.segments} WAL segment(s), "
          f"{result.size} bytes), state as of {when}; quick_check ok")
    return 0
