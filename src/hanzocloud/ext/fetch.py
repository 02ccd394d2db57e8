"""Outbound HTTP for the `http` capability: allow-listed hosts, bounded time and size."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

from hanzocloud.ext.limits import Limits

ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpFetcher:
    """Performs a guest's `http_fetch` request, or explains in one sentence why not."""

    def __init__(self, allow_hosts: Iterable[str], limits: Limits) -> None:
        self._allow = frozenset(h.strip().lower() for h in allow_hosts if h.strip())
        self._limits = limits
        # Redirects are not followed: a redirect could leave the allow-list.
        self._client = httpx.Client(follow_redirects=False, trust_env=False)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def allowed(self, url: str) -> bool:
        """Whether the operator's allow-list admits this URL's host (or host:port)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        host = parts.hostname.lower()
        try:
            port = parts.port
        except ValueError:
            return False
        return host in self._allow or (port is not None and f"{host}:{port}" in self._allow)

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
        if not self.allowed(url):
            return {"error": f"host of {url!r} is not in the operator's allow-list"}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            return {"error": "headers must be an object of strings"}
        if body is not None and not isinstance(body, str):
            return {"error": "body must be a string"}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return {"error": "no time left before the call's deadline"}
        timeout = min(self._limits.http_timeout_s, remaining)
        cap = self._limits.http_max_response_bytes
        try:
            with self._client.stream(
                method, url, headers=headers, content=body.encode() if body else None,
                timeout=timeout,
            ) as response:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > cap:
                        return {"error": f"response body exceeds {cap} bytes"}
                    chunks.append(chunk)
                return {
                    "status": response.status_code,
                    "headers": {k.lower(): v for k, v in response.headers.items()},
                    "body": b"".join(chunks).decode("utf-8", errors="replace"),
                }
        except httpx.TimeoutException:
            return {"error": f"request timed out after {timeout:.3f}s"}
        except httpx.HTTPError as exc:
            return {"error": f"request failed: {type(exc).__name__}: {exc}"}
