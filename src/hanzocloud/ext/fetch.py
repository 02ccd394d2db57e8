"""Outbound HTTP for the `http` capability: allow-listed hosts, bounded time and size."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterable
from typing import Any

import httpx

from hanzocloud.ext.limits import Limits

ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# Routing and framing are the host's business: with these a guest could reach another
# virtual host than the allow-listed one, or smuggle a second request into the connection.
FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                               "keep-alive", "proxy-connection", "te", "trailer", "upgrade"})
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110 §5.1)
_VALUE_RE = re.compile(r"[\t\x20-\x7e]*")


def _header_problem(headers: Any) -> str | None:
    """Why the guest's request headers cannot be sent, or None."""
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        return "headers must be an object of strings"
    for name, value in headers.items():
        if not HEADER_NAME.fullmatch(name):
            return f"header name {name!r} is not an HTTP token"
        if name.lower() in FORBIDDEN_HEADERS:
            return f"header {name!r} is set by the host and cannot be sent"
        if not _VALUE_RE.fullmatch(value):
            return f"header {name!r} must be printable ASCII"
    return None


class HttpFetcher:
    """Performs a guest's `http_fetch` request, or explains in one sentence why not.

    Requests run on an event loop thread of the fetcher's own so that one deadline covers
    the whole exchange (connect, headers, body): httpx's timeouts apply per socket read,
    which a server trickling a byte at a time never trips.
    """

    def __init__(self, allow_hosts: Iterable[str], limits: Limits) -> None:
        self._allow = frozenset(h.strip().lower() for h in allow_hosts if h.strip())
        self._limits = limits
        # Redirects are not followed: a redirect could leave the allow-list.
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="hanzocloud-ext-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Close the connection pool and stop the loop thread."""
        asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def allowed(self, url: str | httpx.URL) -> bool:
        """Whether the operator's allow-list admits this URL's host (or host:port)."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            return False
        default = DEFAULT_PORTS.get(parsed.scheme)
        if default is None or not parsed.host:
            return False
        port = parsed.port or default
        if not 0 < port < 65536:
            return False
        return parsed.host in self._allow or f"{parsed.host}:{port}" in self._allow

    def fetch(self, request: Any, *, deadline: float) -> dict[str, Any]:
        """Run one request given as JSON; answer `{status, headers, body}` or `{error}`."""
        if not isinstance(request, dict):
            return {"error": "request must be a JSON object {method, url, headers?, body?}"}
        method = str(request.get("method", "GET")).upper()
        url = request.get("url")
        headers = request.get("headers") or {}
        body = request.get("body")
        if method not in ALLOWED_METHODS:
            return {"error": f"method {method!r} is not allowed"}
        if not isinstance(url, str) or not url:
            return {"error": "url must be a non-empty string"}
        try:
            # Parsed once: the URL checked against the allow-list is the URL requested.
            target = httpx.URL(url)
        except httpx.InvalidURL as exc:
            return {"error": f"url {url!r} is not valid: {exc}"}
        if not self.allowed(target):
            return {"error": f"host of {url!r} is not in the operator's allow-list"}
        problem = _header_problem(headers)
        if problem is not None:
            return {"error": problem}
        if body is not None and not isinstance(body, str):
            return {"error": "body must be a string"}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return {"error": "no time left before the call's deadline"}
        limit = min(self._limits.http_timeout_s, remaining)
        content = body.encode() if body else None
        exchange = self._exchange(method, target, headers, content, limit)
        return asyncio.run_coroutine_threadsafe(exchange, self._loop).result()

    async def _exchange(self, method: str, url: httpx.URL, headers: dict[str, str],
                        content: bytes | None, limit: float) -> dict[str, Any]:
        cap = self._limits.http_max_response_bytes
        try:
            async with asyncio.timeout(limit), self._client.stream(
                method, url, headers=headers, content=content, timeout=limit,
            ) as response:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > cap:
                        return {"error": f"response body exceeds {cap} bytes"}
                    chunks.append(chunk)
                return {
                    "status": response.status_code,
                    "headers": {k.lower(): v for k, v in response.headers.items()},
                    "body": b"".join(chunks).decode("utf-8", errors="replace"),
                }
        except (TimeoutError, httpx.TimeoutException):
            return {"error": f"request timed out after {limit:.3f}s"}
        except httpx.HTTPError as exc:
            return {"error": f"request failed: {type(exc).__name__}: {exc}"}
