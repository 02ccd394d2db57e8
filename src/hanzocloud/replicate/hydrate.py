"""Before a database is served: take its lease, and restore it if it is missing or stale here."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import structlog

from hanzocloud import metrics
from hanzocloud.replicate.crypto import SinkKeys
from hanzocloud.replicate.errors import ChainError, SinkError, TenantUnavailable
from hanzocloud.replicate.lease import LeaseHeld, Leases
from hanzocloud.replicate.objects import org_label
from hanzocloud.replicate.restore import RestoreResult, restore, set_aside
from hanzocloud.replicate.sink import Sink

log = structlog.get_logger("hanzocloud.replicate")


async def take_over(sink: Sink, keys: SinkKeys, leases: Leases, org: str, service: str,
                    path: Path) -> bool:
    """Lease and (if needed) hydrate one database; False when the lease had to be deferred.

    Raises TenantUnavailable (503) when another replica holds the lease, or when the file is
    not here and cannot be restored from the sink.
    """
    label = f"{org_label(org)}/{service}"
    present = path.exists() or path.with_name(path.name + ".dek").exists()
    try:
        grant = await asyncio.to_thread(leases.acquire, org, service)
    except LeaseHeld as held:
        log.info("replicate_lease_held", db=label, holder=held.holder)
        raise TenantUnavailable(f"{label} is being served by another replica; retry shortly",
                                details={"org": org_label(org), "service": service}) from None
    except (SinkError, ChainError) as exc:
        metrics.REPLICATE_FAILURES.labels("lease").inc()
        if not present:
            raise TenantUnavailable(f"{label} is not on this replica and the replication sink "
                                    "cannot be read to restore it; retry shortly") from exc
        log.warning("replicate_lease_deferred", db=label, error=str(exc))
        return False  # serve the local copy; the lease is taken when the sink is back
    superseded = present and grant.previous not in (None, leases.id)
    if present and not superseded:
        return True
    try:
        result = await asyncio.to_thread(_restore, sink, keys, org, service, path, superseded)
    except (SinkError, ChainError) as exc:
        metrics.REPLICATE_FAILURES.labels("restore").inc()
        log.error("replicate_hydrate_failed", db=label, error=str(exc))
        # The detail (object keys, generations, the sink's own errors) is the operator's.
        raise TenantUnavailable(f"{label} could not be restored from the replication sink; "
                                "the operator has the details in the server log") from exc
    if result is not None:
        metrics.REPLICATE_RESTORES.labels("superseded" if superseded else "missing").inc()
        log.info("replicate_hydrated", db=label, generation=result.generation,
                 segments=result.segments, bytes=result.size)
    return True


def _restore(sink: Sink, keys: SinkKeys, org: str, service: str, path: Path,
             superseded: bool) -> RestoreResult | None:
    if not superseded:
        return restore(sink, keys, org, service, path)
    # Restore beside the stale copy first: if the sink has nothing, the local copy stays.
    staging = path.with_name(f".{path.name}.incoming")
    result = restore(sink, keys, org, service, staging)
    if result is not None:
        set_aside(path)
        os.replace(staging.with_name(staging.name + ".dek"), path.with_name(path.name + ".dek"))
        os.replace(staging, path)
    return result
