"""`/v1/gateway`: who the gateway thinks you are, your rate-limit state, its own status."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hanzocloud.http import JSONResponse
from hanzocloud.identity import current_identity
from hanzocloud.routing import require_org
from subsystems.gateway.config import CLASSES
from subsystems.gateway.edge import GatewayState


class GatewayHandlers:
    """Introspection of the edge, for callers and operators."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def whoami(self, request: Request) -> Response:
        """The identity minted for this request, and the headers handlers received."""
        identity = current_identity.get()
        minted = {k: v for k, v in request.headers.items()
                  if k in ("x-org-id", "x-user-id", "x-user-email", "x-roles",
                           "x-user-isadmin")}
        return JSONResponse({"org": identity.org, "user": identity.user,
                             "email": identity.email, "roles": list(identity.roles),
                             "isAdmin": identity.is_admin, "headers": minted})

    async def ratelimit(self, _: Request) -> Response:
        """The caller's org buckets, per route class."""
        org = require_org()
        limiter = self.state.limiter
        return JSONResponse({"org": org, "classes": {
            cls: limiter.peek(f"org:{org}", cls) for cls in CLASSES if cls != "anon"}})

    async def status(self, _: Request) -> Response:
        """How the gateway verifies credentials, and its cache and bucket counts."""
        cache = self.state.cache
        return JSONResponse({"mode": self.state.mode, "cacheEntries": len(cache),
                             "cacheHits": cache.hits, "cacheMisses": cache.misses,
                             "buckets": len(self.state.limiter),
                             "revocationWindowSeconds": self.state.config.revocation_window})
