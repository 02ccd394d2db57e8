"""Helpers for kms tests: call /v1/kms as a given user, base64, error assertions."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from cloud import Cloud


@dataclass
class Kms:
    """Calls /v1/kms as a user of an org holding one role."""

    cloud: Cloud
    org: str = "acme"
    role: str = "owner"
    user: str = "alice"

    def as_(self, *, org: str | None = None, role: str | None = None,
            user: str | None = None) -> Kms:
        return Kms(self.cloud, org or self.org, role or self.role, user or self.user)

    async def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = await self.cloud.headers(org=self.org, user=self.user, roles=[self.role])
        headers.update(kw.pop("headers", None) or {})
        return await self.cloud.client.request(method, f"/v1/kms{path}", headers=headers, **kw)

    async def ok(self, method: str, path: str, **kw: Any) -> Any:
        """Call and require a 2xx; returns the JSON body (None for 204)."""
        r = await self.call(method, path, **kw)
        assert r.is_success, (r.status_code, r.text)
        return None if r.status_code == 204 else r.json()


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is the JSON error envelope with this status (and code)."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["message"] and error["request_id"]
    if code is not None:
        assert error["code"] == code, error
    return error


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free local port in this loop; yields its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
