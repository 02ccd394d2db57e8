"""Helpers for the extension tests: manifests on disk, a fake gateway, apps, a live server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from hanzocloud.errors import CloudError
from hanzocloud.ext import ExtensionRuntime, LoadedModule, module_endpoint
from hanzocloud.identity import Identity, current_identity

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "ext"
GUESTS = Path(__file__).resolve().parent / "guests"

GuestBuilder = Callable[..., Path]
RuntimeFactory = Callable[..., ExtensionRuntime]


def write_extension(directory: Path, *, name: str, wasm: bytes | bytearray,
                    exports: Sequence[str],
                    capabilities: Sequence[str] = (), version: str = "1.0.0",
                    runtime: str = "wasm") -> Path:
    """Write a manifest and module into `directory` and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.wasm").write_bytes(bytes(wasm))
    manifest: dict[str, Any] = {"name": name, "version": version, "runtime": runtime,
                                "module": f"{name}.wasm", "exports": list(exports)}
    if capabilities:
        manifest["capabilities"] = list(capabilities)
    (directory / "extension.json").write_text(json.dumps(manifest))
    return directory


class FakeGateway:
    """Stands in for the gateway: mints the identity from x-test-* headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        identity = Identity(org=headers.get("x-test-org", ""),
                            user=headers.get("x-test-user", ""),
                            email=headers.get("x-test-email", ""),
                            request_id=headers.get("x-request-id", "req-test"))
        token = current_identity.set(identity)
        try:
            await self.app(scope, receive, send)
        finally:
            current_identity.reset(token)


async def cloud_error(request: Request, exc: Exception) -> Response:
    """The SPEC §7 error body."""
    assert isinstance(exc, CloudError)
    return JSONResponse({"error": {"code": exc.code, "message": exc.message,
                                   "request_id": current_identity.get().request_id,
                                   "details": exc.details}}, status_code=exc.status)


def build_app(runtime: ExtensionRuntime,
              routes: Sequence[tuple[str, LoadedModule, str, Sequence[str]]]) -> Starlette:
    """A Starlette app serving each (path, module, export, methods) as a route."""
    app = Starlette(
        routes=[Route(path, module_endpoint(runtime, module, export), methods=list(methods))
                for path, module, export, methods in routes],
        exception_handlers={CloudError: cloud_error},
    )
    app.add_middleware(FakeGateway)
    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A uvicorn server on a free port, in a background thread."""

    def __init__(self, app: ASGIApp) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
