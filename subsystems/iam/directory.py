"""Orgs, roles and users: the service layer (no HTTP), one org's rows in its own database."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from hanzocloud.errors import Conflict, InvalidArgument, NotFound
from hanzocloud.zap.gen.iam import Org, User
from subsystems.iam.models import (
    BUILTIN_ROLES,
    ROLE_NAME,
    USER_ID,
    check_email,
    check_names,
    check_slug,
)
from subsystems.iam.passwords import Passwords
from subsystems.iam.store import DUPLICATE, IamStore, all_rows, dumps, loads, one, run

Clock = Callable[[], float]


def _user(org: str, row: dict[str, Any]) -> User:
    return User(id=row["id"], org=org, email=row["email"], name=row["name"],
                roles=loads(row["roles"]), is_admin=bool(row["is_admin"]),
                disabled=bool(row["disabled"]), created_at=row["created_at"])


class Directory:
    """Orgs (platform-wide), and each org's roles and users."""

    def __init__(self, store: IamStore, passwords: Passwords, *, clock: Clock = time.time) -> None:
        self.store = store
        self.passwords = passwords
        self.clock = clock
        self._orgs: set[str] = set()

    # -- orgs ----------------------------------------------------------------------------

    async def org_exists(self, slug: str) -> bool:
        """Whether `slug` is an org; checked before any per-org file is opened or created."""
        if slug in self._orgs:
            return True
        try:
            check_slug(slug)
        except InvalidArgument:
            return False
        async with self.store.platform() as s:
            found = await one(s, "SELECT slug FROM orgs WHERE slug = :s", s=slug)
        if found:  # orgs are never renamed, so a positive answer can be cached
            self._orgs.add(slug)
        return found is not None

    async def require_org(self, slug: str) -> str:
        """`slug` if it is an org, else NotFound."""
        if not await self.org_exists(slug):
            raise NotFound("no such org")
        return slug

    async def create_org(self, slug: str, display_name: str = "") -> Org:
        """Create an org (platform admin only, enforced by the caller)."""
        check_slug(slug)
        if not isinstance(display_name, str) or len(display_name) > 120:
            raise InvalidArgument("displayName must be a string of at most 120 characters")
        now = int(self.clock())
        async with self.store.platform() as s:
            try:
                await run(s, "INSERT INTO orgs (slug, display_name, created_at) "
                             "VALUES (:s, :d, :now)", s=slug, d=display_name or slug, now=now)
                await s.commit()
            except DUPLICATE:
                raise Conflict(f"org '{slug}' already exists") from None
        self._orgs.add(slug)
        return Org(slug=slug, display_name=display_name or slug, created_at=now)

    async def get_org(self, slug: str) -> Org:
        """One org, or NotFound."""
        async with self.store.platform() as s:
            row = await one(s, "SELECT * FROM orgs WHERE slug = :s", s=slug)
        if row is None:
            raise NotFound("no such org")
        return Org(slug=row["slug"], display_name=row["display_name"],
                   created_at=row["created_at"])

    async def list_orgs(self) -> list[Org]:
        """Every org, by slug."""
        async with self.store.platform() as s:
            rows = await all_rows(s, "SELECT * FROM orgs ORDER BY slug")
        return [Org(slug=r["slug"], display_name=r["display_name"], created_at=r["created_at"])
                for r in rows]

    # -- roles ---------------------------------------------------------------------------

    async def list_roles(self, org: str) -> list[dict[str, Any]]:
        """Built-in roles first, then the org's custom roles."""
        async with self.store.org(org) as s:
            rows = await all_rows(s, "SELECT * FROM roles ORDER BY name")
        builtin = [{"name": r, "builtin": True, "description": f"built-in role {r}"}
                   for r in BUILTIN_ROLES]
        return builtin + [{"name": r["name"], "builtin": False,
                           "description": r["description"]} for r in rows]

    async def known_roles(self, org: str) -> set[str]:
        """Every role name valid in `org`."""
        return {r["name"] for r in await self.list_roles(org)}

    async def create_role(self, org: str, name: str, description: str = "") -> dict[str, Any]:
        """Add a custom role to `org`."""
        if not isinstance(name, str) or not ROLE_NAME.fullmatch(name):
            raise InvalidArgument("role name must match ^[a-z][a-z0-9_-]{0,62}$")
        if not isinstance(description, str) or len(description) > 500:
            raise InvalidArgument("description must be a string of at most 500 characters")
        if name in BUILTIN_ROLES:
            raise Conflict(f"'{name}' is a built-in role")
        async with self.store.org(org) as s:
            try:
                await run(s, "INSERT INTO roles (name, description, created_at) "
                             "VALUES (:n, :d, :now)", n=name, d=description, now=int(self.clock()))
                await s.commit()
            except DUPLICATE:
                raise Conflict(f"role '{name}' already exists") from None
        return {"name": name, "builtin": False, "description": description}

    async def delete_role(self, org: str, name: str) -> None:
        """Remove a custom role (built-in roles cannot be removed)."""
        if name in BUILTIN_ROLES:
            raise InvalidArgument(f"'{name}' is a built-in role and cannot be removed")
        async with self.store.org(org) as s:
            if not await run(s, "DELETE FROM roles WHERE name = :n", n=name):
                raise NotFound("no such role")
            await s.commit()

    async def check_roles(self, org: str, roles: object) -> list[str]:
        """Validate a role list against the org's roles."""
        names = check_names(roles, "roles")
        unknown = sorted(set(names) - await self.known_roles(org))
        if unknown:
            raise InvalidArgument(f"unknown role '{unknown[0]}' in this org")
        return names

    # -- users ---------------------------------------------------------------------------

    async def create_user(self, org: str, *, email: str, password: str, name: str = "",
                          roles: Sequence[str] = ("viewer",), is_admin: bool = False,
                          user_id: str | None = None) -> User:
        """Create a user of `org` with an argon2id password hash."""
        email = check_email(email)
        checked = await self.check_roles(org, roles)
        if user_id is not None and not (isinstance(user_id, str) and USER_ID.fullmatch(user_id)):
            raise InvalidArgument("user id must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
        if not isinstance(name, str) or len(name) > 200:
            raise InvalidArgument("name must be a string of at most 200 characters")
        if not isinstance(is_admin, bool):
            raise InvalidArgument("isAdmin must be true or false")
        uid = user_id or f"usr_{secrets.token_hex(8)}"
        digest = await self.passwords.hash(password)
        now = int(self.clock())
        async with self.store.org(org) as s:
            try:
                await run(s, "INSERT INTO users (id, email, name, password_hash, roles, is_admin, "
                             "created_at) VALUES (:id, :e, :n, :h, :r, :a, :now)",
                          id=uid, e=email, n=name or email.split("@")[0], h=digest,
                          r=dumps(checked), a=int(is_admin), now=now)
                await s.commit()
            except DUPLICATE:
                raise Conflict("a user with that id or email already exists in this org") from None
        return User(id=uid, org=org, email=email, name=name or email.split("@")[0],
                    roles=checked, is_admin=is_admin, disabled=False, created_at=now)

    async def get_user(self, org: str, user_id: str) -> User:
        """One user of `org`, or NotFound."""
        async with self.store.org(org) as s:
            row = await one(s, "SELECT * FROM users WHERE id = :id", id=user_id)
        if row is None:
            raise NotFound("no such user")
        return _user(org, row)

    async def find_user(self, org: str, user_id: str) -> User | None:
        """One user of `org`, or None."""
        async with self.store.org(org) as s:
            row = await one(s, "SELECT * FROM users WHERE id = :id", id=user_id)
        return _user(org, row) if row else None

    async def list_users(self, org: str) -> list[User]:
        """Every user of `org`, oldest first."""
        async with self.store.org(org) as s:
            rows = await all_rows(s, "SELECT * FROM users ORDER BY created_at, id")
        return [_user(org, r) for r in rows]

    async def update_user(self, org: str, user_id: str, *, name: str | None = None,
                          roles: Sequence[str] | None = None, disabled: bool | None = None,
                          password: str | None = None, is_admin: bool | None = None) -> User:
        """Change a user's name, roles, disabled flag, password or platform-admin flag.

        A new password ends every session the user has (their refresh tokens and the access
        tokens issued from them): whoever knew the old one, or held a session opened with
        it, must sign in again."""
        current = await self.get_user(org, user_id)
        updates: dict[str, Any] = {}
        if name is not None:
            if not isinstance(name, str) or len(name) > 200:
                raise InvalidArgument("name must be a string of at most 200 characters")
            updates["name"] = name
        if roles is not None:
            updates["roles"] = dumps(await self.check_roles(org, roles))
        if disabled is not None:
            if not isinstance(disabled, bool):
                raise InvalidArgument("disabled must be true or false")
            updates["disabled"] = int(disabled)
        if is_admin is not None:
            if not isinstance(is_admin, bool):
                raise InvalidArgument("isAdmin must be true or false")
            updates["is_admin"] = int(is_admin)
        if password is not None:
            updates["password_hash"] = await self.passwords.hash(password)
        if updates:
            sets = ", ".join(f"{col} = :{col}" for col in updates)  # column names are ours
            async with self.store.org(org) as s:
                await run(s, f"UPDATE users SET {sets} WHERE id = :id", id=current.id, **updates)
                if password is not None:
                    await run(s, "UPDATE families SET revoked_at = :now WHERE user_id = :id "
                                 "AND revoked_at IS NULL", id=current.id, now=int(self.clock()))
                await s.commit()
        return await self.get_user(org, user_id)

    async def delete_user(self, org: str, user_id: str) -> None:
        """Remove a user and revoke their sessions."""
        async with self.store.org(org) as s:
            if not await run(s, "DELETE FROM users WHERE id = :id", id=user_id):
                raise NotFound("no such user")
            await run(s, "UPDATE families SET revoked_at = :now WHERE user_id = :id "
                         "AND revoked_at IS NULL", id=user_id, now=int(self.clock()))
            await s.commit()

    async def authenticate(self, org: str, email: str, password: str) -> User | None:
        """The user whose email and password match, else None (same cost either way)."""
        try:
            normalised = check_email(email)
        except InvalidArgument:
            normalised = ""
        row = None
        if normalised:
            async with self.store.org(org) as s:
                row = await one(s, "SELECT * FROM users WHERE email = :e", e=normalised)
        ok = await self.passwords.verify(row["password_hash"] if row else None, password)
        if not ok or row is None or row["disabled"]:
            return None
        return _user(org, row)
