"""The gateway's own routes, as data."""

from __future__ import annotations

from starlette.routing import BaseRoute

from hanzocloud.routing import route
from subsystems.gateway.handlers import GatewayHandlers


def public_routes(h: GatewayHandlers) -> list[BaseRoute]:
    """Everything under `/v1/gateway`."""
    return [
        route("/whoami", h.whoami, policy="authenticated"),
        route("/ratelimit", h.ratelimit, policy="authenticated"),
    ]


def admin_routes(h: GatewayHandlers) -> list[BaseRoute]:
    """On the admin listener."""
    return [route("/status", h.status, policy="admin")]
