"""The OAuth 2.1 token endpoint's grants, authorization codes and refresh-token families.

Refresh tokens rotate on every use; presenting a spent one means it leaked, so the whole
family (the session, `sid`) is revoked, including the access tokens issued from it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from hanzocloud.errors import RateLimited, Unauthenticated
from hanzocloud.zap.gen.iam import User
from subsystems.iam.clients import Clients, digest
from subsystems.iam.config import IamConfig
from subsystems.iam.directory import Directory
from subsystems.iam.models import App
from subsystems.iam.passwords import Throttle
from subsystems.iam.store import loads, one, run
from subsystems.iam.tokens import Tokens

Clock = Callable[[], float]
Notify = Callable[[dict[str, Any]], Awaitable[None]]
SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,64}$")
VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
DEFAULT_SCOPE = "openid profile email"


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: `error` code, description and HTTP status."""

    def __init__(self, error: str, description: str, *, status: int = 400,
                 retry_after: float | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.retry_after = retry_after


def check_scope(raw: str | None, *, allowed: str | None = None) -> str:
    """A space-separated scope string, optionally limited to the scopes in `allowed`."""
    if raw is None or raw == "":
        return allowed if allowed is not None else DEFAULT_SCOPE
    parts = raw.split(" ")
    if len(parts) > 20 or not all(SCOPE.fullmatch(p) for p in parts):
        raise OAuthError("invalid_scope", "malformed scope")
    if allowed is not None and not set(parts) <= set(allowed.split()):
        raise OAuthError("invalid_scope", "scope exceeds the scope originally granted")
    return " ".join(dict.fromkeys(parts))


def pkce_matches(verifier: str, challenge: str) -> bool:
    """S256: BASE64URL(SHA256(verifier)) == challenge, compared in constant time."""
    computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return hmac.compare_digest(computed.rstrip(b"=").decode(), challenge)


class Grants:
    """Client authentication and the four grants of `/v1/iam/oauth/token`."""

    def __init__(self, directory: Directory, clients: Clients, tokens: Tokens,
                 throttle: Throttle, config: IamConfig, *, notify: Notify,
                 clock: Clock = time.time) -> None:
        self.directory = directory
        self.clients = clients
        self.tokens = tokens
        self.throttle = throttle
        self.config = config
        self.notify = notify
        self.clock = clock

    async def authenticate_client(self, form: Mapping[str, str],
                                  basic: tuple[str, str] | None) -> App:
        """The calling client: Basic auth, or client_id (+ client_secret) in the form."""
        if basic is not None and ("client_secret" in form or
                                  form.get("client_id", basic[0]) != basic[0]):
            raise OAuthError("invalid_request", "use one client authentication method")
        client_id, secret = basic if basic else (form.get("client_id", ""),
                                                 form.get("client_secret"))
        if not client_id:
            raise OAuthError("invalid_client", "client_id is required", status=401)
        app = await self.clients.find_app(client_id)
        if app is None:
            raise OAuthError("invalid_client", "unknown client or bad credentials", status=401)
        if app.public:
            if secret:
                raise OAuthError("invalid_client", "a public client has no secret", status=401)
        elif not secret or not self.clients.secret_matches(app, secret):
            raise OAuthError("invalid_client", "unknown client or bad credentials", status=401)
        return app

    async def token(self, form: Mapping[str, str], basic: tuple[str, str] | None,
                    ip: str) -> dict[str, Any]:
        """Run the grant named by `grant_type`; returns the RFC 6749 token response."""
        grant = form.get("grant_type")
        handlers: dict[str, Callable[[App, Mapping[str, str], str],
                                     Awaitable[dict[str, Any]]]] = {
            "authorization_code": self._authorization_code,
            "refresh_token": self._refresh, "password": self._password,
            "client_credentials": self._client_credentials}
        if grant is None:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant not in handlers:
            raise OAuthError("unsupported_grant_type", "unsupported grant_type")
        app = await self.authenticate_client(form, basic)
        if grant not in app.grants:
            raise OAuthError("unauthorized_client", f"this client may not use {grant}")
        return await handlers[grant](app, form, ip)

    # -- codes and sessions --------------------------------------------------------------

    async def issue_code(self, app: App, user: User, *, redirect_uri: str, scope: str,
                         challenge: str, nonce: str) -> str:
        """A one-time authorization code (stored hashed, short-lived)."""
        code = secrets.token_urlsafe(32)
        now = int(self.clock())
        async with self.clients.store.org(app.org) as s:
            await run(s, "INSERT INTO auth_codes (hash, client_id, user_id, redirect_uri, scope, "
                         "challenge, nonce, expires_at, family) VALUES (:h, :c, :u, :r, :sc, "
                         ":ch, :n, :exp, :f)", h=digest(code), c=app.client_id, u=user.id,
                      r=redirect_uri, sc=scope, ch=challenge, n=nonce,
                      exp=now + self.config.code_ttl, f=f"sid_{secrets.token_hex(12)}")
            await run(s, "DELETE FROM auth_codes WHERE expires_at < :old", old=now - 3600)
            await s.commit()
        return code

    async def revoke_family(self, org: str, family: str) -> None:
        """Revoke a session: its refresh tokens and every access token carrying its sid."""
        async with self.clients.store.org(org) as s:
            await run(s, "UPDATE families SET revoked_at = :now WHERE id = :f "
                         "AND revoked_at IS NULL", f=family, now=int(self.clock()))
            await s.commit()
        await self.notify({"kind": "session", "org": org, "id": family})

    async def _session_tokens(self, app: App, user: User, *, scope: str, family: str,
                              nonce: str = "", new_family: bool) -> dict[str, Any]:
        now = int(self.clock())
        refresh = f"hrt_{secrets.token_urlsafe(32)}"
        async with self.clients.store.org(app.org) as s:
            if new_family:
                await run(s, "INSERT INTO families (id, client_id, user_id, created_at) "
                             "VALUES (:f, :c, :u, :now)", f=family, c=app.client_id, u=user.id,
                          now=now)
            await run(s, "INSERT INTO refresh_tokens (hash, family, client_id, user_id, scope, "
                         "created_at, expires_at) VALUES (:h, :f, :c, :u, :sc, :now, :exp)",
                      h=digest(refresh), f=family, c=app.client_id, u=user.id, sc=scope, now=now,
                      exp=now + self.config.refresh_ttl)
            await s.commit()
        access, _ = await self.tokens.access_token(
            org=app.org, sub=user.id, client_id=app.client_id, scope=scope, email=user.email,
            name=user.name, roles=list(user.roles), is_admin=user.is_admin, sid=family)
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                "expires_in": self.config.access_ttl, "refresh_token": refresh,
                                "scope": scope}
        if "openid" in scope.split():
            body["id_token"] = await self.tokens.id_token(
                org=app.org, sub=user.id, client_id=app.client_id, email=user.email,
                name=user.name, roles=list(user.roles), is_admin=user.is_admin, nonce=nonce,
                sid=family)
        return body

    # -- the grants ----------------------------------------------------------------------

    async def _authorization_code(self, app: App, form: Mapping[str, str],
                                  _ip: str) -> dict[str, Any]:
        code, redirect_uri = form.get("code"), form.get("redirect_uri")
        if not code or len(code) > 200:
            raise OAuthError("invalid_request", "code is required")
        verifier = form.get("code_verifier")
        if verifier is not None and not VERIFIER.fullmatch(verifier):
            raise OAuthError("invalid_request", "malformed code_verifier")
        now = int(self.clock())
        async with self.clients.store.org(app.org) as s:
            row = await one(s, "SELECT * FROM auth_codes WHERE hash = :h", h=digest(code))
            if row is None or row["client_id"] != app.client_id:
                raise OAuthError("invalid_grant", "invalid authorization code")
            if row["used_at"] is not None:
                spent = True
            else:
                spent = not await run(s, "UPDATE auth_codes SET used_at = :now WHERE hash = :h "
                                         "AND used_at IS NULL", h=row["hash"], now=now)
                await s.commit()
        if spent:  # a replayed code: whatever it produced is no longer trusted
            await self.revoke_family(app.org, row["family"])
            raise OAuthError("invalid_grant", "authorization code already used")
        if row["expires_at"] <= now:
            raise OAuthError("invalid_grant", "authorization code expired")
        if redirect_uri != row["redirect_uri"]:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization")
        if row["challenge"]:
            if not verifier or not pkce_matches(verifier, row["challenge"]):
                raise OAuthError("invalid_grant", "PKCE verification failed")
        elif app.public or verifier:
            raise OAuthError("invalid_grant", "PKCE verification failed")
        user = await self.directory.find_user(app.org, row["user_id"])
        if user is None or user.disabled:
            raise OAuthError("invalid_grant", "the user is no longer active")
        return await self._session_tokens(app, user, scope=row["scope"], family=row["family"],
                                          nonce=row["nonce"], new_family=True)

    async def _refresh(self, app: App, form: Mapping[str, str], _ip: str) -> dict[str, Any]:
        token = form.get("refresh_token")
        if not token or len(token) > 200:
            raise OAuthError("invalid_request", "refresh_token is required")
        now = int(self.clock())
        async with self.clients.store.org(app.org) as s:
            row = await one(s, "SELECT r.*, f.revoked_at AS family_revoked FROM refresh_tokens r "
                               "JOIN families f ON f.id = r.family WHERE r.hash = :h",
                            h=digest(token))
            if row is None or row["client_id"] != app.client_id:
                raise OAuthError("invalid_grant", "invalid refresh token")
            spent = row["used_at"] is not None or not await run(
                s, "UPDATE refresh_tokens SET used_at = :now WHERE hash = :h AND used_at IS NULL",
                h=row["hash"], now=now)
            await s.commit()
        if spent:
            await self.revoke_family(app.org, row["family"])
            raise OAuthError("invalid_grant", "refresh token reuse detected; the session "
                                              "has been revoked")
        if row["family_revoked"] is not None:
            raise OAuthError("invalid_grant", "the session has been revoked")
        if row["expires_at"] <= now:
            raise OAuthError("invalid_grant", "refresh token expired")
        scope = check_scope(form.get("scope"), allowed=row["scope"])
        user = await self.directory.find_user(app.org, row["user_id"])
        if user is None or user.disabled:
            raise OAuthError("invalid_grant", "the user is no longer active")
        return await self._session_tokens(app, user, scope=scope, family=row["family"],
                                          new_family=False)

    async def _password(self, app: App, form: Mapping[str, str], ip: str) -> dict[str, Any]:
        username, password = form.get("username"), form.get("password")
        if not username or password is None:
            raise OAuthError("invalid_request", "username and password are required")
        scope = check_scope(form.get("scope"))
        user = await self.login(app.org, username, password, ip)
        if user is None:
            raise OAuthError("invalid_grant", "invalid email or password")
        return await self._session_tokens(app, user, scope=scope,
                                          family=f"sid_{secrets.token_hex(12)}",
                                          new_family=True)

    async def login(self, org: str, email: str, password: str, ip: str) -> User | None:
        """Check credentials under the per-account and per-IP throttles."""
        account = f"acct:{org}:{email.strip().lower()[:320]}"
        try:
            self.throttle.check(account, f"ip:{ip}")
        except RateLimited as exc:
            raise OAuthError("temporarily_unavailable", exc.message, status=429,
                             retry_after=exc.retry_after) from None
        # Counted as a failure before the (slow) verify, so attempts sent side by side each
        # see the others; a success takes it back.
        self.throttle.failure(account, f"ip:{ip}")
        user = await self.directory.authenticate(org, email, password)
        if user is None:
            return None
        self.throttle.success(account, f"ip:{ip}")
        return user

    async def _client_credentials(self, app: App, form: Mapping[str, str],
                                  _ip: str) -> dict[str, Any]:
        scope = check_scope(form.get("scope"), allowed=None)
        access, _ = await self.tokens.access_token(
            org=app.org, sub=app.client_id, client_id=app.client_id, scope=scope,
            name=app.name, roles=list(app.roles), kind="client")
        return {"access_token": access, "token_type": "Bearer",
                "expires_in": self.config.access_ttl, "scope": scope}

    # -- revocation and introspection ----------------------------------------------------

    async def revoke(self, app: App, token: str) -> None:
        """RFC 7009: revoke a refresh token (its family) or an access token of this client."""
        if token.startswith("hrt_"):
            async with self.clients.store.org(app.org) as s:
                row = await one(s, "SELECT family, client_id FROM refresh_tokens "
                                   "WHERE hash = :h", h=digest(token))
            if row is not None and row["client_id"] == app.client_id:
                await self.revoke_family(app.org, row["family"])
            return
        try:
            claims = await self.tokens.decode(token, verify_exp=False)
        except Unauthenticated:
            return  # RFC 7009 §2.2: an invalid token is not an error
        if claims.get("azp") != app.client_id or claims.get("owner") != app.org:
            return
        async with self.clients.store.org(app.org) as s:
            await run(s, "INSERT OR IGNORE INTO revoked_jti (jti, expires_at) VALUES (:j, :e)",
                      j=str(claims["jti"]), e=int(claims["exp"]))
            await run(s, "DELETE FROM revoked_jti WHERE expires_at < :now",
                      now=int(self.clock()) - 3600)
            await s.commit()
        await self.notify({"kind": "token", "org": app.org, "id": str(claims["jti"])})

    async def is_revoked(self, org: str, claims: Mapping[str, Any]) -> bool:
        """Whether a verified token was revoked, its session ended or its subject removed."""
        async with self.clients.store.org(org) as s:
            if await one(s, "SELECT 1 FROM revoked_jti WHERE jti = :j", j=str(claims["jti"])):
                return True
            sid = claims.get("sid")
            if sid and await one(s, "SELECT 1 FROM families WHERE id = :f AND "
                                    "revoked_at IS NOT NULL", f=str(sid)):
                return True
            if claims.get("kind") == "client":
                row = await one(s, "SELECT 1 FROM apps WHERE client_id = :c",
                                c=str(claims["sub"]))
                return row is None
            row = await one(s, "SELECT disabled, roles, is_admin FROM users WHERE id = :u",
                            u=str(claims["sub"]))
        if row is None or row["disabled"]:
            return True
        # A token speaks for the roles it was issued with: once the user's change, it is
        # spent (a refresh issues one with the current roles), so a demotion takes effect
        # at the next request, not when the token expires.
        roles = claims.get("roles")
        return (not isinstance(roles, list)
                or sorted(map(str, roles)) != sorted(loads(row["roles"]))
                or (claims.get("isAdmin") is True) != bool(row["is_admin"]))
