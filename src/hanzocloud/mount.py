"""The mount point each subsystem's `mount(app, deps)` receives, and the compiled route table.

A subsystem registers everything through its MountPoint: routes under its one prefix, the few
absolute paths a standard requires, admin routes, scoped middleware, its lifespan and its
in-process client. The host compiles the whole table at startup and refuses to start on a
collision, naming both claimants.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route

from hanzocloud.errors import ConfigError
from hanzocloud.routing import PolicyRoute

if TYPE_CHECKING:
    from hanzocloud.deps import Deps

LifespanFactory = Callable[[], AbstractAsyncContextManager[Any]]
_PARAM = re.compile(r"\{[^}]*\}")
HOST = "host"


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One line of the compiled route table."""

    subsystem: str
    listener: str
    path: str
    methods: frozenset[str]
    policy: str

    @property
    def shape(self) -> str:
        return _PARAM.sub("{}", self.path)


@dataclass
class MountPoint:
    """What `mount(app, deps)` gets as `app`: the only door into the host."""

    name: str
    deps: Deps
    prefix: str = ""
    _routes: list[BaseRoute] = field(default_factory=list)
    _well_known: list[BaseRoute] = field(default_factory=list)
    _admin: list[BaseRoute] = field(default_factory=list)
    _middleware: list[Middleware] = field(default_factory=list)
    _edge: list[Middleware] = field(default_factory=list)
    _lifespans: list[LifespanFactory] = field(default_factory=list)
    _zap: list[tuple[str, Any, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.prefix = self.prefix or f"/v1/{self.name}"

    def routes(self, routes: Sequence[BaseRoute]) -> None:
        """Register routes relative to this subsystem's prefix (`/v1/<name>`)."""
        self._routes.extend(routes)

    def well_known(self, routes: Sequence[BaseRoute]) -> None:
        """Register absolute paths a standard requires (e.g. `/.well-known/jwks`)."""
        for r in routes:
            path = getattr(r, "path", "")
            if not path.startswith("/"):
                raise ConfigError(f"{self.name}: well-known route '{path}' must be absolute")
        self._well_known.extend(routes)

    def admin_routes(self, routes: Sequence[BaseRoute]) -> None:
        """Register routes on the admin listener, under this subsystem's prefix."""
        self._admin.extend(routes)

    def middleware(self, cls: Any, **options: Any) -> None:
        """Middleware that wraps only this subsystem's routes."""
        self._middleware.append(Middleware(cls, **options))

    def edge(self, cls: Any, **options: Any) -> None:
        """Middleware around the whole public and admin apps: for edge concerns (identity)."""
        self._edge.append(Middleware(cls, **options))

    def lifespan(self, factory: LifespanFactory) -> None:
        """An async context manager entered at startup and exited, in reverse, at shutdown."""
        self._lifespans.append(factory)

    def provide(self, client: object) -> None:
        """Register this subsystem's in-process client, the one Deps hands to the others."""
        self.deps.client(self.name)._provide(client)

    def module(self, spec: str, runtime: str, directory: Any, *, export: str | None = None,
               policy: str = "authenticated") -> None:
        """Serve a WebAssembly module as a route: `app.module("POST /v1/<name>/x", "wasm", dir)`."""
        method, path = spec.strip().partition(" ")[::2]
        path = path.strip()
        if path.startswith("/v1/"):
            if not path.startswith(self.prefix + "/"):
                raise ConfigError(f"{self.name}: module route {path} is outside {self.prefix}")
            path = path[len(self.prefix):]
        self._routes.append(self.deps.extensions.route(f"{method} {path}", runtime, directory,
                                                       export=export, policy=policy))

    def zap_service(self, methods: Any, impl: object, *, service: str | None = None) -> None:
        """Serve `impl` over ZAP RPC with a generated dispatch table."""
        self._zap.append((service or self.name, methods, impl))


def _flatten(routes: Sequence[BaseRoute], prefix: str) -> list[tuple[str, BaseRoute]]:
    out: list[tuple[str, BaseRoute]] = []
    for r in routes:
        if isinstance(r, Mount):
            out.extend(_flatten(r.routes, prefix + r.path))
        else:
            out.append((prefix + getattr(r, "path", ""), r))
    return out


def _entries(subsystem: str, listener: str, prefix: str,
             routes: Sequence[BaseRoute]) -> list[RouteEntry]:
    entries = []
    for path, r in _flatten(routes, prefix):
        methods = frozenset(getattr(r, "methods", None) or {"*"})
        policy = r.policy if isinstance(r, PolicyRoute) else "authenticated"
        if isinstance(r, PolicyRoute):
            r.subsystem, r.full_path = subsystem, path
        elif isinstance(r, Route) and not isinstance(r, PolicyRoute):
            raise ConfigError(f"{subsystem}: route {path} must be declared with "
                              "hanzocloud.routing.route(...) so it carries a policy")
        entries.append(RouteEntry(subsystem, listener, path, methods, policy))
    return entries


def compile_table(points: Sequence[MountPoint], host_routes: Sequence[BaseRoute],
                  host_admin: Sequence[BaseRoute] = ()) -> list[RouteEntry]:
    """Every route of every listener; raises ConfigError on the first collision."""
    table = _entries(HOST, "public", "", host_routes) + _entries(HOST, "admin", "", host_admin)
    for p in points:
        table += _entries(p.name, "public", p.prefix, p._routes)
        table += _entries(p.name, "public", "", p._well_known)
        table += _entries(p.name, "admin", p.prefix, p._admin)
    prefixes = {p.prefix: p.name for p in points}
    seen: dict[tuple[str, str], list[RouteEntry]] = {}
    for entry in table:
        for prefix, owner in prefixes.items():
            inside = entry.path == prefix or entry.path.startswith(prefix + "/")
            if inside and owner != entry.subsystem:
                raise ConfigError(
                    f"route collision: subsystem '{entry.subsystem}' claims {entry.path}, "
                    f"inside the prefix {prefix} of subsystem '{owner}'"
                )
        for other in seen.get((entry.listener, entry.shape), []):
            overlap = entry.methods & other.methods or "*" in entry.methods | other.methods
            if overlap:
                methods = ",".join(sorted(entry.methods & other.methods or entry.methods))
                raise ConfigError(
                    f"route collision: subsystems '{other.subsystem}' and '{entry.subsystem}' "
                    f"both claim {methods} {entry.path}"
                )
        seen.setdefault((entry.listener, entry.shape), []).append(entry)
    return table
