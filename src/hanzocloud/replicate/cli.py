"""`hanzocloud replicate restore --org ORG --service SVC [--to TIMESTAMP]`."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from hanzocloud.config import Settings
from hanzocloud.errors import CloudError, ConfigError
from hanzocloud.replicate import with_dev_sink
from hanzocloud.replicate.objects import GLOBAL_LABEL


def _target(settings: Settings, org: str, service: str, output: str | None) -> Path:
    from hanzocloud.storage import GLOBAL_ORG, validate_service, validate_slug

    validate_service(service)
    if org != GLOBAL_ORG:
        validate_slug(org)  # before any sink key or path is built from it
    if output:
        return Path(output)
    if org == GLOBAL_ORG:
        return settings.data_dir / "global" / f"{service}.db"
    return settings.data_dir / "orgs" / org / f"{service}.db"


def run_restore(settings: Settings, args: argparse.Namespace) -> int:
    """Restore one database into the data dir (or `--output`) and check that it opens."""
    from hanzocloud.host import load_master
    from hanzocloud.keys import KeyUnwrapError, unwrap_dek
    from hanzocloud.replicate.crypto import SinkKeys
    from hanzocloud.replicate.errors import ChainError, SinkError
    from hanzocloud.replicate.restore import parse_moment, restore, set_aside
    from hanzocloud.replicate.sink import Sink
    from hanzocloud.rotate import check_master_key
    from hanzocloud.storage import connect_sqlcipher

    settings = with_dev_sink(settings)
    if not settings.replicate_url:
        raise ConfigError("no replication sink: pass --replicate-url (or CLOUD_REPLICATE_URL)")
    org = "" if args.org == GLOBAL_LABEL else args.org
    try:
        target = _target(settings, org, args.service, args.output)
        at = parse_moment(args.to) if args.to else None
    except (CloudError, ValueError) as exc:
        raise ConfigError(str(getattr(exc, "message", exc))) from None
    master, _ = load_master(settings)
    if not args.output:
        check_master_key(settings.data_dir, master)
    if target.exists():
        if not args.force:
            raise ConfigError(f"{target} exists; stop the server that uses it and pass --force "
                              "(the current file is kept aside as .superseded-…), or choose "
                              "--output")
        set_aside(target)
    try:
        sink = Sink(settings.replicate_url)
        result = restore(sink, SinkKeys.derive(master), org, args.service, target, at=at)
    except (SinkError, ChainError) as exc:
        print(f"hanzocloud: error: restore refused: {exc}", file=sys.stderr)
        return 1
    label = f"{args.org}/{args.service}"
    if result is None:
        print(f"hanzocloud: error: {label} has nothing in {sink.url}"
              + (" at or before that moment" if at is not None else ""), file=sys.stderr)
        return 1
    try:
        dek = unwrap_dek(master, org, args.service,
                         target.with_name(target.name + ".dek").read_bytes())
    except (KeyUnwrapError, OSError) as exc:  # a sidecar not ours, or none
        print(f"hanzocloud: error: {label} restored to {target}, but its key sidecar does not "
              f"open: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    conn = connect_sqlcipher(target, dek)
    try:
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
    finally:
        conn.close()
    when = datetime.fromtimestamp(result.as_of, UTC).isoformat(timespec="milliseconds")
    print(f"hanzocloud: restored {label} to {target} from generation {result.generation} "
          f"(snapshot {result.snapshot_index} + {result.segments} WAL segment(s), "
          f"{result.size} bytes), state as of {when}; quick_check {check}")
    return 0 if check == "ok" else 1
