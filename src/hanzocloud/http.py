"""Cross-cutting HTTP concerns: request ids, JSON errors, body limits, access logs, metrics.

`error_response` is the one place where exceptions become HTTP statuses (SPEC §7).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import ipaddress
import itertools
import re
import secrets
import time
from typing import Any

import msgspec
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hanzocloud import metrics
from hanzocloud.errors import (
    CloudError,
    InvalidArgument,
    PayloadTooLarge,
    RetryLater,
    ShuttingDown,
)
from hanzocloud.identity import ANONYMOUS, current_identity, current_request_id

log = structlog.get_logger("hanzocloud.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Headers that middleware inside RequestContext adds to this request's response (the
# gateway's rate-limit and CORS headers). RequestContext appends them when the response
# starts, so such middleware need not wrap `send` itself.
response_headers: contextvars.ContextVar[list[tuple[bytes, bytes]]] = contextvars.ContextVar(
    "response_headers")
_HTTP_CODES = {
    400: "bad_request", 401: "unauthenticated", 403: "permission_denied", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 422: "unprocessable", 429: "rate_limited",
    503: "unavailable",
}
_json = msgspec.json.Encoder()


class JSONResponse(Response):
    """A JSON response encoded with msgspec (fast, and handles bytes/dates the same way)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _json.encode(content)


def error_body(code: str, message: str, *, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The error envelope: `{"error": {"code", "message", "request_id", …details}}`."""
    body: dict[str, Any] = {"code": code, "message": message,
                            "request_id": current_request_id.get()}
    if details:
        body["details"] = details
    return {"error": body}


def error_response(exc: BaseException) -> JSONResponse:
    """Map any exception to its JSON error response; unknown ones become a bare 500."""
    headers: dict[str, str] = {}
    if isinstance(exc, CloudError):
        status, code, message, details = exc.status, exc.code, exc.message, exc.details
        if isinstance(exc, RetryLater):
            headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        code = _HTTP_CODES.get(status, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        details = {}
        headers.update(exc.headers or {})
    else:
        status, code, message, details = 500, "internal", "internal error", {}
    return JSONResponse(error_body(code, message, details=details), status_code=status,
                        headers=headers)


async def http_exception_handler(_: Request, exc: Exception) -> Response:
    """Starlette exception handler for CloudError and HTTPException raised in endpoints."""
    return error_response(exc)


def _route_labels(scope: Scope) -> tuple[str, str]:
    route = scope.get("route")
    subsystem = getattr(route, "subsystem", None) or "host"
    template = getattr(route, "full_path", None) or getattr(route, "path", None) or "unmatched"
    return subsystem, template


# A request id needs to be unique, not secret: a random prefix per process and a counter
# (uuid4 costs a getrandom call per request).
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)
CLIENT_CLOSED = 499  # the status logged for a request whose client left mid-body


def new_request_id() -> str:
    """A fresh request id: 32 hex characters, unique across processes."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


@functools.lru_cache(maxsize=4096)
def _source(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]  # not an address (a unix socket, a proxy's odd value): as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        # One subscriber holds a whole /64: per-address budgets would be endless there.
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def client_source(scope: Scope) -> str:
    """Who a request comes from, for per-client budgets (anonymous rate limits, login
    throttles, stream caps): the client's IPv4 address, or the /64 its IPv6 address lies in.
    The client is the peer, or what a trusted proxy forwarded (`--trusted-proxies`)."""
    client = scope.get("client")
    return _source(client[0]) if client and client[0] else "unknown"


@functools.lru_cache(maxsize=4096)
def _series(subsystem: str, route: str, status: int) -> tuple[Any, Any]:
    # The labelled children of the request metrics: routes are templates, so few.
    return (metrics.REQUESTS.labels(subsystem, route, str(status)),
            metrics.LATENCY.labels(subsystem, route))


class RequestContext:
    """Outermost middleware: request id, identity reset, catch-all errors, logs and metrics."""

    def __init__(self, app: ASGIApp, *, listener: str = "public") -> None:
        self.app = app
        self.listener = listener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if _REQUEST_ID.match(incoming) else new_request_id()
        rid_token = current_request_id.set(request_id)
        id_token = current_identity.set(ANONYMOUS)
        added: list[tuple[bytes, bytes]] = []
        added_token = response_headers.set(added)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                # the message is this response's own: extend it rather than copy it
                message["headers"] = [*message.get("headers", ()), *added,
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except ClientDisconnect:
            # The client went away before its request was read whole: nobody to answer, and
            # nothing went wrong here. Counted and logged as 499, as proxies do.
            status = CLIENT_CLOSED
            log.info("client_disconnected", path=scope.get("path"))
        except asyncio.CancelledError:
            # The server cancels what still runs once its drain time is up (SIGTERM, then
            # --shutdown-timeout). Answered here, and ended here: handed on, uvicorn would
            # log it as a failure and answer a plain-text 500.
            log.warning("request_cut_by_shutdown", path=scope.get("path"))
            if not response_started:
                await error_response(ShuttingDown(
                    "the server stopped before this request finished; retry",
                    retry_after=1))(scope, receive, send_wrapper)
            else:  # a stream (realtime events): ended where it stands, as a whole response
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception as exc:  # noqa: BLE001 - the last line of defence: never a traceback
            if not isinstance(exc, CloudError | HTTPException):
                log.exception("unhandled_error", path=scope.get("path"))
            if response_started:
                raise
            await error_response(exc)(scope, receive, send_wrapper)
        finally:
            duration = time.perf_counter() - started
            subsystem, route = _route_labels(scope)
            identity = current_identity.get()
            counted, timed = _series(subsystem, route, status)
            counted.inc()
            timed.observe(duration)
            client = scope.get("client")
            log.info("request", listener=self.listener, method=scope.get("method"),
                     route=route, subsystem=subsystem, status=status, org=identity.org or None,
                     client=client[0] if client else None,
                     duration_ms=round(duration * 1000, 3))
            response_headers.reset(added_token)
            current_identity.reset(id_token)
            current_request_id.reset(rid_token)


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413: by Content-Length first, else as they stream."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise InvalidArgument("malformed Content-Length header") from None
                if declared > self.limit:
                    raise PayloadTooLarge(f"request body over the {self.limit}-byte limit")
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise PayloadTooLarge(f"request body over the {self.limit}-byte limit")
            return message

        await self.app(scope, limited_receive, send)
