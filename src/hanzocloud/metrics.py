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
CACHE = Counter(
    "hanzocloud_cache", "Lookups in named in-process caches, by cache and result.",
    ["cache", "result"], registry=REGISTRY,
)
