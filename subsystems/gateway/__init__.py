"""gateway: the edge — credentials become a verified identity, rate limits, CORS."""

from __future__ import annotations

from hanzocloud.deps import Deps
from hanzocloud.mount import MountPoint
from subsystems.gateway.config import load_config
from subsystems.gateway.cors import CorsPolicy, deployment_origins
from subsystems.gateway.edge import GatewayEdge, GatewayState
from subsystems.gateway.handlers import GatewayHandlers
from subsystems.gateway.routes import admin_routes, public_routes
from subsystems.gateway.verify import RemoteJwks

REVOKED = "iam.credential.revoked"


def mount(app: MountPoint, deps: Deps) -> None:
    """Install the edge middleware on both listeners and the `/v1/gateway` routes."""
    config = load_config()
    settings = deps.settings
    origins = deployment_origins(deps.brand.cors_origins,
                                 dict.fromkeys([settings.domain, deps.brand.domain]),
                                 dev=settings.dev)
    state = GatewayState(deps, config, CorsPolicy(origins))
    if deps.iam.mode == "disabled" and settings.iam_issuer:
        state.jwks = RemoteJwks(settings.iam_issuer, config.audience or
                                settings.iam_issuer.rstrip("/"), ttl=config.jwks_ttl,
                                min_refetch=config.jwks_min_refetch)
    if REVOKED in deps.events.declared:  # iam runs here: drop cached verifications at once
        deps.events.on(REVOKED, state.on_revoked)
    app.edge(GatewayEdge, state=state)
    handlers = GatewayHandlers(state)
    app.routes(public_routes(handlers))
    app.admin_routes(admin_routes(handlers))
