"""Prometheus metrics, in one registry served at `/metrics` on the health listener."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "hanzocloud_requests",
    "HTTP requests served, by subsystem, route template and status.",
    ["subsystem", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "hanzocloud_request_duration_seconds",
    "HTTP request latency, by subsystem and route template.",
    ["subsystem", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
TENANT_HANDLES = Gauge(
    "hanzocloud_tenant_handles_open", "Tenant database handles currently open.",
    registry=REGISTRY,
)
TENANT_CACHE = Counter(
    "hanzocloud_tenant_cache", "Tenant handle cache lookups, by result (hit or miss).",
    ["result"], registry=REGISTRY,
)
SLOW_READS = Counter(
    "hanzocloud_tenant_slow_reads",
    "Read-only tenant transactions that outran the loop thread's budget and ran again in a "
    "worker thread.", registry=REGISTRY,
)
SLOW_WRITES = Counter(
    "hanzocloud_tenant_slow_writes",
    "Movable tenant write transactions that outran the loop thread's budget, were rolled "
    "back and ran again in a worker thread.", registry=REGISTRY,
)
THREAD_REFUSALS = Counter(
    "hanzocloud_tenant_thread_refusals",
    "Transactions refused (503 overloaded) because the store's worker threads had a full "
    "backlog.", registry=REGISTRY,
)
CACHE = Counter(
    "hanzocloud_cache", "Lookups in named in-process caches, by cache and result.",
    ["cache", "result"], registry=REGISTRY,
)
# Durability replicator (hanzocloud.replicate): lag per database, bytes shipped, failures.
REPLICATE_LAG = Gauge(
    "hanzocloud_replicate_lag_seconds",
    "Age of the oldest change not yet shipped to the replication sink, per database.",
    ["org", "service"], registry=REGISTRY,
)
REPLICATE_BYTES = Counter(
    "hanzocloud_replicate_shipped_bytes", "Bytes written to the replication sink, by kind.",
    ["kind"], registry=REGISTRY,
)
REPLICATE_FAILURES = Counter(
    "hanzocloud_replicate_failures", "Replication operations that failed, by operation.",
    ["op"], registry=REGISTRY,
)
REPLICATE_SHIP_LAG = Histogram(
    "hanzocloud_replicate_ship_lag_seconds",
    "Time from a change being noticed to it being in the sink.",
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
REPLICATE_RESTORES = Counter(
    "hanzocloud_replicate_restores", "Databases restored from the sink, by reason.",
    ["reason"], registry=REGISTRY,
)
