"""Declarative routes with an access policy each (public, authenticated, role:<r>, admin).

A subsystem lists its routes as data in `routes.py` with `route(...)`; the host wraps each
endpoint so the policy is checked against the identity the gateway minted. A route that
declares no policy is `authenticated`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import Receive, Scope, Send

from hanzocloud.errors import (
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    UnsupportedMediaType,
)
from hanzocloud.identity import Identity, current_identity

Endpoint = Callable[[Request], Awaitable[Response]]
ROLE_ORDER = ("viewer", "editor", "admin", "owner")
_POLICY = re.compile(r"^(public|authenticated|admin|role:[a-z][a-z0-9_-]{0,62})$")


def check_policy(policy: str) -> str:
    """Validate a policy string at declaration time."""
    if not _POLICY.match(policy):
        raise ValueError(f"bad route policy '{policy}': use public, authenticated, admin "
                         "or role:<name>")
    return policy


def has_role(identity: Identity, role: str) -> bool:
    """Whether the identity holds `role`; built-in roles rank owner > admin > editor > viewer."""
    if identity.is_admin or role in identity.roles:
        return True
    if role in ROLE_ORDER:
        need = ROLE_ORDER.index(role)
        return any(r in ROLE_ORDER and ROLE_ORDER.index(r) >= need for r in identity.roles)
    return False


def enforce(policy: str, identity: Identity) -> None:
    """Raise 401/403 unless `identity` satisfies `policy`."""
    if policy == "public":
        return
    if not identity.authenticated:
        raise Unauthenticated("authentication required: send a bearer token or an API key")
    if policy == "authenticated":
        return
    if policy == "admin":
        if not identity.is_admin:
            raise PermissionDenied("platform admin only")
        return
    role = policy.removeprefix("role:")
    if not has_role(identity, role):
        raise PermissionDenied(f"requires role '{role}'")


class PolicyRoute(Route):
    """A Starlette Route that carries its policy, subsystem and full path for the host."""

    def __init__(self, path: str, endpoint: Endpoint, *, methods: Sequence[str],
                 policy: str, name: str | None, summary: str | None,
                 include_in_schema: bool = True, openapi: dict[str, Any] | None = None) -> None:
        self.policy = check_policy(policy)
        self.summary = summary or (endpoint.__doc__ or "").strip().split("\n")[0]
        self.openapi_extra = openapi or {}
        self.subsystem = "host"
        self.full_path = path
        self.inner = endpoint

        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            enforce(self.policy, current_identity.get())
            return await endpoint(request)

        super().__init__(path, guarded, methods=list(methods), name=name,
                         include_in_schema=include_in_schema)


def route(path: str, endpoint: Endpoint, *, methods: Sequence[str] = ("GET",),
          policy: str = "authenticated", name: str | None = None, summary: str | None = None,
          include_in_schema: bool = True, openapi: dict[str, Any] | None = None) -> PolicyRoute:
    """Declare one route: path relative to the subsystem prefix, methods and access policy."""
    return PolicyRoute(path, endpoint, methods=methods, policy=policy, name=name,
                       summary=summary, include_in_schema=include_in_schema, openapi=openapi)


def require_org() -> str:
    """The caller's org (tenant) from the minted identity; 401 when there is none."""
    identity = current_identity.get()
    if not identity.org:
        raise Unauthenticated("this route needs an identity that belongs to an org")
    return identity.org


async def json_body(request: Request) -> Any:
    """Parse the request body as JSON, with a 415/400 that says what was wrong."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType(f"expected application/json, got {ctype}")
    raw = await request.body()
    if not raw:
        raise InvalidArgument("request body is empty; expected JSON")
    return decode_json(raw)


def decode_json(raw: bytes | str, what: str = "request body") -> Any:
    """JSON from a client, or a 400 saying what was wrong with it: not JSON, or nested
    deeper than the decoder goes (about a thousand levels, which it refuses by raising
    RecursionError rather than a decode error)."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from None
    except UnicodeDecodeError:  # a string whose bytes are not UTF-8
        raise InvalidArgument(f"{what} is not valid JSON: a string is not UTF-8") from None
    except RecursionError:
        raise InvalidArgument(f"{what} is nested too deeply") from None


class _Node:
    """One level of the route index: literal segments, a one-segment parameter, and the
    routes that end here or take everything after it (a mount, a `:path` parameter)."""

    __slots__ = ("literal", "param", "ends", "tails")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.ends: list[int] = []
        self.tails: list[int] = []


def _template(r: BaseRoute) -> list[str] | None:
    """A route's path template as segments, ending in a `{…:path}` tail for a mount; None
    for a route without one (a Host), which is then tried on every path."""
    if isinstance(r, Mount):
        return [*r.path.split("/")[1:], "{path:path}"]
    path = getattr(r, "path", None)
    return path.split("/")[1:] if isinstance(path, str) and path.startswith("/") else None


def route_path(scope: Scope) -> str:
    """The path routes match against: `path` less the `root_path` that mounts above have
    consumed. Starlette's routes compute it the same way; the router tests hold an
    IndexedRouter to a plain Router's outcomes, mounted and not."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        if path == root:
            return ""
        if path[len(root)] == "/":
            return path[len(root):]
    return path


class IndexedRouter(Router):
    """A Router that tries only the routes whose path template can fit the request path.

    Starlette's Router tries every route in turn: with a few dozen routes, matching costs
    more than a small endpoint. Here the templates are indexed by segment (literal text,
    one-segment parameters, `:path` tails), and a request is matched against the few routes
    that could take it, still in declaration order. When none of them matches fully, the
    plain Router runs (405 for another method, slash redirects, 404), so the outcome is
    always the one the declaration order gives.
    """

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        super().__init__(routes=list(routes))
        self._indexed: tuple[int, _Node, list[int]] = (-1, _Node(), [])

    def _index(self) -> tuple[_Node, list[int]]:
        count, root, anywhere = self._indexed
        if count != len(self.routes):  # routes added after construction: index again
            root, anywhere = _Node(), []
            for position, r in enumerate(self.routes):
                segments = _template(r)
                if segments is None:
                    anywhere.append(position)
                    continue
                node = root
                for segment in segments:
                    if ":path}" in segment:
                        node.tails.append(position)
                        break
                    if "{" in segment:
                        node.param = node.param or _Node()
                        node = node.param
                    else:
                        node = node.literal.setdefault(segment, _Node())
                else:
                    node.ends.append(position)
            self._indexed = (len(self.routes), root, anywhere)
        return root, anywhere

    def candidates(self, path: str) -> list[BaseRoute]:
        """The routes that may match `path` (a superset), in declaration order."""
        root, anywhere = self._index()
        segments = path.split("/")[1:]
        found = list(anywhere)
        level = [root]
        for segment in segments:
            following: list[_Node] = []
            for node in level:
                found += node.tails
                if (child := node.literal.get(segment)) is not None:
                    following.append(child)
                if node.param is not None and segment:
                    following.append(node.param)
            level = following
            if not level:
                break
        for node in level:
            found += node.tails + node.ends
        found.sort()
        return [self.routes[i] for i in found]

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            methods: set[str] = set()  # of the routes whose path matched but method did not
            partial = 0
            for r in self.candidates(route_path(scope)):
                match, child_scope = r.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = r
                    scope.update(child_scope)
                    await r.handle(scope, receive, send)
                    return
                if match is Match.PARTIAL and isinstance(r, Route):
                    partial += 1
                    methods |= r.methods or set()
            if partial > 1 and "app" in scope:
                # Starlette answers from the first of them alone; `Allow` lists every method
                # the path takes (one route per method is how routes are declared here).
                raise HTTPException(405, headers={"Allow": ", ".join(sorted(methods))})
        await super().app(scope, receive, send)
