"""The kms route table, as data: path (under /v1/kms), methods, access policy, endpoint.

Policies: viewers see names and metadata only; editors also read values and use keys
(encrypt, decrypt, rewrap, datakey, sign); admins and owners write secrets, manage keys and
read the audit trail. See docs/kms.md.
"""

from __future__ import annotations

from hanzocloud.routing import PolicyRoute, route

from .handlers.secrets import SecretHandlers
from .handlers.transit import TransitHandlers

VIEWER, EDITOR, ADMIN = "role:viewer", "role:editor", "role:admin"


def kms_routes(s: SecretHandlers, t: TransitHandlers) -> list[PolicyRoute]:
    """Every public route of kms."""
    return [
        # secrets (KV v2)
        route("/secrets", s.list_paths, methods=["GET"], policy=VIEWER),
        route("/secrets/{path:path}", s.get, methods=["GET"], policy=EDITOR),
        route("/secrets/{path:path}", s.put, methods=["PUT"], policy=ADMIN),
        route("/secrets/{path:path}", s.delete_current, methods=["DELETE"], policy=ADMIN),
        route("/delete/{path:path}", s.delete_versions, methods=["POST"], policy=ADMIN),
        route("/undelete/{path:path}", s.undelete, methods=["POST"], policy=ADMIN),
        route("/destroy/{path:path}", s.destroy, methods=["POST"], policy=ADMIN),
        route("/metadata/{path:path}", s.metadata, methods=["GET"], policy=VIEWER),
        route("/metadata/{path:path}", s.configure, methods=["PUT"], policy=ADMIN),
        route("/metadata/{path:path}", s.purge, methods=["DELETE"], policy=ADMIN),
        route("/resolve", s.resolve, methods=["GET"], policy=EDITOR),
        route("/audit", s.audit, methods=["GET"], policy=ADMIN),
        # transit keys
        route("/transit/keys", t.list_keys, methods=["GET"], policy=VIEWER),
        route("/transit/keys/{name}", t.describe, methods=["GET"], policy=VIEWER),
        route("/transit/keys/{name}", t.create, methods=["POST"], policy=ADMIN),
        route("/transit/keys/{name}", t.delete, methods=["DELETE"], policy=ADMIN),
        route("/transit/keys/{name}/rotate", t.rotate, methods=["POST"], policy=ADMIN),
        route("/transit/keys/{name}/config", t.configure, methods=["PUT"], policy=ADMIN),
        route("/transit/encrypt/{name}", t.encrypt, methods=["POST"], policy=EDITOR),
        route("/transit/decrypt/{name}", t.decrypt, methods=["POST"], policy=EDITOR),
        route("/transit/rewrap/{name}", t.rewrap, methods=["POST"], policy=EDITOR),
        route("/transit/datakey/{kind}/{name}", t.datakey, methods=["POST"], policy=EDITOR),
        route("/transit/sign/{name}", t.sign, methods=["POST"], policy=EDITOR),
        route("/transit/verify/{name}", t.verify, methods=["POST"], policy=VIEWER),
    ]
