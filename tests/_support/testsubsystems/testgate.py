"""A test edge: mints the identity from `X-Test-Identity: org/user/role1+role2[/admin]`."""

from __future__ import annotations

from typing import Any

from hanzocloud.identity import Identity, current_identity


class TestIdentity:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for key, value in scope["headers"]:
                if key == b"x-test-identity":
                    parts = value.decode().split("/")
                    org, user, roles = (parts + ["", "", ""])[:3]
                    current_identity.set(Identity(
                        org=org, user=user, roles=tuple(r for r in roles.split("+") if r),
                        is_admin=len(parts) > 3 and parts[3] == "admin"))
        await self.app(scope, receive, send)


def mount(app: Any, deps: Any) -> None:
    app.edge(TestIdentity)
