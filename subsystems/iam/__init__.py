"""iam: an OIDC provider per brand — orgs, users, apps, roles, API keys and signing keys."""

from __future__ import annotations

from hanzocloud.deps import Deps
from hanzocloud.mount import MountPoint
from hanzocloud.zap.gen.iam import IAM_METHODS
from subsystems.iam.config import load_config
from subsystems.iam.handlers.manage import ManageHandlers
from subsystems.iam.handlers.oauth import OAuthHandlers
from subsystems.iam.handlers.wellknown import WellKnownHandlers
from subsystems.iam.routes import admin_routes, public_routes, well_known_routes
from subsystems.iam.service import REVOKED, REVOKED_DOC, IamService


def mount(app: MountPoint, deps: Deps) -> None:
    """Install iam: routes, well-known paths, admin routes, client, ZAP service, lifespan."""
    service = IamService(deps, load_config())
    deps.events.declare(REVOKED, REVOKED_DOC)
    oauth, manage, known = OAuthHandlers(service), ManageHandlers(service), \
        WellKnownHandlers(service)
    app.routes(public_routes(oauth, manage, known))
    app.well_known(well_known_routes(known))
    app.admin_routes(admin_routes(manage))
    app.provide(service)
    app.zap_service(IAM_METHODS, service)
    app.lifespan(service.running)
