"""Access and ID tokens: what goes into them, and the checks a token must pass.

Access tokens are JWTs (`typ: at+jwt`, RFC 9068) with `aud = [<api audience>, <client_id>]`;
verifiers require the API audience. ID tokens (`typ: JWT`) have `aud = <client_id>` only, so
an ID token is never accepted as an access token.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import jwt

from hanzocloud.errors import Unauthenticated
from hanzocloud.zap.gen.iam import Claims
from subsystems.iam.config import IamConfig
from subsystems.iam.keys import KeyRing
from subsystems.iam.models import SLUG

Clock = Callable[[], float]
MAX_TOKEN = 8192  # bytes: anything longer is refused before it is parsed
SKEW = 30         # seconds of clock skew allowed on exp/iat
ACCESS_TYP = "at+jwt"
_REQUIRED = ["exp", "iat", "iss", "sub", "aud", "jti"]


def claims_struct(claims: dict[str, Any], audience: str) -> Claims:
    """The typed Claims of a verified token's payload."""
    roles = claims.get("roles") or []
    return Claims(
        iss=str(claims.get("iss", "")), sub=str(claims.get("sub", "")), aud=audience,
        exp=int(claims.get("exp", 0)), iat=int(claims.get("iat", 0)),
        jti=str(claims.get("jti", "")), owner=str(claims.get("owner", "")),
        organization=str(claims.get("organization", claims.get("owner", ""))),
        email=str(claims.get("email", "")), name=str(claims.get("name", "")),
        roles=[str(r) for r in roles] if isinstance(roles, list) else [],
        is_admin=claims.get("isAdmin") is True, scope=str(claims.get("scope", "")),
        azp=str(claims.get("azp", "")), kind=str(claims.get("kind", "user")))


class Tokens:
    """Signs tokens with the active key and verifies them against the key ring."""

    def __init__(self, keys: KeyRing, config: IamConfig, *, issuer: str, audience: str,
                 clock: Clock = time.time) -> None:
        self.keys = keys
        self.config = config
        self.issuer = issuer
        self.audience = audience
        self.clock = clock

    async def access_token(self, *, org: str, sub: str, client_id: str, scope: str,
                           email: str = "", name: str = "", roles: list[str] | None = None,
                           is_admin: bool = False, kind: str = "user",
                           sid: str = "") -> tuple[str, dict[str, Any]]:
        """A signed access token and its claims."""
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": sub, "aud": [self.audience, client_id],
            "exp": now + self.config.access_ttl, "iat": now, "nbf": now,
            "jti": secrets.token_urlsafe(16), "owner": org, "organization": org,
            "email": email, "name": name, "roles": list(roles or []), "isAdmin": is_admin,
            "scope": scope, "azp": client_id, "client_id": client_id, "kind": kind,
        }
        if sid:
            claims["sid"] = sid
        key = await self.keys.active()
        return self.keys.sign(key, claims, typ=ACCESS_TYP), claims

    async def id_token(self, *, org: str, sub: str, client_id: str, email: str, name: str,
                       roles: list[str], is_admin: bool, nonce: str = "",
                       sid: str = "") -> str:
        """A signed OpenID Connect ID token for `client_id`."""
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": sub, "aud": client_id, "azp": client_id,
            "exp": now + self.config.id_ttl, "iat": now, "auth_time": now,
            "jti": secrets.token_urlsafe(16), "owner": org, "organization": org,
            "email": email, "email_verified": False, "name": name, "roles": roles,
            "isAdmin": is_admin,
        }
        if nonce:
            claims["nonce"] = nonce
        if sid:
            claims["sid"] = sid
        key = await self.keys.active()
        return self.keys.sign(key, claims, typ="JWT")

    async def decode(self, token: str, *, audience: str | None = None,
                     typ: str | None = ACCESS_TYP, verify_exp: bool = True) -> dict[str, Any]:
        """Verify signature, algorithm, kid, typ, issuer, audience and expiry; 401 otherwise."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
            raise Unauthenticated("invalid token: missing or too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("invalid token: malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in ("RS256", "ES256", "EdDSA"):
            raise Unauthenticated("invalid token: unsupported algorithm")
        if not isinstance(kid, str) or not kid or len(kid) > 100:
            raise Unauthenticated("invalid token: no key id")
        if typ is not None and str(header.get("typ", "")).lower() != typ:
            raise Unauthenticated(f"invalid token: expected typ {typ}")
        key = await self.keys.find(kid)
        if key is None:
            raise Unauthenticated("invalid token: unknown signing key")
        if key.alg != alg:
            raise Unauthenticated("invalid token: algorithm does not match its key")
        try:
            return dict(jwt.decode(
                token, key.public, algorithms=[key.alg], audience=audience or self.audience,
                issuer=self.issuer, leeway=SKEW,
                options={"require": _REQUIRED, "verify_exp": verify_exp}))
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("invalid token: expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("invalid token: wrong audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("invalid token: wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("invalid token: bad signature") from None
        except jwt.PyJWTError:
            raise Unauthenticated("invalid token") from None

    @staticmethod
    def tenant_of(claims: dict[str, Any]) -> str:
        """The org slug a verified token belongs to (`owner`, alias `organization`)."""
        org = claims.get("owner") or claims.get("organization")
        if not isinstance(org, str) or not SLUG.fullmatch(org):
            raise Unauthenticated("invalid token: no tenant (owner) claim")
        return org
