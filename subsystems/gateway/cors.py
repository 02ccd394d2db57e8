"""CORS: which browser origins may call this deployment (the brand's and the domain's)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

ALLOW_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
EXPOSE = b"RateLimit, RateLimit-Policy, Retry-After, X-Request-Id"
MAX_AGE = b"600"


class CorsPolicy:
    """Exact origins plus `scheme://*.suffix` wildcards (one or more labels)."""

    def __init__(self, origins: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self.wildcards: list[tuple[str, str, int | None]] = []
        for origin in origins:
            origin = origin.rstrip("/").lower()
            parts = urlsplit(origin)
            if parts.hostname and parts.hostname.startswith("*."):
                self.wildcards.append((parts.scheme, parts.hostname[1:], parts.port))
            elif origin:
                self.exact.add(origin)

    def allows(self, origin: str) -> bool:
        """Whether a browser page at `origin` may read responses."""
        origin = origin.lower()
        if origin in self.exact:
            return True
        try:
            parts = urlsplit(origin)
            port = parts.port
        except ValueError:
            return False
        host = parts.hostname or ""
        if parts.path or parts.query or parts.fragment or parts.username is not None:
            return False
        return any(parts.scheme == scheme and host.endswith(suffix) and len(host) > len(suffix)
                   and port == want_port for scheme, suffix, want_port in self.wildcards)


def deployment_origins(brand_origins: Iterable[str], domains: Iterable[str], *,
                       dev: bool) -> list[str]:
    """The brand's CORS origins plus https (and, in dev, http) on the deployment's domains."""
    out = list(brand_origins)
    for domain in domains:
        out.append(f"https://{domain}")
        if dev:
            out.append(f"http://{domain}")
    return out
