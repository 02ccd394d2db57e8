"""The mount point each subsystem's `mount(app, deps)` receives, and the compiled route table.

A subsystem registers everything through its MountPoint: routes under its one prefix, the few
absolute paths a standard requires, admin routes, scoped middleware, its lifespan and its
in-process client. The host compiles the whole table at startup and refuses to start on a
collision, naming both claimants: two subsystems collide when one request (path, method,
listener) could match a route or mount of each, or a route of one could match inside the
other's prefix. Parameters count: `{x}` matches any one segment, `{x:path}` and a mount the rest.
"""

from __future__ import annotations

import functools
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
_TAIL = re.compile(r"\{[^}]*:path\}")
HOST = "host"
MOUNT = "mount"  # the policy of a mount's claim: the mounted app answers for its own paths


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


def _mounts(subsystem: str, listener: str, prefix: str,
            routes: Sequence[BaseRoute]) -> list[RouteEntry]:
    """One claim per Mount: Starlette hands it every path under it, whatever its app serves."""
    out: list[RouteEntry] = []
    for r in routes:
        if isinstance(r, Mount):
            out.append(RouteEntry(subsystem, listener, f"{prefix}{r.path}/{{path:path}}",
                                  frozenset({"*"}), MOUNT))
            out += _mounts(subsystem, listener, prefix + r.path, r.routes)
    return out


@functools.cache
def _segments(path: str) -> tuple[tuple[str | None, ...], bool]:
    """A path template as segments (None for a parameter), and whether a `:path` parameter
    takes the rest. A trailing slash is ignored: Starlette may redirect one to the other."""
    out: list[str | None] = []
    for segment in path.strip("/").split("/") if path.strip("/") else []:
        if _TAIL.search(segment):
            return tuple(out), True
        out.append(None if _PARAM.search(segment) else segment)
    return tuple(out), False


def could_overlap(a: str, b: str) -> bool:
    """Whether some request path could match both path templates."""
    (first, first_rest), (second, second_rest) = _segments(a), _segments(b)
    if any(x is not None and y is not None and x != y for x, y in zip(first, second, strict=False)):
        return False
    if len(first) == len(second):
        return True
    return first_rest if len(first) < len(second) else second_rest


def _collide(entry: RouteEntry, other: RouteEntry) -> bool:
    if entry.listener != other.listener:
        return False
    if not (entry.methods & other.methods or "*" in entry.methods | other.methods):
        return False
    if entry.subsystem == other.subsystem:  # its own routes: only an exact twin is an error
        return entry.shape == other.shape and MOUNT not in (entry.policy, other.policy)
    return could_overlap(entry.path, other.path)


def compile_table(points: Sequence[MountPoint], host_routes: Sequence[BaseRoute],
                  host_admin: Sequence[BaseRoute] = ()) -> list[RouteEntry]:
    """Every route of every listener; raises ConfigError on the first collision."""
    sources = [(HOST, "public", "", host_routes), (HOST, "admin", "", host_admin)]
    for p in points:
        sources += [(p.name, "public", p.prefix, p._routes), (p.name, "public", "", p._well_known),
                    (p.name, "admin", p.prefix, p._admin)]
    table: list[RouteEntry] = []
    claims: list[RouteEntry] = []  # the table plus the mounts: what the checks compare
    for source in sources:
        entries = _entries(*source)
        table += entries
        claims += entries + _mounts(*source)
    prefixes = {p.prefix: p.name for p in points}
    for i, entry in enumerate(claims):
        for prefix, owner in prefixes.items():
            if owner != entry.subsystem and could_overlap(entry.path, prefix + "/{path:path}"):
                raise ConfigError(
                    f"route collision: subsystem '{entry.subsystem}' claims {entry.path}, "
                    f"inside the prefix {prefix} of subsystem '{owner}'"
                )
        for other in claims[:i]:
            if _collide(entry, other):
                shared = entry.methods & other.methods or (entry.methods | other.methods) - {"*"}
                methods = ",".join(sorted(shared))
                also = "" if entry.path == other.path else f" (as {entry.path})"
                raise ConfigError(
                    f"route collision: subsystems '{other.subsystem}' and '{entry.subsystem}' "
                    f"both claim {methods} {other.path}{also}"
                )
    return table
