"""HTTP handlers that manage an org's users, roles, applications and API keys, and (platform
admin only) the orgs themselves. The org is always the caller's, from the minted identity."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hanzocloud.errors import InvalidArgument, PermissionDenied
from hanzocloud.http import JSONResponse
from hanzocloud.identity import current_identity
from hanzocloud.routing import has_role, json_body, require_org
from hanzocloud.zap.gen.iam import Org, User
from subsystems.iam.models import BUILTIN_ROLES
from subsystems.iam.service import IamService


def _obj(body: Any, allowed: set[str], *, nullable: frozenset[str] = frozenset()
         ) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidArgument("expected a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidArgument(f"unknown field '{unknown[0]}'")
    # null is not "leave it out": a field that is sent must have a value of its type
    nulls = sorted(k for k, v in body.items() if v is None and k not in nullable)
    if nulls:
        raise InvalidArgument(f"{nulls[0]} must not be null")
    return body


def _grantable(roles: Any) -> list[str]:
    """The caller may hand out only roles it holds itself (or lower built-in ones)."""
    if not isinstance(roles, list):
        raise InvalidArgument("roles must be a list of role names")
    identity = current_identity.get()
    for role in roles:
        if not isinstance(role, str):
            raise InvalidArgument("roles must be a list of role names")
        # built-in roles rank; custom roles are granted by the org's admins and owners
        needed = role if role in BUILTIN_ROLES else "admin"
        if not has_role(identity, needed):
            raise PermissionDenied(f"you cannot grant role '{role}'")
    return roles


def _may_manage(target: User, verb: str) -> None:
    """Nobody changes or removes a user who outranks them: one holding a role they lack, or
    a platform admin (unless they are one too), whatever role that admin holds in the org."""
    identity = current_identity.get()
    if target.is_admin and not identity.is_admin:
        raise PermissionDenied(f"you cannot {verb} a platform admin")
    for role in target.roles:
        if not has_role(identity, role):
            raise PermissionDenied(f"you cannot {verb} a user who holds a higher role")


def user_json(user: User) -> dict[str, Any]:
    """A user as the API shows it."""
    return {"id": user.id, "email": user.email, "name": user.name, "roles": list(user.roles),
            "isAdmin": user.is_admin, "disabled": user.disabled, "createdAt": user.created_at}


def org_json(org: Org) -> dict[str, Any]:
    """An org as the API shows it."""
    return {"slug": org.slug, "displayName": org.display_name, "createdAt": org.created_at}


class ManageHandlers:
    """Users, roles, apps, API keys, orgs and signing keys."""

    def __init__(self, service: IamService) -> None:
        self.s = service

    # -- orgs (platform admin) -----------------------------------------------------------

    async def list_orgs(self, _: Request) -> Response:
        """Every org (platform admin)."""
        return JSONResponse({"items": [org_json(o) for o in await self.s.directory.list_orgs()]})

    async def create_org(self, request: Request) -> Response:
        """Create an org with its owner and first-party app (platform admin)."""
        body = _obj(await json_body(request), {"slug", "displayName", "ownerEmail",
                                               "ownerPassword"})
        for field in ("slug", "ownerEmail", "ownerPassword"):
            if not isinstance(body.get(field), str):
                raise InvalidArgument(f"{field} is required")
        made = await self.s.bootstrap(body["slug"], email=body["ownerEmail"],
                                      password=body["ownerPassword"],
                                      display_name=body.get("displayName", ""))
        return JSONResponse(made, status_code=201)

    async def get_org(self, request: Request) -> Response:
        """One org (platform admin)."""
        return JSONResponse(org_json(await self.s.directory.get_org(
            request.path_params["slug"])))

    async def my_org(self, _: Request) -> Response:
        """The caller's org."""
        return JSONResponse(org_json(await self.s.directory.get_org(require_org())))

    # -- users ---------------------------------------------------------------------------

    async def list_users(self, _: Request) -> Response:
        """The org's users."""
        users = await self.s.directory.list_users(require_org())
        return JSONResponse({"items": [user_json(u) for u in users]})

    async def create_user(self, request: Request) -> Response:
        """Add a user to the org."""
        org = require_org()
        body = _obj(await json_body(request), {"email", "password", "name", "roles", "isAdmin"})
        if body.get("isAdmin") and not current_identity.get().is_admin:
            raise PermissionDenied("only the platform admin can make platform admins")
        if not isinstance(body.get("password"), str):
            raise InvalidArgument("password is required")
        user = await self.s.directory.create_user(
            org, email=body.get("email"), password=body["password"],  # type: ignore[arg-type]
            name=body.get("name", ""), roles=_grantable(body.get("roles", ["viewer"])),
            is_admin=body.get("isAdmin", False))
        return JSONResponse(user_json(user), status_code=201)

    async def get_user(self, request: Request) -> Response:
        """One user of the org."""
        user = await self.s.directory.get_user(require_org(), request.path_params["id"])
        return JSONResponse(user_json(user))

    async def me(self, _: Request) -> Response:
        """The calling user."""
        identity = current_identity.get()
        return JSONResponse(user_json(await self.s.directory.get_user(require_org(),
                                                                      identity.user)))

    async def update_user(self, request: Request) -> Response:
        """Change a user's name, roles, password or disabled flag (a new password ends the
        user's sessions)."""
        org = require_org()
        body = _obj(await json_body(request), {"name", "roles", "disabled", "password",
                                               "isAdmin"})
        if "isAdmin" in body and not current_identity.get().is_admin:
            raise PermissionDenied("only the platform admin can change isAdmin")
        target = await self.s.directory.get_user(org, request.path_params["id"])
        _may_manage(target, "change")
        roles = _grantable(body["roles"]) if "roles" in body else None
        user = await self.s.directory.update_user(
            org, target.id, name=body.get("name"), roles=roles, disabled=body.get("disabled"),
            password=body.get("password"), is_admin=body.get("isAdmin"))
        if body.get("disabled") or {"roles", "isAdmin", "password"} & body.keys():
            await self.s.notify_revoked({"kind": "user", "org": org, "id": user.id})
        return JSONResponse(user_json(user))

    async def delete_user(self, request: Request) -> Response:
        """Remove a user of the org and end their sessions."""
        org = require_org()
        target = await self.s.directory.get_user(org, request.path_params["id"])
        _may_manage(target, "remove")
        await self.s.directory.delete_user(org, target.id)
        await self.s.notify_revoked({"kind": "user", "org": org, "id": target.id})
        return Response(status_code=204)

    # -- roles ---------------------------------------------------------------------------

    async def list_roles(self, _: Request) -> Response:
        """Built-in and custom roles of the org."""
        return JSONResponse({"items": await self.s.directory.list_roles(require_org())})

    async def create_role(self, request: Request) -> Response:
        """Add a custom role."""
        body = _obj(await json_body(request), {"name", "description"})
        role = await self.s.directory.create_role(require_org(), body.get("name"),  # type: ignore[arg-type]
                                                  body.get("description", ""))
        return JSONResponse(role, status_code=201)

    async def delete_role(self, request: Request) -> Response:
        """Remove a custom role."""
        await self.s.directory.delete_role(require_org(), request.path_params["name"])
        return Response(status_code=204)

    # -- applications --------------------------------------------------------------------

    async def list_apps(self, _: Request) -> Response:
        """The org's OAuth applications."""
        apps = await self.s.clients.list_apps(require_org())
        return JSONResponse({"items": [a.to_json() for a in apps]})

    async def create_app(self, request: Request) -> Response:
        """Register an OAuth application; a confidential one's secret is shown once."""
        body = _obj(await json_body(request), {"name", "public", "redirectUris", "grants",
                                               "roles"})
        app, secret = await self.s.clients.create_app(
            require_org(), name=body.get("name"), public=body.get("public", False),  # type: ignore[arg-type]
            redirect_uris=body.get("redirectUris", []), grants=body.get("grants", []),
            roles=_grantable(body.get("roles", [])))
        out = app.to_json()
        if secret:
            out["clientSecret"] = secret
        return JSONResponse(out, status_code=201)

    async def get_app(self, request: Request) -> Response:
        """One application of the org."""
        app = await self.s.clients.get_app(require_org(), request.path_params["client_id"])
        return JSONResponse(app.to_json())

    async def update_app(self, request: Request) -> Response:
        """Change an application's name, redirect URIs or grants."""
        body = _obj(await json_body(request), {"name", "redirectUris", "grants"})
        app = await self.s.clients.update_app(
            require_org(), request.path_params["client_id"], name=body.get("name"),
            redirect_uris=body.get("redirectUris"), grants=body.get("grants"))
        return JSONResponse(app.to_json())

    async def delete_app(self, request: Request) -> Response:
        """Remove an application and end its sessions."""
        org = require_org()
        await self.s.clients.delete_app(org, request.path_params["client_id"])
        await self.s.notify_revoked({"kind": "app", "org": org,
                                     "id": request.path_params["client_id"]})
        return Response(status_code=204)

    # -- API keys ------------------------------------------------------------------------

    async def list_keys(self, _: Request) -> Response:
        """The org's API keys (never the keys themselves)."""
        keys = await self.s.clients.list_api_keys(require_org())
        return JSONResponse({"items": [k.to_json() for k in keys]})

    async def create_key(self, request: Request) -> Response:
        """Mint an API key; the response is the only time the key is shown."""
        body = _obj(await json_body(request), {"name", "roles", "scopes", "expiresIn"},
                    nullable=frozenset({"expiresIn"}))  # null: the key never expires
        identity = current_identity.get()
        record, key = await self.s.clients.create_api_key(
            require_org(), name=body.get("name"),  # type: ignore[arg-type]
            roles=_grantable(body.get("roles", ["viewer"])), scopes=body.get("scopes", []),
            created_by=identity.user, expires_in=body.get("expiresIn"))
        return JSONResponse({**record.to_json(), "key": key}, status_code=201)

    async def revoke_key(self, request: Request) -> Response:
        """Revoke an API key."""
        org = require_org()
        record = await self.s.clients.revoke_api_key(org, request.path_params["id"])
        await self.s.notify_revoked({"kind": "apikey", "org": org, "id": record.id})
        return JSONResponse(record.to_json())

    # -- signing keys (admin listener) ---------------------------------------------------

    async def list_signing_keys(self, _: Request) -> Response:
        """Published signing keys (public halves)."""
        await self.s.keys.refresh()
        return JSONResponse(self.s.keys.jwks())

    async def rotate_signing_keys(self, _: Request) -> Response:
        """Rotate now: a new key signs; the old one stays published until its tokens expire."""
        key = await self.s.keys.rotate()
        return JSONResponse({"kid": key.kid, "alg": key.alg}, status_code=201)

