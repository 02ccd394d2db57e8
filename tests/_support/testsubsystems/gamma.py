"""A test subsystem claiming the same well-known path as beta."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hanzocloud.http import JSONResponse
from hanzocloud.routing import route


def mount(app: Any, deps: Any) -> None:
    async def thing(_: Request) -> Response:
        """Gamma's thing."""
        return JSONResponse({"owner": "gamma"})

    app.well_known([route("/.well-known/thing", thing, policy="public")])
