"""iam's records as they leave the service layer (no secrets, no hashes)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hanzocloud.errors import InvalidArgument

BUILTIN_ROLES = ("owner", "admin", "editor", "viewer")
GRANTS = ("authorization_code", "refresh_token", "client_credentials", "password")
ROLE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
EMAIL = re.compile(r"^[^@\s]{1,128}@[^@\s]{1,253}$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def check_slug(slug: object) -> str:
    """An org slug, or InvalidArgument."""
    if not isinstance(slug, str) or not SLUG.fullmatch(slug):
        raise InvalidArgument("org slug must match ^[a-z0-9][a-z0-9-]{0,62}$")
    return slug


def check_email(email: object) -> str:
    """A normalised (lower-case) email address, or InvalidArgument."""
    if not isinstance(email, str) or not EMAIL.fullmatch(email.strip()):
        raise InvalidArgument("email must look like name@domain")
    return email.strip().lower()


def check_names(values: object, what: str) -> list[str]:
    """A list of role (or scope) names, or InvalidArgument."""
    if not isinstance(values, list | tuple) or not all(
            isinstance(v, str) and ROLE_NAME.fullmatch(v) for v in values):
        raise InvalidArgument(f"{what} must be a list of names matching ^[a-z][a-z0-9_-]*$")
    return list(dict.fromkeys(values))


@dataclass(frozen=True, slots=True)
class App:
    """An OAuth client of one org."""

    client_id: str
    org: str
    name: str
    public: bool
    redirect_uris: list[str]
    grants: list[str]
    roles: list[str]
    first_party: bool
    created_at: int
    secret_hash: str = field(default="", repr=False)

    def to_json(self) -> dict[str, Any]:
        """The app as the API shows it."""
        return {"clientId": self.client_id, "name": self.name, "public": self.public,
                "redirectUris": self.redirect_uris, "grants": self.grants,
                "roles": self.roles, "firstParty": self.first_party,
                "createdAt": self.created_at}


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's metadata (the key itself is shown once, at creation)."""

    id: str
    name: str
    prefix: str
    roles: list[str]
    scopes: list[str]
    created_by: str
    created_at: int
    expires_at: int | None
    last_used_at: int | None
    revoked_at: int | None

    def to_json(self) -> dict[str, Any]:
        """The key as the API shows it."""
        return {"id": self.id, "name": self.name, "prefix": self.prefix, "roles": self.roles,
                "scopes": self.scopes, "createdBy": self.created_by,
                "createdAt": self.created_at, "expiresAt": self.expires_at,
                "lastUsedAt": self.last_used_at, "revokedAt": self.revoked_at}
