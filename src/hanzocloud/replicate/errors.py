"""Errors of the replicator: sink failures, refused chains, and the 503 of a leased tenant."""

from __future__ import annotations

from hanzocloud.errors import CloudError


class SinkError(Exception):
    """The sink could not be read or written (outage, permissions, network)."""


class ChainError(Exception):
    """A sink object or chain is corrupt, tampered with, or incomplete: restore refuses it."""


class ContinuityLost(Exception):
    """The local WAL no longer continues what was shipped: a new generation must start."""


class TenantUnavailable(CloudError):
    """Another replica holds this tenant's lease, or the tenant cannot be hydrated right now."""

    code = "tenant_unavailable"
    status = 503
