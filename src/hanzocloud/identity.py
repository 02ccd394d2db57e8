"""The identity of the request being served: minted by the gateway, read by handlers.

Handlers take the tenant only from here, never from a path, query or body (SPEC §5).
ZAP carries the same identity with each remote call.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: org slug (the tenant), user id, email, roles, admin flag, request id.

    `request_id` is set when an identity crosses a process (ZAP carries it); on the HTTP path
    the gateway hands over its cached identity with it empty, and the id of the request is
    `current_request_id` (read that, or use `request_id or current_request_id.get()`).
    """

    org: str = ""
    user: str = ""
    email: str = ""
    roles: tuple[str, ...] = field(default_factory=tuple)
    is_admin: bool = False
    request_id: str = ""

    @property
    def authenticated(self) -> bool:
        return bool(self.user or self.org)


ANONYMOUS = Identity()

current_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar(
    "hanzocloud_identity", default=ANONYMOUS
)
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "hanzocloud_request_id", default=""
)
