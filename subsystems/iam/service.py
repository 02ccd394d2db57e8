"""IamService: the in-process `iam` client (the `Iam` ZAP interface) and what iam is made of.

`verify_jwt`, `verify_api_key`, `get_user` and `get_org` are the methods other subsystems
(above all the gateway) call through `deps.iam`; the rest is iam's own service layer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog

from hanzocloud.deps import Deps
from hanzocloud.errors import NotFound, Unauthenticated
from hanzocloud.identity import current_identity
from hanzocloud.zap.gen.iam import Claims, Org, User
from subsystems.iam.clients import Clients
from subsystems.iam.config import IamConfig, api_audience
from subsystems.iam.directory import Directory
from subsystems.iam.grants import Grants
from subsystems.iam.keys import KeyRing
from subsystems.iam.models import check_email
from subsystems.iam.passwords import Passwords, Throttle, check_password_policy
from subsystems.iam.store import IamStore
from subsystems.iam.tokens import Tokens, claims_struct

log = structlog.get_logger("hanzocloud.iam")
REVOKED = "iam.credential.revoked"
REVOKED_DOC = ("a session, access token, API key, user or app was revoked: "
               "caches of verified credentials must forget what they hold")
LOOPBACK_REDIRECTS = ("http://127.0.0.1/callback", "http://localhost/callback")


def _console_name(org: str, display_name: str = "") -> str:
    """The first-party app's name; cut so a 120-character display name still fits."""
    return f"{(display_name or org)[:112]} console"


class IamService:
    """Orgs, users, apps, keys, tokens: everything iam does, without HTTP."""

    def __init__(self, deps: Deps, config: IamConfig) -> None:
        self.deps = deps
        self.config = config
        self.issuer = deps.issuer.rstrip("/")
        self.store = IamStore(deps.tenants)
        self.passwords = Passwords(config)
        self.throttle = Throttle(config)
        self.directory = Directory(self.store, self.passwords)
        self.clients = Clients(self.store, self.directory)
        # Bound to global/iam.db's own page key, so master-key rotation leaves it intact.
        self.keys = KeyRing(self.store, deps.tenants.global_file_key("iam", "iam/signing"),
                            config)
        self.tokens = Tokens(self.keys, config, issuer=self.issuer,
                             audience=api_audience(config, self.issuer))
        self.grants = Grants(self.directory, self.clients, self.tokens, self.throttle, config,
                             notify=self.notify_revoked)

    async def notify_revoked(self, payload: dict[str, Any]) -> None:
        """Tell every in-process cache that a credential was revoked."""
        await self.deps.events.emit(REVOKED, payload)

    # -- the Iam interface ---------------------------------------------------------------

    async def verify_jwt(self, token: str) -> Claims:
        """Verify an access token: signature, issuer, audience, expiry, tenant, revocation."""
        claims = await self.tokens.decode(token)
        org = self.tokens.tenant_of(claims)
        if not await self.directory.org_exists(org):
            raise Unauthenticated("invalid token: unknown org")
        if await self.grants.is_revoked(org, claims):
            raise Unauthenticated("invalid token: revoked")
        return claims_struct(claims, self.tokens.audience)

    async def verify_api_key(self, key: str) -> Claims:
        """Verify an `hk-` API key and record its use."""
        found = await self.clients.lookup_api_key(key)
        if found is None:
            raise Unauthenticated("invalid API key")
        org, record = found
        return Claims(iss=self.issuer, sub=record.id, aud=self.tokens.audience,
                      exp=record.expires_at or 0, iat=record.created_at, jti=record.id,
                      owner=org, organization=org, name=record.name, roles=list(record.roles),
                      is_admin=False, scope=" ".join(record.scopes), kind="apikey")

    async def get_user(self, id: str) -> User:  # noqa: A002 - the schema names it `id`
        """A user of the caller's org."""
        org = current_identity.get().org
        if not org:
            raise Unauthenticated("get_user needs a caller that belongs to an org")
        return await self.directory.get_user(org, id)

    async def get_org(self, slug: str) -> Org:
        """The caller's own org; platform admins may ask for any."""
        identity = current_identity.get()
        if not identity.authenticated:
            raise Unauthenticated("get_org needs an authenticated caller")
        if slug != identity.org and not identity.is_admin:
            raise NotFound("no such org")
        return await self.directory.get_org(slug)

    # -- composite operations ------------------------------------------------------------

    async def bootstrap(self, org: str, *, email: str, password: str,
                        platform_admin: bool = False, display_name: str = "") -> dict[str, str]:
        """Create an org, its owner and its first-party application (public client)."""
        check_email(email)  # validate everything before the org exists
        check_password_policy(password)
        await self.directory.create_org(org, display_name)
        user = await self.directory.create_user(org, email=email, password=password,
                                                roles=["owner"], is_admin=platform_admin)
        app, _ = await self.clients.create_app(
            org, name=_console_name(org, display_name), public=True,
            redirect_uris=list(LOOPBACK_REDIRECTS),
            grants=["authorization_code", "refresh_token", "password"], first_party=True)
        log.info("iam_bootstrap", org=org, platform_admin=platform_admin)
        return {"org": org, "user_id": user.id, "client_id": app.client_id}

    async def ensure_org(self, org: str, display_name: str = "") -> None:
        """Create `org` with its first-party application unless it exists (tests, dev)."""
        if await self.directory.org_exists(org):
            return
        await self.directory.create_org(org, display_name)
        await self.clients.create_app(
            org, name=_console_name(org, display_name), public=True,
            redirect_uris=list(LOOPBACK_REDIRECTS),
            grants=["authorization_code", "refresh_token", "password"], first_party=True)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Load the signing keys, then rotate them on schedule until shutdown."""
        self.passwords.prepare()
        await self.keys.load()
        task = asyncio.create_task(self._rotation_loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _rotation_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.rotate_check)
            try:
                if await self.keys.needs_rotation():
                    key = await self.keys.rotate()
                    log.info("iam_signing_key_rotated", kid=key.kid, alg=key.alg)
            except Exception:  # noqa: BLE001 - a failed check must not end the schedule
                log.exception("iam_rotation_check_failed")
