"""HTTP handlers of the OAuth/OIDC endpoints: authorize, token, userinfo, introspect,
revoke and logout. Errors at the OAuth endpoints use the RFC 6749 shape that OAuth client
libraries parse (`{"error": "invalid_grant", "error_description": …}`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hanzocloud.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from hanzocloud.http import JSONResponse, client_source
from hanzocloud.identity import current_identity
from subsystems.iam import login
from subsystems.iam.forms import (
    basic_credentials,
    oauth_error_response,
    oauth_json,
    query_params,
    read_form,
)
from subsystems.iam.grants import CHALLENGE, OAuthError, check_scope
from subsystems.iam.models import App
from subsystems.iam.service import IamService


def redirect_allowed(app: App, uri: str) -> bool:
    """Exact match, or a loopback URI whose port differs (RFC 8252 §7.3)."""
    if uri in app.redirect_uris:
        return True
    try:
        got = urlsplit(uri)
    except ValueError:  # e.g. an unbalanced IPv6 host, "http://[::1"
        return False
    if got.scheme != "http" or got.hostname not in ("127.0.0.1", "localhost", "::1"):
        return False
    if "@" in got.netloc or got.fragment or "#" in uri:  # userinfo, or a fragment: never
        return False
    for registered in app.redirect_uris:
        want = urlsplit(registered)
        if (want.scheme, want.hostname, want.path, want.query) == \
                (got.scheme, got.hostname, got.path, got.query):
            return True
    return False


def _with_params(uri: str, params: dict[str, str]) -> str:
    return uri + ("&" if urlsplit(uri).query else "?") + urlencode(params)


def client_ip(request: Request) -> str:
    """Who is logging in, for the login throttle (see `hanzocloud.http.client_source`)."""
    return client_source(request.scope)


class OAuthHandlers:
    """The endpoints under `/v1/iam/oauth`."""

    def __init__(self, service: IamService) -> None:
        self.service = service
        self.csrf_key = service.deps.derive_key("iam/csrf")
        self.brand = service.deps.brand
        self.secure_cookie = service.issuer.startswith("https://")

    # -- authorize -----------------------------------------------------------------------

    async def _authorize_request(self, params: dict[str, str]) -> tuple[App, str]:
        """Validate the client and redirect URI (errors here are never redirected)."""
        client_id, redirect_uri = params.get("client_id", ""), params.get("redirect_uri", "")
        app = await self.service.clients.find_app(client_id) if client_id else None
        if app is None:
            raise InvalidArgument("unknown client_id")
        if not redirect_uri or not redirect_allowed(app, redirect_uri):
            raise InvalidArgument("redirect_uri is not registered for this client")
        return app, redirect_uri

    def _redirect_error(self, redirect_uri: str, params: dict[str, str], error: str,
                        description: str) -> Response:
        out = {"error": error, "error_description": description, "iss": self.service.issuer}
        if params.get("state"):
            out["state"] = params["state"]
        return RedirectResponse(_with_params(redirect_uri, out), status_code=303)

    def _check_params(self, app: App, params: dict[str, str]) -> tuple[str, str] | None:
        """(error, description) for a bad authorization request, else None."""
        if params.get("response_type") != "code":
            return "unsupported_response_type", "response_type must be code"
        if "authorization_code" not in app.grants:
            return "unauthorized_client", "this client may not use authorization_code"
        challenge = params.get("code_challenge", "")
        if challenge:
            if params.get("code_challenge_method") != "S256":
                return "invalid_request", "code_challenge_method must be S256"
            if not CHALLENGE.fullmatch(challenge):
                return "invalid_request", "malformed code_challenge"
        elif app.public:
            return "invalid_request", "PKCE (code_challenge with S256) is required"
        try:
            check_scope(params.get("scope"))
        except OAuthError as exc:
            return exc.error, exc.description
        if len(params.get("nonce", "")) > 255 or len(params.get("state", "")) > 1024:
            return "invalid_request", "state or nonce is too long"
        return None

    def _page(self, app: App, params: dict[str, str], cookie: str, *, status: int = 200,
              email: str = "", error: str = "") -> Response:
        body = login.render(self.brand, app_name=app.name, params=params,
                            csrf=login.csrf_token(self.csrf_key, cookie), email=email,
                            error=error)
        response = HTMLResponse(body, status_code=status,
                                headers=login.security_headers(params.get("redirect_uri", "")))
        response.set_cookie(login.CSRF_COOKIE, cookie, path=login.COOKIE_PATH, httponly=True,
                            samesite="strict", secure=self.secure_cookie, max_age=3600)
        return response

    async def authorize_page(self, request: Request) -> Response:
        """Show the brand-themed sign-in page for an authorization request."""
        try:
            params = query_params(request)
        except OAuthError as exc:
            raise InvalidArgument(exc.description) from None
        app, redirect_uri = await self._authorize_request(params)
        problem = self._check_params(app, params)
        if problem:
            return self._redirect_error(redirect_uri, params, *problem)
        cookie = request.cookies.get(login.CSRF_COOKIE) or ""
        if not 16 <= len(cookie) <= 64:
            cookie = login.new_csrf_cookie()
        return self._page(app, params, cookie)

    async def authorize_submit(self, request: Request) -> Response:
        """Check the posted credentials; on success redirect back with a code and state."""
        try:
            form = await read_form(request)
        except OAuthError as exc:
            raise InvalidArgument(exc.description) from None
        cookie = request.cookies.get(login.CSRF_COOKIE)
        if not login.csrf_ok(self.csrf_key, cookie, form.get("csrf_token")):
            raise PermissionDenied("the sign-in form expired or was not sent by this site; "
                                   "reload the page and try again")
        assert cookie is not None
        app, redirect_uri = await self._authorize_request(form)
        problem = self._check_params(app, form)
        if problem:
            return self._redirect_error(redirect_uri, form, *problem)
        email = form.get("email", "")[:320]
        try:
            user = await self.service.grants.login(app.org, email, form.get("password", ""),
                                                   client_ip(request))
        except OAuthError as exc:
            return self._page(app, form, cookie, status=429, email=email, error=exc.description)
        if user is None:
            return self._page(app, form, cookie, status=401, email=email,
                              error="Invalid email or password.")
        code = await self.service.grants.issue_code(
            app, user, redirect_uri=redirect_uri, scope=check_scope(form.get("scope")),
            challenge=form.get("code_challenge", ""), nonce=form.get("nonce", ""))
        out = {"code": code, "iss": self.service.issuer}
        if form.get("state"):
            out["state"] = form["state"]
        return RedirectResponse(_with_params(redirect_uri, out), status_code=303,
                                headers={"Cache-Control": "no-store"})

    # -- token, introspect, revoke -------------------------------------------------------

    async def token(self, request: Request) -> Response:
        """The token endpoint: authorization_code, refresh_token, client_credentials, password."""
        try:
            form = await read_form(request)
            body = await self.service.grants.token(form, basic_credentials(request),
                                                   client_ip(request))
        except OAuthError as exc:
            return oauth_error_response(exc)
        return oauth_json(body)

    async def introspect(self, request: Request) -> Response:
        """RFC 7662: whether a token is active, for a confidential client of its org."""
        try:
            form = await read_form(request)
            app = await self.service.grants.authenticate_client(form, basic_credentials(request))
            if app.public:
                raise OAuthError("invalid_client", "introspection needs a confidential client",
                                 status=401)
            token = form.get("token")
            if not token:
                raise OAuthError("invalid_request", "token is required")
        except OAuthError as exc:
            return oauth_error_response(exc)
        return oauth_json(await self._introspect(app, token))

    async def _introspect(self, app: App, token: str) -> dict[str, Any]:
        inactive: dict[str, Any] = {"active": False}
        if token.startswith("hrt_"):
            return inactive  # refresh tokens are the client's own business; not introspected
        try:
            if token.startswith("hk-"):
                claims = await self.service.verify_api_key(token)
                kind = "api_key"
            else:
                claims = await self.service.verify_jwt(token)
                kind = "Bearer"
        except Unauthenticated:
            return inactive
        if claims.owner != app.org:
            return inactive  # another org's credential is not this client's to inspect
        return {"active": True, "token_type": kind, "sub": claims.sub, "scope": claims.scope,
                "client_id": claims.azp, "exp": claims.exp or None, "iat": claims.iat,
                "iss": claims.iss, "aud": claims.aud, "jti": claims.jti, "owner": claims.owner,
                "organization": claims.organization, "email": claims.email,
                "roles": list(claims.roles), "isAdmin": claims.is_admin}

    async def revoke(self, request: Request) -> Response:
        """RFC 7009: revoke a refresh or access token issued to the calling client."""
        try:
            form = await read_form(request)
            app = await self.service.grants.authenticate_client(form, basic_credentials(request))
            token = form.get("token")
            if not token:
                raise OAuthError("invalid_request", "token is required")
            hint = form.get("token_type_hint")
            if hint not in (None, "access_token", "refresh_token"):
                raise OAuthError("unsupported_token_type", "unknown token_type_hint")
        except OAuthError as exc:
            return oauth_error_response(exc)
        await self.service.grants.revoke(app, token)
        return oauth_json({})

    # -- userinfo and logout -------------------------------------------------------------

    async def userinfo(self, _: Request) -> Response:
        """OIDC UserInfo for the caller's token."""
        identity = current_identity.get()
        user = await self.service.directory.find_user(identity.org, identity.user)
        if user is None:
            return JSONResponse({"sub": identity.user, "owner": identity.org,
                                 "organization": identity.org, "roles": list(identity.roles),
                                 "isAdmin": identity.is_admin})
        return JSONResponse({"sub": user.id, "email": user.email, "name": user.name,
                             "preferred_username": user.email, "owner": user.org,
                             "organization": user.org, "roles": list(user.roles),
                             "isAdmin": user.is_admin})

    async def logout(self, request: Request) -> Response:
        """End the session named by `id_token_hint` or the bearer token; then redirect back
        if `post_logout_redirect_uri` is registered for the client."""
        try:
            params = (await read_form(request) if request.method == "POST"
                      and request.headers.get("content-type") else query_params(request))
        except OAuthError as exc:
            raise InvalidArgument(exc.description) from None
        claims = await self._session_claims(request, params.get("id_token_hint"))
        session_client = str((claims or {}).get("azp") or "")
        client_id = params.get("client_id")
        if client_id and claims is not None and client_id != session_client:
            raise InvalidArgument("client_id is not the client the session's token was issued to")
        target = params.get("post_logout_redirect_uri")
        app = None
        if target:
            # Only back to the client whose session ends, at an address it registered: a
            # bare client_id proves nothing (OIDC RP-Initiated Logout §3), and would make
            # this an open redirect for anyone able to register a client.
            if claims is None:
                raise InvalidArgument("post_logout_redirect_uri needs an id_token_hint (or the "
                                      "session's bearer token)")
            app = await self.service.clients.find_app(session_client)
            if app is None or app.org != claims.get("owner") or target not in app.redirect_uris:
                raise InvalidArgument("post_logout_redirect_uri is not registered for the client")
        ended = False
        if claims is not None and claims.get("sid"):
            await self.service.grants.revoke_family(str(claims["owner"]), str(claims["sid"]))
            ended = True
        if target:
            extra = {"state": params["state"]} if params.get("state") else {}
            return RedirectResponse(_with_params(target, extra) if extra else target, 303)
        return JSONResponse({"loggedOut": ended})

    async def _session_claims(self, request: Request, hint: str | None) -> dict[str, Any] | None:
        tokens = self.service.tokens
        try:
            if hint:
                claims = await self._decode_id_token(hint)
            else:
                header = request.headers.get("authorization", "").strip()
                scheme, _, rest = header.partition(" ")
                # "Bearer <jwt>", or the bare JWT the gateway also accepts
                bearer = rest.strip() if scheme.lower() == "bearer" else (
                    header if header.count(".") == 2 and not rest else "")
                if not bearer:
                    return None
                claims = await tokens.decode(bearer)
        except (Unauthenticated, NotFound):
            raise Unauthenticated("the token naming the session to end is not valid") from None
        tokens.tenant_of(claims)
        return claims

    async def _decode_id_token(self, token: str) -> dict[str, Any]:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Unauthenticated("malformed id_token_hint") from None
        audience = unverified.get("aud")
        if not isinstance(audience, str):
            raise Unauthenticated("malformed id_token_hint")
        # The signature, issuer and audience are verified for real here; expiry is not,
        # since logging out with an expired ID token is normal (OIDC RP-Initiated Logout).
        return await self.service.tokens.decode(token, audience=audience, typ="jwt",
                                                verify_exp=False)
