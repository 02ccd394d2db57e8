"""A test edge: mints the identity from `X-Test-Identity: org/user/role1+role2[/admin]`,
or from `Authorization: [Bearer ]test:org/user/role1+role2[/admin]`."""

from __future__ import annotations

from typing import Any

from hanzocloud.identity import Identity, current_identity


class TestIdentity:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for key, raw in scope["headers"]:
                value = raw
                if key == b"authorization":
                    value = raw.removeprefix(b"Bearer ").removeprefix(b"bearer ")
                    if not value.startswith(b"test:"):
                        continue
                    value = value[5:]
                elif key != b"x-test-identity":
                    continue
                if value:
                    parts = value.decode().split("/")
                    org, user, roles = (parts + ["", "", ""])[:3]
                    current_identity.set(Identity(
                        org=org, user=user, roles=tuple(r for r in roles.split("+") if r),
                        is_admin=len(parts) > 3 and parts[3] == "admin"))
        await self.app(scope, receive, send)


def mount(app: Any, deps: Any) -> None:
    app.edge(TestIdentity)
