"""A test subsystem with public, authenticated, role and tenant-storage routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response

from hanzocloud.http import JSONResponse
from hanzocloud.identity import current_identity
from hanzocloud.routing import json_body, require_org, route

EVENTS: list[str] = []


def mount(app: Any, deps: Any) -> None:
    async def ping(_: Request) -> Response:
        """Answer pong."""
        return JSONResponse({"pong": True})

    async def slow(request: Request) -> Response:
        """Sleep, then answer: for drain tests."""
        await asyncio.sleep(float(request.query_params.get("seconds", "1")))
        return JSONResponse({"slept": True})

    async def whoami(_: Request) -> Response:
        """The minted identity."""
        i = current_identity.get()
        return JSONResponse({"org": i.org, "user": i.user, "roles": list(i.roles)})

    async def add_note(request: Request) -> Response:
        """Store a note in the caller's tenant database."""
        org = require_org()
        body = await json_body(request)
        async with deps.tenants.session(org, "alpha") as s:
            await s.execute(text("CREATE TABLE IF NOT EXISTS notes (body TEXT NOT NULL)"))
            await s.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": body["body"]})
            await s.commit()
        return JSONResponse({"ok": True}, status_code=201)

    async def list_notes(_: Request) -> Response:
        """The caller's notes."""
        org = require_org()
        async with deps.tenants.session(org, "alpha") as s:
            await s.execute(text("CREATE TABLE IF NOT EXISTS notes (body TEXT NOT NULL)"))
            rows = (await s.execute(text("SELECT body FROM notes ORDER BY rowid"))).all()
        return JSONResponse({"items": [r[0] for r in rows]})

    async def needs_kms(_: Request) -> Response:
        """Calls the kms client, which is disabled in tests."""
        value = await deps.kms.get_secret("kms://x/y/z")
        return JSONResponse({"value": value})

    async def boom(_: Request) -> Response:
        """Raises an unexpected error."""
        raise RuntimeError("secret internal detail")

    async def editors(_: Request) -> Response:
        """Only editors and above."""
        return JSONResponse({"ok": True})

    app.routes([
        route("/ping", ping, policy="public"),
        route("/slow", slow, policy="public"),
        route("/whoami", whoami),
        route("/notes", add_note, methods=["POST"], policy="role:editor"),
        route("/notes", list_notes, policy="authenticated"),
        route("/needs-kms", needs_kms),
        route("/boom", boom, policy="public"),
        route("/editors", editors, policy="role:editor"),
    ])
    app.admin_routes([route("/stats", ping, policy="admin")])
    echo = Path(__file__).resolve().parents[3] / "examples" / "ext" / "echo-wat"
    app.module("POST /v1/alpha/echo", "wasm", echo, export="handle")

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        EVENTS.append("alpha:start")
        yield
        EVENTS.append("alpha:stop")

    app.lifespan(lifespan)
