"""iam's routes, as data: public OAuth/OIDC endpoints, org management, admin listener."""

from __future__ import annotations

from starlette.routing import BaseRoute

from hanzocloud.routing import route
from subsystems.iam.handlers.manage import ManageHandlers
from subsystems.iam.handlers.oauth import OAuthHandlers
from subsystems.iam.handlers.wellknown import WellKnownHandlers

GET, POST, PATCH, DELETE = ["GET"], ["POST"], ["PATCH"], ["DELETE"]


def public_routes(o: OAuthHandlers, m: ManageHandlers, w: WellKnownHandlers) -> list[BaseRoute]:
    """Everything under `/v1/iam`."""
    return [
        route("/.well-known/jwks", w.jwks, policy="public"),
        route("/.well-known/openid-configuration", w.openid_configuration, policy="public",
              include_in_schema=False),
        route("/oauth/authorize", o.authorize_page, methods=GET, policy="public"),
        route("/oauth/authorize", o.authorize_submit, methods=POST, policy="public"),
        route("/oauth/token", o.token, methods=POST, policy="public"),
        route("/oauth/introspect", o.introspect, methods=POST, policy="public"),
        route("/oauth/revoke", o.revoke, methods=POST, policy="public"),
        route("/oauth/userinfo", o.userinfo, methods=["GET", "POST"]),
        route("/oauth/logout", o.logout, methods=["GET", "POST"], policy="public"),
        route("/orgs", m.list_orgs, methods=GET, policy="admin"),
        route("/orgs", m.create_org, methods=POST, policy="admin"),
        route("/orgs/{slug}", m.get_org, methods=GET, policy="admin"),
        route("/org", m.my_org, methods=GET),
        route("/me", m.me, methods=GET),
        route("/users", m.list_users, methods=GET, policy="role:admin"),
        route("/users", m.create_user, methods=POST, policy="role:admin"),
        route("/users/{id}", m.get_user, methods=GET, policy="role:admin"),
        route("/users/{id}", m.update_user, methods=PATCH, policy="role:admin"),
        route("/users/{id}", m.delete_user, methods=DELETE, policy="role:admin"),
        route("/roles", m.list_roles, methods=GET),
        route("/roles", m.create_role, methods=POST, policy="role:admin"),
        route("/roles/{name}", m.delete_role, methods=DELETE, policy="role:admin"),
        route("/apps", m.list_apps, methods=GET, policy="role:admin"),
        route("/apps", m.create_app, methods=POST, policy="role:admin"),
        route("/apps/{client_id}", m.get_app, methods=GET, policy="role:admin"),
        route("/apps/{client_id}", m.update_app, methods=PATCH, policy="role:admin"),
        route("/apps/{client_id}", m.delete_app, methods=DELETE, policy="role:admin"),
        route("/keys", m.list_keys, methods=GET, policy="role:admin"),
        route("/keys", m.create_key, methods=POST, policy="role:admin"),
        route("/keys/{id}", m.revoke_key, methods=DELETE, policy="role:admin"),
    ]


def well_known_routes(w: WellKnownHandlers) -> list[BaseRoute]:
    """The absolute paths OIDC and RFC 8414 require."""
    return [
        route("/.well-known/openid-configuration", w.openid_configuration, policy="public"),
        route("/.well-known/oauth-authorization-server", w.openid_configuration,
              policy="public"),
        route("/.well-known/jwks", w.jwks, policy="public", include_in_schema=False),
    ]


def admin_routes(m: ManageHandlers) -> list[BaseRoute]:
    """The admin listener (platform admins only)."""
    return [
        route("/signing-keys", m.list_signing_keys, methods=GET, policy="admin"),
        route("/signing-keys/rotate", m.rotate_signing_keys, methods=POST, policy="admin"),
        route("/orgs", m.list_orgs, methods=GET, policy="admin"),
    ]
