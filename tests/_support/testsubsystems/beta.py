"""A test subsystem claiming one well-known path (to collide with gamma)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hanzocloud.http import JSONResponse
from hanzocloud.routing import route
from testsubsystems.alpha import EVENTS


def mount(app: Any, deps: Any) -> None:
    async def thing(_: Request) -> Response:
        """Beta's thing."""
        return JSONResponse({"owner": "beta"})

    app.well_known([route("/.well-known/thing", thing, policy="public")])

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        EVENTS.append("beta:start")
        yield
        EVENTS.append("beta:stop")

    app.lifespan(lifespan)
