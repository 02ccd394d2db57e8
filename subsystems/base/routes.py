"""The base API's routes, as data: PocketBase's paths under /v1/base."""

from __future__ import annotations

from starlette.routing import BaseRoute

from hanzocloud.routing import route
from subsystems.base.handlers import Handlers

COLLECTION = "/api/collections/{collection}"
RECORDS = COLLECTION + "/records"


def routes(h: Handlers) -> list[BaseRoute]:
    """Every public route of base; collection management needs an org admin or owner."""
    return [
        route("/api/health", h.health, policy="public"),
        route("/api/collections", h.list_collections, policy="role:admin"),
        route("/api/collections", h.create_collection, methods=["POST"], policy="role:admin"),
        route(COLLECTION, h.view_collection, policy="role:admin"),
        route(COLLECTION, h.update_collection, methods=["PATCH"], policy="role:admin"),
        route(COLLECTION, h.delete_collection, methods=["DELETE"], policy="role:admin"),
        route(RECORDS, h.list_records),
        route(RECORDS, h.create_record, methods=["POST"]),
        route(RECORDS + "/{id}", h.view_record),
        route(RECORDS + "/{id}", h.update_record, methods=["PATCH"]),
        route(RECORDS + "/{id}", h.delete_record, methods=["DELETE"]),
        route("/api/batch", h.batch, methods=["POST"]),
        # The SDK's EventSource sends no Authorization header: the stream is bound to an
        # identity by its first (authenticated) subscription request instead.
        route("/api/realtime", h.realtime_connect, policy="public"),
        route("/api/realtime", h.realtime_subscribe, methods=["POST"]),
    ]
