"""Helpers for the base tests: a small API wrapper per identity and schema builders."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from cloud import Cloud

API = "/v1/base/api"


@dataclass
class Api:
    """The base API as one identity sees it."""

    client: httpx.AsyncClient
    headers: dict[str, str]

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(API + path, headers=self.headers, params=params)

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.client.post(API + path, headers=self.headers, json=body)

    async def patch(self, path: str, body: Any) -> httpx.Response:
        return await self.client.patch(API + path, headers=self.headers, json=body)

    async def delete(self, path: str) -> httpx.Response:
        return await self.client.delete(API + path, headers=self.headers)

    async def collection(self, name: str, fields: Sequence[dict[str, Any]],
                         **extra: Any) -> dict[str, Any]:
        """Create a collection (open rules unless given) and return its JSON."""
        rules = {k: "" for k in ("listRule", "viewRule", "createRule", "updateRule",
                                 "deleteRule")}
        r = await self.post("/collections", {"name": name, "fields": list(fields),
                                             **rules, **extra})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def create(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a record that must succeed."""
        r = await self.post(f"/collections/{collection}/records", body)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def items(self, collection: str, **params: Any) -> list[dict[str, Any]]:
        """The items of one list request that must succeed."""
        r = await self.get(f"/collections/{collection}/records", **params)
        assert r.status_code == 200, r.text
        return r.json()["items"]  # type: ignore[no-any-return]


async def api_for(cloud: Cloud, *, org: str = "acme", user: str = "alice",
                  roles: Sequence[str] = ("owner",), admin: bool = False) -> Api:
    """An Api with credentials for that user (through the one place tests get them)."""
    headers = await cloud.headers(org=org, user=user, roles=roles, admin=admin)
    return Api(cloud.client, headers)


def assert_error(r: httpx.Response, status: int) -> dict[str, Any]:
    """Check an error has `status` and both the PocketBase and the hanzocloud shapes."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and body["code"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["data"], dict)
    assert body["error"]["message"] == body["message"]
    assert "Traceback" not in r.text
    return body  # type: ignore[no-any-return]


class SseStream:
    """An SSE response read straight from the ASGI app (httpx's ASGI transport buffers)."""

    def __init__(self, app: Any, path: str, headers: dict[str, str]) -> None:
        self.app = app
        self.scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "server": ("cloud.test", 80),
            "client": ("127.0.0.1", 40000),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
        self.status = 0
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.buffer = b""
        self.task: asyncio.Task[None] | None = None
        self._sent_request = False

    async def _receive(self) -> dict[str, Any]:
        if not self._sent_request:
            self._sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.closed.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body" and message.get("body"):
            await self.chunks.put(message["body"])

    async def __aenter__(self) -> SseStream:
        self.task = asyncio.create_task(self.app(self.scope, self._receive, self._send))
        return self

    async def __aexit__(self, *_: Any) -> None:
        self.closed.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)

    async def event(self, timeout: float = 5.0) -> tuple[str, str, Any]:
        """The next event as (id, name, decoded data); comments are skipped."""
        while True:
            while b"\n\n" in self.buffer:
                frame, self.buffer = self.buffer.split(b"\n\n", 1)
                fields = dict(line.split(":", 1) for line in frame.decode().splitlines()
                              if line and not line.startswith(":"))
                if fields:
                    return fields.get("id", ""), fields.get("event", ""), json.loads(
                        fields.get("data", "null"))
            self.buffer += await asyncio.wait_for(self.chunks.get(), timeout)

    async def events_until_quiet(self, quiet: float = 0.5) -> list[tuple[str, str, Any]]:
        """Every event that arrives before `quiet` seconds pass without one."""
        out = []
        while True:
            try:
                out.append(await self.event(timeout=quiet))
            except TimeoutError:
                return out
