"""Before a database is served: take its lease, and restore it if it is missing or stale here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from hanzocloud import metrics
from hanzocloud.replicate.crypto import SinkKeys
from hanzocloud.replicate.errors import ChainError, SinkError, TenantUnavailable
from hanzocloud.replicate.lease import LeaseHeld, Leases
from hanzocloud.replicate.objects import org_label
from hanzocloud.replicate.restore import restore_beside
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
        # Beside the local copy first: if the sink has nothing, a superseded copy stays.
        result = await asyncio.to_thread(restore_beside, sink, keys, org, service, path)
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

