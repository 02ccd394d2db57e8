"""Serve an extension export as a Starlette route: request -> envelope -> guest -> Response."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from hanzocloud.errors import PayloadTooLarge, Unauthenticated
from hanzocloud.ext.errors import ExtensionFailed, ExtensionNotFound
from hanzocloud.ext.fetch import HEADER_NAME
from hanzocloud.ext.instance import LoadedModule
from hanzocloud.ext.runtime import ExtensionRuntime
from hanzocloud.identity import Identity, current_identity
from hanzocloud.routing import decode_json

Endpoint = Callable[[Request], Awaitable[Response]]

# Credentials never reach guest code; the identity arrives as org/user/userEmail instead.
HIDDEN_REQUEST_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
# Framing is the server's business; a guest cannot set these.
HOST_MANAGED_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
# What HTTP allows in a field value: visible ASCII, space, tab and the bytes 0x80-0xff
# (sent as Latin-1, so UTF-8 text a client sent passes back unchanged).
_VALUE_RE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def build_envelope(request: Request, identity: Identity, *, max_body_bytes: int
                         ) -> dict[str, Any]:
    """The JSON envelope a guest sees for this request (see docs/extensions.md)."""
    raw = await _read_body(request, max_body_bytes)
    body: Any = None
    if raw:
        if _is_json(request.headers.get("content-type", "")):
            body = decode_json(raw)
        else:
            body = raw.decode("utf-8", errors="replace")
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        if name in HIDDEN_REQUEST_HEADERS:
            continue
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return {
        "method": request.method,
        "path": request.url.path,
        "params": {k: str(v) for k, v in request.path_params.items()},
        "query": dict(request.query_params),
        "headers": headers,
        "body": body,
        "org": identity.org,
        "user": identity.user,
        "userEmail": identity.email,
    }


def build_response(module: LoadedModule, export: str, output: dict[str, Any]) -> Response:
    """Turn a guest's `{status, headers, body}` into a Response; ExtensionFailed if malformed."""
    ref = module.ref

    def bad(reason: str) -> ExtensionFailed:
        return ExtensionFailed(f"extension {ref} export {export!r}: invalid response: {reason}",
                               module=ref, export=export, cause="invalid_response")

    unknown = sorted(set(output) - {"status", "headers", "body"})
    if unknown:
        raise bad(f"unknown field {unknown[0]!r} (expected status, headers, body)")
    status = output.get("status", 200)
    # A 1xx is not a final answer: sent as one, it leaves the client waiting for the real one.
    if type(status) is not int or not 200 <= status <= 599:
        raise bad(f"status must be an integer from 200 to 599, got {status!r}")
    headers = output.get("headers") or {}
    if not isinstance(headers, dict):
        raise bad("headers must be an object of strings")
    clean: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(value, str) or not HEADER_NAME.fullmatch(name):
            raise bad(f"header {name!r} must have a token name and a string value")
        if not _VALUE_RE.fullmatch(value):
            raise bad(f"header {name!r} contains a control character or a character "
                      f"outside Latin-1")
        if name.lower() not in HOST_MANAGED_RESPONSE_HEADERS:
            clean[name.lower()] = value.strip(" \t")
    body = output.get("body")
    content: bytes
    if body is None or status in (204, 304):
        content, media_type = b"", None
    elif isinstance(body, str):
        content, media_type = body.encode(), "text/plain; charset=utf-8"
    else:
        content, media_type = msgspec.json.encode(body), "application/json"
    return Response(content, status_code=status, headers=clean, media_type=media_type)


def module_endpoint(runtime: ExtensionRuntime, module: LoadedModule, export: str) -> Endpoint:
    """A Starlette endpoint that serves `export` of `module` for the caller's org."""
    if export not in module.exports:
        raise ExtensionNotFound(f"extension {module.ref} has no export {export!r} "
                                f"(exports: {', '.join(module.exports)})")
    limit = runtime.limits.max_input_bytes

    async def endpoint(request: Request) -> Response:
        identity = current_identity.get()
        if not identity.org:
            raise Unauthenticated("extension routes need an authenticated caller with an org")
        envelope = await build_envelope(request, identity, max_body_bytes=limit)
        output = await runtime.call(module, export, envelope, org=identity.org)
        return build_response(module, export, output)

    endpoint.__name__ = f"ext_{module.manifest.name.replace('-', '_')}_{export}"
    endpoint.__qualname__ = endpoint.__name__
    return endpoint
