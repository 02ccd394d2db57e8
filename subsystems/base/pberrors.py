"""Errors in PocketBase's shape, for base's routes only (mounted with `app.middleware`).

The PocketBase SDK reads `status`/`message`/`data` from an error body, where `data` maps a
field name to `{code, message}`; hanzocloud clients read `error.code`/`error.message`. Base's
error bodies carry both, so either kind of client understands them:

    {"status": 400, "code": 400, "message": "...", "data": {"title": {...}},
     "error": {"code": "invalid_argument", "message": "...", "request_id": "..."}}
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hanzocloud.errors import CloudError
from hanzocloud.http import JSONResponse, error_response
from subsystems.base.store import REQUEST_SCOPE


def pocketbase_error(exc: BaseException) -> JSONResponse:
    """The host's error response for `exc`, with PocketBase's keys added alongside."""
    response = error_response(exc)
    envelope: dict[str, Any] = _decode(response.body)
    error = envelope.get("error", {})
    data: Any = {}
    if isinstance(exc, CloudError):
        data = exc.details.get("fields", {})
    body = {"status": response.status_code, "code": response.status_code,
            "message": error.get("message", ""), "data": data, "error": error}
    headers = {k: v for k, v in response.headers.items()
               if k.lower() not in ("content-length", "content-type")}
    return JSONResponse(body, status_code=response.status_code, headers=headers)


def _decode(raw: bytes | memoryview) -> dict[str, Any]:
    value = msgspec.json.decode(bytes(raw))
    return value if isinstance(value, dict) else {}


async def _handler(_: Request, exc: Exception) -> JSONResponse:
    return pocketbase_error(exc)


class PocketBaseErrors:
    """Scoped middleware: base's routes answer errors in the combined shape above, and the
    request's scope is `store.REQUEST_SCOPE` while they run (for `@request.headers.*`,
    `@request.query.*`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Route handlers look their exception handlers up in the scope: override ours there.
        # In place, because the host reads what routing stores in this same scope (the route).
        handlers, status_handlers = scope.get("starlette.exception_handlers", ({}, {}))
        scope["starlette.exception_handlers"] = (
            {**handlers, CloudError: _handler, HTTPException: _handler}, status_handlers)
        started = False
        serving = REQUEST_SCOPE.set(scope)  # for rules reading @request.headers / .query

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except (CloudError, HTTPException) as exc:  # e.g. no route matched inside /v1/base
            if started:
                raise
            await pocketbase_error(exc)(scope, receive, send)
        finally:
            REQUEST_SCOPE.reset(serving)
