"""OAuth applications and API keys of one org: the service layer (no HTTP).

Client ids and API keys carry their org (`<org>_<random>`, `hk-<org>_<random>`; a slug never
contains `_`), so a credential finds its org's database without a global index. Client
secrets and API keys are high-entropy, so a SHA-256 hash is enough to store them; they are
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from hanzocloud.errors import InvalidArgument, NotFound
from subsystems.iam.directory import Directory
from subsystems.iam.models import GRANTS, SLUG, ApiKey, App, check_names
from subsystems.iam.store import IamStore, all_rows, dumps, loads, one, run

Clock = Callable[[], float]
KEY_PREFIX = "hk-"
LAST_USED_EVERY = 60  # seconds: last-used time is written at most this often per key
MAX_KEY_LIFE = 10 * 365 * 86400  # seconds (10 years); also keeps expires_at within SQLite's int64


def digest(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def org_of(credential: str, *, prefix: str = "") -> str | None:
    """The org slug embedded in a client id or API key, or None if it has none."""
    if not isinstance(credential, str) or not credential.startswith(prefix):
        return None
    org, sep, rest = credential[len(prefix):].partition("_")
    if not sep or not rest or not SLUG.fullmatch(org):
        return None
    return org


def check_redirect_uris(uris: object) -> list[str]:
    """Absolute http(s) URIs without fragments (OAuth 2.1 §2.3.1)."""
    if not isinstance(uris, list | tuple) or len(uris) > 20:
        raise InvalidArgument("redirectUris must be a list of at most 20 URIs")
    out = []
    for uri in uris:
        try:
            parts = urlsplit(uri) if isinstance(uri, str) and len(uri) <= 2000 else None
        except ValueError:  # e.g. an unbalanced IPv6 host, "http://[::1"
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc \
                or parts.fragment:
            raise InvalidArgument(f"redirect URI {uri!r} must be an absolute http(s) URI "
                                  "without a fragment")
        out.append(uri)
    return out


def _app(org: str, row: dict[str, Any]) -> App:
    return App(client_id=row["client_id"], org=org, name=row["name"], public=bool(row["public"]),
               redirect_uris=loads(row["redirect_uris"]), grants=loads(row["grants"]),
               roles=loads(row["roles"]), first_party=bool(row["first_party"]),
               created_at=row["created_at"], secret_hash=row["secret_hash"])


def _key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(id=row["id"], name=row["name"], prefix=row["prefix"],
                  roles=loads(row["roles"]), scopes=loads(row["scopes"]),
                  created_by=row["created_by"], created_at=row["created_at"],
                  expires_at=row["expires_at"], last_used_at=row["last_used_at"],
                  revoked_at=row["revoked_at"])


class Clients:
    """Applications (OAuth clients) and API keys."""

    def __init__(self, store: IamStore, directory: Directory, *,
                 clock: Clock = time.time) -> None:
        self.store = store
        self.directory = directory
        self.clock = clock

    # -- applications --------------------------------------------------------------------

    async def create_app(self, org: str, *, name: str, public: bool,
                         redirect_uris: Sequence[str] = (), grants: Sequence[str] = (),
                         roles: Sequence[str] = (), first_party: bool = False,
                         ) -> tuple[App, str | None]:
        """Register an OAuth client; returns it and its secret (confidential clients only)."""
        if not isinstance(name, str) or not 1 <= len(name) <= 120:
            raise InvalidArgument("name must be 1 to 120 characters")
        if not isinstance(public, bool):
            raise InvalidArgument("public must be true or false")
        grant_list = check_names(grants, "grants") or ["authorization_code", "refresh_token"]
        bad = [g for g in grant_list if g not in GRANTS]
        if bad:
            raise InvalidArgument(f"unknown grant '{bad[0]}'; valid: {', '.join(GRANTS)}")
        if public and "client_credentials" in grant_list:
            raise InvalidArgument("a public client cannot use client_credentials")
        uris = check_redirect_uris(redirect_uris)
        role_list = await self.directory.check_roles(org, roles)
        client_id = f"{org}_{secrets.token_hex(8)}"
        secret = None if public else f"hcs_{secrets.token_urlsafe(32)}"
        now = int(self.clock())
        async with self.store.org(org) as s:
            await run(s, "INSERT INTO apps (client_id, name, public, secret_hash, redirect_uris, "
                         "grants, roles, first_party, created_at) VALUES (:c, :n, :p, :h, :u, "
                         ":g, :r, :f, :now)", c=client_id, n=name, p=int(public),
                      h=digest(secret) if secret else "", u=dumps(uris), g=dumps(grant_list),
                      r=dumps(role_list), f=int(first_party), now=now)
            await s.commit()
        return App(client_id, org, name, public, uris, grant_list, role_list, first_party, now,
                   digest(secret) if secret else ""), secret

    async def get_app(self, org: str, client_id: str) -> App:
        """One app of `org`, or NotFound."""
        async with self.store.org(org) as s:
            row = await one(s, "SELECT * FROM apps WHERE client_id = :c", c=client_id)
        if row is None:
            raise NotFound("no such application")
        return _app(org, row)

    async def find_app(self, client_id: str) -> App | None:
        """The app a client id names, in whichever org it belongs to, or None."""
        org = org_of(client_id)
        if org is None or not await self.directory.org_exists(org):
            return None
        async with self.store.org(org) as s:
            row = await one(s, "SELECT * FROM apps WHERE client_id = :c", c=client_id)
        return _app(org, row) if row else None

    async def first_party_app(self, org: str) -> App:
        """The org's default first-party application."""
        async with self.store.org(org) as s:
            row = await one(s, "SELECT * FROM apps WHERE first_party = 1 "
                               "ORDER BY created_at LIMIT 1")
        if row is None:
            raise NotFound("this org has no first-party application")
        return _app(org, row)

    async def list_apps(self, org: str) -> list[App]:
        """Every app of `org`."""
        async with self.store.org(org) as s:
            rows = await all_rows(s, "SELECT * FROM apps ORDER BY created_at, client_id")
        return [_app(org, r) for r in rows]

    async def update_app(self, org: str, client_id: str, *, name: str | None = None,
                         redirect_uris: Sequence[str] | None = None,
                         grants: Sequence[str] | None = None) -> App:
        """Change an app's name, redirect URIs or allowed grants (e.g. switch off password)."""
        app = await self.get_app(org, client_id)
        updates: dict[str, Any] = {}
        if name is not None:
            if not isinstance(name, str) or not 1 <= len(name) <= 120:
                raise InvalidArgument("name must be 1 to 120 characters")
            updates["name"] = name
        if redirect_uris is not None:
            updates["redirect_uris"] = dumps(check_redirect_uris(redirect_uris))
        if grants is not None:
            grant_list = check_names(grants, "grants")
            bad = [g for g in grant_list if g not in GRANTS]
            if bad:
                raise InvalidArgument(f"unknown grant '{bad[0]}'; valid: {', '.join(GRANTS)}")
            if app.public and "client_credentials" in grant_list:
                raise InvalidArgument("a public client cannot use client_credentials")
            updates["grants"] = dumps(grant_list)
        if updates:
            sets = ", ".join(f"{col} = :{col}" for col in updates)  # column names are ours
            async with self.store.org(org) as s:
                await run(s, f"UPDATE apps SET {sets} WHERE client_id = :c", c=client_id,
                          **updates)
                await s.commit()
        return await self.get_app(org, client_id)

    async def delete_app(self, org: str, client_id: str) -> None:
        """Remove an app and revoke every session issued to it."""
        async with self.store.org(org) as s:
            if not await run(s, "DELETE FROM apps WHERE client_id = :c", c=client_id):
                raise NotFound("no such application")
            await run(s, "UPDATE families SET revoked_at = :now WHERE client_id = :c "
                         "AND revoked_at IS NULL", c=client_id, now=int(self.clock()))
            await s.commit()

    @staticmethod
    def secret_matches(app: App, secret: str) -> bool:
        """Constant-time check of a confidential client's secret."""
        if app.public or not app.secret_hash or not isinstance(secret, str):
            return False
        return hmac.compare_digest(digest(secret), app.secret_hash)

    # -- API keys ------------------------------------------------------------------------

    async def create_api_key(self, org: str, *, name: str, roles: Sequence[str],
                             scopes: Sequence[str] = (), created_by: str,
                             expires_in: int | None = None) -> tuple[ApiKey, str]:
        """Mint an API key; the key itself is returned once and stored only hashed."""
        if not isinstance(name, str) or not 1 <= len(name) <= 120:
            raise InvalidArgument("name must be 1 to 120 characters")
        role_list = await self.directory.check_roles(org, roles)
        scope_list = check_names(scopes, "scopes")
        if expires_in is not None and (isinstance(expires_in, bool)
                                       or not isinstance(expires_in, int)
                                       or not 1 <= expires_in <= MAX_KEY_LIFE):
            raise InvalidArgument(f"expiresIn must be a whole number of seconds from 1 to "
                                  f"{MAX_KEY_LIFE} (10 years)")
        secret = secrets.token_urlsafe(32)
        key = f"{KEY_PREFIX}{org}_{secret}"
        now = int(self.clock())
        record = ApiKey(id=f"key_{secrets.token_hex(8)}", name=name,
                        prefix=f"{KEY_PREFIX}{org}_{secret[:6]}", roles=role_list,
                        scopes=scope_list, created_by=created_by, created_at=now,
                        expires_at=now + expires_in if expires_in else None,
                        last_used_at=None, revoked_at=None)
        async with self.store.org(org) as s:
            await run(s, "INSERT INTO api_keys (id, hash, prefix, name, roles, scopes, "
                         "created_by, created_at, expires_at) VALUES (:id, :h, :p, :n, :r, :sc, "
                         ":by, :now, :exp)", id=record.id, h=digest(key), p=record.prefix,
                      n=name, r=dumps(role_list), sc=dumps(scope_list), by=created_by, now=now,
                      exp=record.expires_at)
            await s.commit()
        return record, key

    async def list_api_keys(self, org: str) -> list[ApiKey]:
        """Every API key of `org` (metadata only)."""
        async with self.store.org(org) as s:
            rows = await all_rows(s, "SELECT * FROM api_keys ORDER BY created_at, id")
        return [_key(r) for r in rows]

    async def revoke_api_key(self, org: str, key_id: str) -> ApiKey:
        """Revoke a key of `org`; it stops working at once here, within the cache window
        at remote gateways."""
        now = int(self.clock())
        async with self.store.org(org) as s:
            row = await one(s, "SELECT * FROM api_keys WHERE id = :id", id=key_id)
            if row is None:
                raise NotFound("no such API key")
            if row["revoked_at"] is None:
                await run(s, "UPDATE api_keys SET revoked_at = :now WHERE id = :id",
                          id=key_id, now=now)
                await s.commit()
                row["revoked_at"] = now
        return _key(row)

    async def lookup_api_key(self, key: str) -> tuple[str, ApiKey] | None:
        """The org and record of a live key (not revoked, not expired), else None."""
        org = org_of(key, prefix=KEY_PREFIX)
        if org is None or len(key) > 200 or not await self.directory.org_exists(org):
            return None
        now = int(self.clock())
        async with self.store.org(org) as s:
            row = await one(s, "SELECT * FROM api_keys WHERE hash = :h", h=digest(key))
            if row is None or row["revoked_at"] is not None:
                return None
            if row["expires_at"] is not None and row["expires_at"] <= now:
                return None
            if row["last_used_at"] is None or now - row["last_used_at"] >= LAST_USED_EVERY:
                await run(s, "UPDATE api_keys SET last_used_at = :now WHERE id = :id",
                          id=row["id"], now=now)
                await s.commit()
                row["last_used_at"] = now
        return org, _key(row)
