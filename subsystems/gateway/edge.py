"""The edge: on every request, strip client-sent identity headers, verify the credential,
set the identity, mint the identity headers, rate-limit, and answer CORS.

A present-but-invalid credential is a 401 (never anonymous). Which routes need an identity
is decided later by each route's declared policy (`hanzocloud.routing.enforce`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from hanzocloud.deps import Deps
from hanzocloud.errors import (
    CloudError,
    InvalidArgument,
    PermissionDenied,
    RateLimited,
    SubsystemUnavailable,
    Unauthenticated,
)
from hanzocloud.http import client_source, error_response, response_headers
from hanzocloud.identity import Identity, current_identity
from hanzocloud.zap.gen.iam import Claims
from subsystems.gateway.cache import TokenCache, Verified
from subsystems.gateway.config import GatewayConfig
from subsystems.gateway.cors import ALLOW_METHODS, EXPOSE, MAX_AGE, CorsPolicy
from subsystems.gateway.ratelimit import RateLimiter, route_class
from subsystems.gateway.verify import RemoteJwks

# Every header a client could use to claim an identity; stripped from every request.
STRIP_EXACT = frozenset({b"x-org-id", b"x-tenant-id", b"x-roles", b"x-organization",
                         b"x-owner"})
STRIP_PREFIXES = (b"x-user-", b"x-iam-", b"x-hanzo-", b"x-org-")
_SAFE_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
_SAFE_VALUE = re.compile(r"[ -~]{0,1024}")
POLICY_HOOK = "gateway_policy"  # an org extension export consulted before every handler


def is_identity_header(name: bytes) -> bool:
    """Whether a (lower-cased) header name is one only the gateway may set; `_` counts as
    `-` (servers pass `X_User_Id` through, and some frameworks read it as `X-User-Id`)."""
    name = name.replace(b"_", b"-")
    return name in STRIP_EXACT or name.startswith(STRIP_PREFIXES)


def minted_headers(identity: Identity) -> list[tuple[bytes, bytes]]:
    """The identity headers handlers (and proxied services) may trust."""
    def enc(value: str) -> bytes:
        return value.encode("utf-8").replace(b"\r", b"").replace(b"\n", b"")

    return [(b"x-org-id", enc(identity.org)), (b"x-user-id", enc(identity.user)),
            (b"x-user-email", enc(identity.email)),
            (b"x-roles", enc(",".join(identity.roles))),
            (b"x-user-isadmin", b"true" if identity.is_admin else b"false")]


@dataclass
class GatewayState:
    """What both listeners' edges share: verifier, cache, rate limiter, CORS policy."""

    deps: Deps
    config: GatewayConfig
    cors: CorsPolicy
    cache: TokenCache = field(init=False)
    limiter: RateLimiter = field(init=False)
    jwks: RemoteJwks | None = None
    revocations: int = 0  # bumped by every revocation: a verification begun before one is stale

    def __post_init__(self) -> None:
        self.cache = TokenCache(self.config.cache_size)
        self.limiter = RateLimiter(self.config.limits, max_buckets=self.config.buckets)

    @property
    def mode(self) -> str:
        """How credentials are verified here: iam (local or remote), jwks, or not at all."""
        if self.deps.iam.mode != "disabled":
            return f"iam-{self.deps.iam.mode}"
        return "jwks" if self.jwks is not None else "none"

    async def on_revoked(self, event: dict[str, Any]) -> None:
        """A credential was revoked in this process: forget the cached verifications of its
        org (all of them when the event names none), and any verification still under way."""
        self.revocations += 1
        org = event.get("org")
        if isinstance(org, str) and org:
            self.cache.drop_org(org)
        else:
            self.cache.clear()

    async def verify(self, credential: str, *, alias: bytes | None = None) -> Verified:
        """Verify a bearer credential (JWT or `hk-` API key), through the cache; remember it
        under `alias` too (the Authorization value that carried it)."""
        hit = self.cache.get(credential)
        if hit is not None:
            return hit
        revocations = self.revocations
        claims = await self._claims(credential)
        if not claims.owner:
            raise Unauthenticated("invalid token: no tenant (owner) claim")
        identity = Identity(org=claims.owner, user=claims.sub, email=claims.email,
                            roles=tuple(claims.roles), is_admin=claims.is_admin)
        keys = [f"org:{claims.owner}"]
        if claims.kind == "apikey":
            keys.append(f"key:{claims.sub}")
        now = time.time()
        expires = now + self.config.revocation_window
        if claims.exp:
            expires = min(expires, float(claims.exp))
        verified = Verified(identity, minted_headers(identity), tuple(keys), expires)
        if self.revocations == revocations:  # else iam may have answered before a revocation
            self.cache.put(credential, verified)
            if alias is not None:
                self.cache.put(alias, verified)
        return verified

    async def _claims(self, credential: str) -> Claims:
        iam = self.deps.iam
        api_key = credential.startswith("hk-")
        if iam.mode != "disabled":
            result: Claims = await (iam.verify_api_key(credential) if api_key
                                    else iam.verify_jwt(credential))
            return result
        if self.jwks is not None and not api_key:
            return await self.jwks.verify(credential)
        raise SubsystemUnavailable("iam", "cannot verify this credential: iam is not enabled "
                                          "here" + (" and API keys need it (set "
                                                    "CLOUD_IAM_ZAP_ADDR)" if api_key else
                                                    "; set --iam-issuer or CLOUD_IAM_ZAP_ADDR"))


def _anonymous_bucket(scope: Scope, cls: str) -> tuple[str, str]:
    """The per-address bucket of a request without a (valid) credential."""
    return f"ip:{client_source(scope)}", cls if cls == "auth" else "anon"


def credential_of(value: bytes) -> str | None:
    """The credential in an Authorization header: Bearer, bare JWT or API key; None for
    Basic (OAuth client authentication, not an identity). Raises 401 when unusable."""
    text = value.decode("latin-1").strip()
    scheme, sep, rest = text.partition(" ")
    if sep:
        lowered = scheme.lower()
        if lowered == "basic":
            return None
        if lowered != "bearer":
            raise Unauthenticated(f"unsupported authorization scheme '{scheme[:20]}'")
        text = rest.strip()
    if text.startswith("hk-") or text.count(".") == 2:
        return text
    raise Unauthenticated("malformed credential: expected a bearer JWT or an hk- API key")


class GatewayEdge:
    """ASGI middleware around the whole public (and admin) app."""

    def __init__(self, app: ASGIApp, *, state: GatewayState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = []
        authorization = origin = None
        preflight = twice = False
        for name, value in scope["headers"]:  # ASGI servers hand over lower-case names…
            if name[:1] in b"xX" and is_identity_header(name.lower()):  # …but never trust it
                continue
            if name == b"authorization":
                twice = authorization is not None
                authorization = value
            elif name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                preflight = True
            headers.append((name, value))
        cors = self._cors_headers(origin)
        if preflight and scope["method"] == "OPTIONS" and origin is not None:
            await self._preflight(scope, receive, send, cors)
            return
        try:
            if twice:  # which would speak for the request? Handlers read the first, say.
                raise InvalidArgument("more than one Authorization header")
            verified = None
            if authorization is not None:
                verified = self.state.cache.get(authorization, count=False)  # header as sent
                if verified is None:
                    credential = credential_of(authorization)
                    if credential is not None:
                        self._guessing(scope)
                        # Remembered under the header as sent only in its plain forms: one
                        # credential padded a thousand ways must not fill the cache.
                        plain = len(authorization) <= len(credential) + 7  # "Bearer " + it
                        verified = await self.state.verify(
                            credential, alias=authorization if plain else None)
            decision = self._limit(scope, verified)
        except CloudError as exc:
            if isinstance(exc, RateLimited):
                await self._error(exc, scope, receive, send, cors)
                return
            # A credential that fails is charged as anonymous traffic of its address: so is
            # every guess at a key or token, and the 401 says how much budget is left.
            decision = self._limit(scope, None)
            extra = [*cors, (b"ratelimit-policy", decision.policy.encode()),
                     (b"ratelimit", decision.state.encode())]
            await self._error(exc, scope, receive, send, extra)
            return
        extra = [*cors, (b"ratelimit-policy", decision.policy.encode()),
                 (b"ratelimit", decision.state.encode())]
        if not decision.allowed:
            exc = RateLimited("rate limit exceeded for this route class; retry later",
                              retry_after=decision.retry_after)
            await self._error(exc, scope, receive, send, extra)
            return
        if verified is not None:
            # The cached identity as is: the request id lives in current_request_id (callers
            # that need it, like ZAP, read it from there), so nothing is rebuilt per request.
            current_identity.set(verified.identity)
            headers.extend(verified.headers)
            try:
                extra.extend(await self._org_policy(scope, headers, verified.identity))
            except CloudError as exc:
                await self._error(exc, scope, receive, send, extra)
                return
        # In place, not a copy: the outer RequestContext reads the matched route from it.
        scope["headers"] = headers
        response_headers.get().extend(extra)  # RequestContext adds them when the response starts
        await self.app(scope, receive, send)

    async def _org_policy(self, scope: Scope, headers: list[tuple[bytes, bytes]],
                          identity: Identity) -> list[tuple[bytes, bytes]]:
        """Run the org's `gateway_policy` extensions: deny → 403; headers join the response."""
        extensions = self.state.deps.extensions
        if not identity.org or not extensions.has_hook(identity.org, POLICY_HOOK):
            return []
        visible = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers
                   if k not in (b"authorization", b"cookie") and not is_identity_header(k)}
        payload = {"method": scope["method"], "path": scope["path"],
                   "query": scope.get("query_string", b"").decode("latin-1"),
                   "headers": visible, "org": identity.org, "user": identity.user,
                   "userEmail": identity.email, "roles": list(identity.roles)}
        added: list[tuple[bytes, bytes]] = []
        for result in await extensions.run_hooks(identity.org, POLICY_HOOK, payload):
            if not result.allowed:
                raise PermissionDenied(result.message or "denied by the org's gateway policy")
            for name, value in (result.headers or {}).items():
                # Only plain printable ASCII: a guest must not split or smuggle a response.
                if _SAFE_NAME.fullmatch(name) and _SAFE_VALUE.fullmatch(value):
                    added.append((name.lower().encode("ascii"), value.encode("ascii")))
        return added

    def _limit(self, scope: Scope, verified: Verified | None) -> Any:
        cls = route_class(scope["method"], scope["path"])
        limiter = self.state.limiter
        if verified is None:
            return limiter.take(*_anonymous_bucket(scope, cls))
        keys = verified.bucket_keys
        if len(keys) == 1:  # a user's token: the org's bucket only
            return limiter.take(keys[0], cls)
        decisions = [limiter.take(key, cls) for key in keys]
        refused = [d for d in decisions if not d.allowed]
        # The headers speak of the bucket that binds: the refusing one, else the emptiest.
        return refused[0] if refused else min(decisions, key=lambda d: d.tokens)

    def _guessing(self, scope: Scope) -> None:
        """Refuse (429) a credential not yet verified while its address has no anonymous
        budget left: failed credentials spend it, so guessing keys or tokens stops there,
        before iam does any work. Credentials already verified are not held back."""
        key, cls = _anonymous_bucket(scope, route_class(scope["method"], scope["path"]))
        left = self.state.limiter.peek(key, cls)
        if left["remaining"] < 1:
            raise RateLimited("too many failed credentials from this address; retry later",
                              retry_after=1 / left["ratePerSecond"])

    def _cors_headers(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        if origin is None or not self.state.cors.allows(origin.decode("latin-1")):
            return []
        return [(b"access-control-allow-origin", origin), (b"vary", b"Origin"),
                (b"access-control-allow-credentials", b"true"),
                (b"access-control-expose-headers", EXPOSE)]

    async def _preflight(self, scope: Scope, receive: Receive, send: Send,
                         cors: list[tuple[bytes, bytes]]) -> None:
        if not cors:
            await self._error(PermissionDenied("this origin may not call the API (CORS)"),
                              scope, receive, send, [(b"vary", b"Origin")])
            return
        requested = next((v for k, v in scope["headers"]
                          if k.lower() == b"access-control-request-headers"), b"")
        allowed = b", ".join(h.strip() for h in requested.split(b",")
                             if h.strip() and all(c in b"abcdefghijklmnopqrstuvwxyz"
                                                  b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
                                                  for c in h.strip()))
        headers = [*cors, (b"access-control-allow-methods", ALLOW_METHODS),
                   (b"access-control-max-age", MAX_AGE)]
        if allowed:
            headers.append((b"access-control-allow-headers", allowed))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _error(self, exc: CloudError, scope: Scope, receive: Receive, send: Send,
                     extra: list[tuple[bytes, bytes]]) -> None:
        response = error_response(exc)
        if isinstance(exc, Unauthenticated):
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        for name, value in extra:
            response.headers.append(name.decode(), value.decode("latin-1"))
        await response(scope, receive, send)
