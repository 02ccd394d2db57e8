"""Durability: stream every database the host stores to an object store, and restore it.

See docs/durability.md. Nothing heavy is imported here, so the CLI and a host without
replication do not pay for fsspec or pyrage.
"""

from __future__ import annotations

import dataclasses
import socket
from typing import TYPE_CHECKING

from hanzocloud.errors import ConfigError

if TYPE_CHECKING:
    from hanzocloud.config import Settings
    from hanzocloud.keys import MasterKey
    from hanzocloud.replicate.replicator import Replicator
    from hanzocloud.storage import TenantStore

DEV_SINK = "replicate-sink"


def with_dev_sink(settings: Settings) -> Settings:
    """`--dev` without `--replicate-url` replicates to `file://<data dir>/replicate-sink`."""
    if settings.replicate_url or not settings.dev:
        return settings
    url = f"file://{(settings.data_dir / DEV_SINK).resolve()}"
    return dataclasses.replace(settings, replicate_url=url)


def replica_owner(settings: Settings) -> str:
    """This replica's lease identity: host name and data dir (stable across restarts)."""
    return f"{socket.gethostname()}:{settings.data_dir.resolve()}"


def build_replicator(settings: Settings, master: MasterKey, tenants: TenantStore) -> Replicator:
    """The replicator for `settings.replicate_url`, attached to the store."""
    from hanzocloud.replicate.errors import SinkError
    from hanzocloud.replicate.options import ReplicateOptions
    from hanzocloud.replicate.replicator import Replicator
    from hanzocloud.replicate.sink import Sink

    assert settings.replicate_url
    try:
        sink = Sink(settings.replicate_url)
    except SinkError as exc:
        raise ConfigError(f"--replicate-url: {exc}") from None
    options = ReplicateOptions(wal_retention=settings.replicate_wal_hours * 3600,
                               snapshot_retention=settings.replicate_snapshot_days * 86400,
                               lease_ttl=settings.replicate_lease_seconds)
    replicator = Replicator(sink, master, owner=replica_owner(settings), options=options)
    replicator.attach(tenants)
    return replicator
