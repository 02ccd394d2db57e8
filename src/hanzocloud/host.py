"""The host: builds Deps, mounts the enabled subsystems in order, and composes the listeners.

`build_host(settings)` is the one factory the CLI, `python -m <subsystem>` and the tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from hanzocloud import __version__, metrics
from hanzocloud.brand import Brand, load_brand
from hanzocloud.config import Settings
from hanzocloud.deps import Deps, RemoteFactory, build_deps
from hanzocloud.errors import CloudError, ConfigError, PermissionDenied, Unauthenticated
from hanzocloud.events import EventBus
from hanzocloud.extension_routes import extension_routes
from hanzocloud.extensions import Extensions
from hanzocloud.http import BodyLimit, JSONResponse, RequestContext, http_exception_handler
from hanzocloud.identity import current_identity
from hanzocloud.keys import MasterKey, dev_master_key, resolve_master_key
from hanzocloud.mount import MountPoint, RouteEntry, compile_table
from hanzocloud.openapi import build_openapi
from hanzocloud.registry import SUBSYSTEMS, Subsystem
from hanzocloud.remote import RemoteClients
from hanzocloud.rotate import check_master_key
from hanzocloud.routing import IndexedRouter, route
from hanzocloud.storage import TenantStore

log = structlog.get_logger("hanzocloud.host")


@dataclass
class HostState:
    """Whether the process is ready for traffic (flips off while draining)."""

    started: bool = False
    draining: bool = False


@dataclass
class Host:
    """Everything one process serves: its Deps, its listeners' apps and its lifespan."""

    settings: Settings
    deps: Deps
    points: list[MountPoint]
    table: list[RouteEntry]
    public: Starlette
    admin: Starlette
    health: Starlette
    state: HostState = field(default_factory=HostState)
    dev_key_created: bool = False
    remote: RemoteClients | None = None
    replicator: Any = None  # hanzocloud.replicate.Replicator when --replicate-url is set

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[Host]:
        """Start every subsystem in mount order; stop them in reverse, then close storage."""
        async with contextlib.AsyncExitStack() as stack:
            if self.replicator is not None:  # stops after the store closed: final ships
                await self.replicator.start()
                stack.push_async_callback(self.replicator.stop)
            stack.push_async_callback(self.deps.tenants.close)
            stack.callback(self.deps.extensions.close)
            if self.remote is not None:
                stack.push_async_callback(self.remote.close)
            janitor = asyncio.create_task(self.deps.tenants.janitor())
            stack.callback(janitor.cancel)
            for point in self.points:
                for factory in point._lifespans:
                    await stack.enter_async_context(factory())
                log.info("subsystem_started", subsystem=point.name)
            self.state.started = True
            try:
                yield self
            finally:
                self.state.draining = True
                log.info("host_stopping")

    @property
    def zap_services(self) -> list[tuple[str, Any, object]]:
        return [svc for p in self.points for svc in p._zap]


def load_master(settings: Settings) -> tuple[MasterKey, bool]:
    """The master key from its ref, or the `--dev` key (created on first use)."""
    if settings.kms_master_key_ref:
        return resolve_master_key(settings.kms_master_key_ref), False
    if settings.dev:
        return dev_master_key(settings.data_dir)
    raise ConfigError("no master key: pass --kms-master-key-ref or --dev")


def _check_mount(sub: Subsystem, module: Any) -> Any:
    mount = getattr(module, "mount", None)
    if mount is None or not callable(mount):
        raise ConfigError(f"subsystem '{sub.name}' ({sub.package}) exposes no mount(app, deps)")
    params = list(inspect.signature(mount).parameters)
    if len(params) != 2:
        raise ConfigError(f"subsystem '{sub.name}': mount must take (app, deps), "
                          f"not ({', '.join(params)})")
    return mount


def _host_routes(brand: Brand, holder: dict[str, Any]) -> list[BaseRoute]:
    async def get_brand(_: Request) -> Response:
        """The public part of the active brand."""
        return JSONResponse(brand.public())

    async def get_openapi(_: Request) -> Response:
        """One OpenAPI document for everything mounted in this process."""
        return JSONResponse(holder["openapi"])

    return [
        route("/v1/brand", get_brand, policy="public"),
        route("/v1/openapi.json", get_openapi, policy="public"),
    ]


def _admin_host_routes(deps: Deps, points: list[MountPoint]) -> list[BaseRoute]:
    async def subsystems(_: Request) -> Response:
        """Which subsystems this process mounts and how each Deps client resolved."""
        clients = {name: deps.client(name).mode for name in (
            "iam", "kms", "base", "commerce", "ai", "ml", "auto", "mesh", "payments", "vault")}
        return JSONResponse({"enabled": [p.name for p in points], "clients": clients,
                             "tenantHandlesOpen": deps.tenants.open_count})

    return [route("/v1/admin/subsystems", subsystems, policy="admin")]


class AdminOnly:
    """On the admin listener, every request needs a platform-admin identity."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            identity = current_identity.get()
            if not identity.authenticated:
                raise Unauthenticated("the admin listener needs a platform-admin token")
            if not identity.is_admin:
                raise PermissionDenied("the admin listener admits platform admins only")
        await self.app(scope, receive, send)


def _starlette(routes: list[BaseRoute], middleware: list[Middleware]) -> Starlette:
    handlers: dict[Any, Any] = {CloudError: http_exception_handler,
                                HTTPException: http_exception_handler}
    app = Starlette(middleware=middleware, exception_handlers=handlers)
    app.router = IndexedRouter(routes)
    return app


def _health_app(host_state: HostState, deps: Deps) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def readyz(_: Request) -> Response:
        ready = host_state.started and not host_state.draining
        body = {"status": "ready" if ready else ("draining" if host_state.draining
                                                  else "starting")}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics_endpoint)
    ]
    return _starlette(routes, [Middleware(RequestContext, listener="health")])


def build_host(
    settings: Settings,
    *,
    registry: Sequence[Subsystem] = SUBSYSTEMS,
    master: MasterKey | None = None,
    remote_factory: RemoteFactory | None = None,
) -> Host:
    """Build the whole process from settings: keys, storage, Deps, mounts, route table, apps."""
    brand = load_brand(settings.brand, brand_file=settings.brand_file)
    created = False
    if master is None:
        master, created = load_master(settings)
    check_master_key(settings.data_dir, master)
    tenants = TenantStore(settings.data_dir, master, max_open=settings.tenant_cache_size,
                          idle_seconds=settings.tenant_idle_seconds,
                          read_budget=settings.tenant_read_budget_ms / 1000,
                          write_budget=settings.tenant_write_budget_ms / 1000)
    replicator = None
    if settings.replicate_url:
        from hanzocloud.replicate import build_replicator

        replicator = build_replicator(settings, master, tenants)
    enabled = [s for s in registry if s.name in settings.enabled]
    remote = None
    if remote_factory is None:
        remote = RemoteClients(master)
        remote_factory = remote.factory
    extensions = Extensions(settings, tenants)
    deps = build_deps(settings, brand, tenants, master, EventBus(), extensions,
                      local=frozenset(s.name for s in enabled), remote_factory=remote_factory)
    points: list[MountPoint] = []
    for sub in enabled:
        mount = _check_mount(sub, importlib.import_module(sub.package))
        point = MountPoint(sub.name, deps)
        mount(point, deps)
        points.append(point)

    holder: dict[str, Any] = {}
    host_routes = [*_host_routes(brand, holder), *extension_routes(extensions),
                   *extensions.operator_routes()]
    admin_routes = _admin_host_routes(deps, points)
    table = compile_table(points, host_routes, admin_routes)

    public_routes: list[BaseRoute] = list(host_routes)
    admin_all: list[BaseRoute] = list(admin_routes)
    for p in points:
        public_routes.extend(p._well_known)
        public_routes.append(Mount(p.prefix, app=IndexedRouter(p._routes),
                                   middleware=p._middleware))
        if p._admin:
            admin_all.append(Mount(p.prefix, app=IndexedRouter(p._admin),
                                   middleware=p._middleware))
    edge = [m for p in points for m in p._edge]
    base_mw = [Middleware(RequestContext, listener="public"),
               Middleware(BodyLimit, limit=settings.body_limit)]
    public = _starlette(public_routes, [*base_mw, *edge])
    admin = _starlette(admin_all, [Middleware(RequestContext, listener="admin"),
                                   Middleware(BodyLimit, limit=settings.body_limit),
                                   *edge, Middleware(AdminOnly)])
    holder["openapi"] = build_openapi(brand, table, public_routes)
    state = HostState()
    return Host(settings, deps, points, table, public, admin, _health_app(state, deps),
                state=state, dev_key_created=created, remote=remote, replicator=replicator)
