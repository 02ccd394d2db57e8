"""Turning a credential into verified claims: through the iam client (in-process or over
ZAP), or, when iam runs nowhere reachable, against the issuer's discovery document and JWKS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import structlog

from hanzocloud.errors import SubsystemUnavailable, Unauthenticated
from hanzocloud.zap.gen.iam import Claims

log = structlog.get_logger("hanzocloud.gateway")
MAX_TOKEN = 8192
MAX_DOCUMENT = 256 * 1024
MAX_KEYS = 50
ALGORITHMS = ("RS256", "ES256", "EdDSA")


def claims_from_payload(payload: dict[str, Any], audience: str) -> Claims:
    """Typed claims of a payload whose signature, issuer, audience and expiry were checked."""
    owner = payload.get("owner") or payload.get("organization") or ""
    roles = payload.get("roles") or []
    if isinstance(roles, str):
        roles = [r for r in roles.replace(",", " ").split() if r]
    return Claims(
        iss=str(payload.get("iss", "")), sub=str(payload.get("sub", "")), aud=audience,
        exp=int(payload.get("exp", 0)), iat=int(payload.get("iat", 0)),
        jti=str(payload.get("jti", "")), owner=str(owner), organization=str(owner),
        email=str(payload.get("email", "")), name=str(payload.get("name", "")),
        roles=[str(r) for r in roles] if isinstance(roles, list) else [],
        is_admin=payload.get("isAdmin") is True, scope=str(payload.get("scope", "")),
        azp=str(payload.get("azp", "")), kind=str(payload.get("kind", "user")))


class RemoteJwks:
    """Verify JWTs of a remote issuer: discovery → jwks_uri, cached, refetched on an unknown
    kid at most every `min_refetch` seconds, with bounded documents and key counts."""

    def __init__(self, issuer: str, audience: str, *, ttl: float, min_refetch: float,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.ttl = ttl
        self.min_refetch = min_refetch
        self.clock = clock
        self.transport = transport
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def _get_json(self, client: httpx.AsyncClient, url: str) -> dict[str, Any]:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise SubsystemUnavailable("iam", f"issuer answered {response.status_code} "
                                                  f"for {url}")
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT:
                    raise SubsystemUnavailable("iam", f"{url} is larger than {MAX_DOCUMENT} B")
        try:
            data = httpx.Response(200, content=body).json()
        except ValueError:
            raise SubsystemUnavailable("iam", f"{url} is not JSON") from None
        if not isinstance(data, dict):
            raise SubsystemUnavailable("iam", f"{url} is not a JSON object")
        return data

    async def _fetch(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=5.0, transport=self.transport,
                                         follow_redirects=False) as client:
                meta = await self._get_json(
                    client, f"{self.issuer}/.well-known/openid-configuration")
                if str(meta.get("issuer", "")).rstrip("/") != self.issuer:
                    raise SubsystemUnavailable("iam", "the issuer's discovery document names "
                                                      "another issuer")
                jwks = await self._get_json(client, str(meta.get("jwks_uri", "")))
        except httpx.HTTPError as exc:
            raise SubsystemUnavailable("iam", f"cannot reach the issuer {self.issuer}: "
                                              f"{type(exc).__name__}") from None
        keys: dict[str, jwt.PyJWK] = {}
        for item in (jwks.get("keys") or [])[:MAX_KEYS]:
            try:
                key = jwt.PyJWK(item)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError):
                continue  # a key we cannot use is skipped, not fatal
            if key.key_id and key.algorithm_name in ALGORITHMS:
                keys[key.key_id] = key
        self._keys = keys
        self._fetched_at = self.clock()
        log.info("gateway_jwks_fetched", issuer=self.issuer, keys=len(keys))

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The issuer's key `kid`, refetching when stale or (bounded) when unknown."""
        now = self.clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self.ttl
        unknown = kid not in self._keys and (self._fetched_at is None or
                                             now - self._fetched_at >= self.min_refetch)
        if stale or unknown:
            async with self._lock:
                if self._fetched_at is None or self.clock() - self._fetched_at >= \
                        (self.ttl if kid in self._keys else self.min_refetch):
                    await self._fetch()
        return self._keys.get(kid)

    async def verify(self, token: str) -> Claims:
        """Check signature, algorithm, issuer, audience and expiry; 401 otherwise."""
        if len(token) > MAX_TOKEN:
            raise Unauthenticated("invalid token: too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("invalid token: malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS or not isinstance(kid, str) or len(kid) > 100:
            raise Unauthenticated("invalid token: unsupported algorithm or no key id")
        key = await self.key(kid)
        if key is None:
            raise Unauthenticated("invalid token: unknown signing key")
        if key.algorithm_name != alg:
            raise Unauthenticated("invalid token: algorithm does not match its key")
        try:
            payload = jwt.decode(token, key.key, algorithms=[alg], audience=self.audience,
                                 issuer=self.issuer, leeway=30,
                                 options={"require": ["exp", "iat", "iss", "sub", "aud"]})
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("invalid token: expired") from None
        except jwt.PyJWTError:
            raise Unauthenticated("invalid token") from None
        claims = claims_from_payload(payload, self.audience)
        if not claims.owner:
            raise Unauthenticated("invalid token: no tenant (owner) claim")
        return claims
