"""kms: versioned secrets, transit keys and kms:// references, per org (docs/kms.md)."""

from __future__ import annotations

from hanzocloud.deps import Deps
from hanzocloud.mount import MountPoint
from hanzocloud.zap.gen.kms import KMS_METHODS

from .handlers.secrets import SecretHandlers
from .handlers.transit import TransitHandlers
from .kv import Secrets
from .routes import kms_routes
from .seal import Sealer
from .service import KmsService, References
from .store import KmsDb
from .transit import Transit


def mount(app: MountPoint, deps: Deps) -> None:
    """Install kms: routes under /v1/kms, the in-process Deps client and its ZAP service."""
    db = KmsDb(deps.tenants)
    secrets = Secrets(db, Sealer(db.root, "secret"))
    transit = Transit(db, Sealer(db.root, "transit"))
    service = KmsService(secrets, transit, References(deps.brand.name, db))
    app.routes(kms_routes(SecretHandlers(secrets, service, db), TransitHandlers(transit)))
    app.provide(service)
    app.zap_service(KMS_METHODS, service)
