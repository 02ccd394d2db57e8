"""A running in-process cloud for subsystem tests, and how tests authenticate against it.

`running_cloud` always enables iam and the gateway, so every request goes through the real
edge. `Cloud.token(org=…, user=…, roles=…)` returns a real access token: on first use it
creates the org (with its first-party app) and the user through iam's service layer, then
signs in with the real password grant over `cloud.client`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hanzocloud.config import load_settings
from hanzocloud.host import Host, build_host
from hanzocloud.keys import MasterKey
from hanzocloud.registry import SUBSYSTEMS, Subsystem
from testsubsystems import TEST_REGISTRY

TESTGATE = TEST_REGISTRY[0]
TEST_PASSWORD = "correct horse battery staple"
ALWAYS = ("iam", "gateway")
# Test users hash with cheap argon2 parameters; production defaults are far costlier.
os.environ.setdefault("CLOUD_IAM_ARGON2_TIME_COST", "1")
os.environ.setdefault("CLOUD_IAM_ARGON2_MEMORY_KIB", "8192")


@dataclass
class Cloud:
    host: Host
    client: httpx.AsyncClient
    _tokens: dict[tuple[str, str, tuple[str, ...], bool], tuple[str, float]] = field(
        default_factory=dict)

    @property
    def iam(self) -> Any:
        """iam's in-process service (its service layer: orgs, users, apps, keys)."""
        return self.host.deps.iam.target

    async def ensure_user(self, *, org: str, user: str, roles: Sequence[str], admin: bool,
                          email: str | None) -> None:
        """Create the org and the user, or bring the user's roles and admin flag up to date."""
        iam = self.iam
        await iam.ensure_org(org)
        existing = await iam.directory.find_user(org, user)
        if existing is None:
            await iam.directory.create_user(org, email=email or f"{user}@{org}.test",
                                            password=TEST_PASSWORD, roles=list(roles),
                                            is_admin=admin, user_id=user)
        elif list(existing.roles) != list(roles) or existing.is_admin != admin:
            await iam.directory.update_user(org, user, roles=list(roles), is_admin=admin)

    async def token(self, *, org: str = "acme", user: str = "alice",
                    roles: Sequence[str] = ("owner",), admin: bool = False,
                    email: str | None = None) -> str:
        """A real access token for a user of `org` holding `roles` (platform admin if
        `admin`), obtained with the password grant of the org's first-party app."""
        key = (org, user, tuple(roles), admin)
        cached = self._tokens.get(key)
        if cached is not None and cached[1] > time.time() + 30:
            return cached[0]
        await self.ensure_user(org=org, user=user, roles=roles, admin=admin, email=email)
        found = await self.iam.directory.find_user(org, user)
        app = await self.iam.clients.first_party_app(org)
        response = await self.client.post("/v1/iam/oauth/token", data={
            "grant_type": "password", "client_id": app.client_id, "username": found.email,
            "password": TEST_PASSWORD, "scope": "openid profile email"})
        assert response.status_code == 200, response.text
        body = response.json()
        self._tokens[key] = (body["access_token"], time.time() + body["expires_in"])
        return str(body["access_token"])

    async def headers(self, *, org: str = "acme", user: str = "alice",
                      roles: Sequence[str] = ("owner",), admin: bool = False,
                      email: str | None = None) -> dict[str, str]:
        """`Authorization` headers for that user (see `token`)."""
        token = await self.token(org=org, user=user, roles=roles, admin=admin, email=email)
        return {"Authorization": f"Bearer {token}"}


def registry_with_testgate() -> tuple[Subsystem, ...]:
    """The test edge plus the real registry (for hosts that predate real tokens)."""
    return (TESTGATE, *SUBSYSTEMS)


@contextlib.asynccontextmanager
async def running_cloud(data_dir: Path, enable: Sequence[str], *,
                        master: MasterKey | None = None, environ: dict[str, str] | None = None,
                        **flags: Any) -> AsyncIterator[Cloud]:
    """Build the real host for `enable` plus iam and the gateway, and serve it in-process."""
    wanted = set(enable) | set(ALWAYS)
    names = [s.name for s in SUBSYSTEMS if s.name in wanted]
    settings = load_settings(
        {"data_dir": data_dir, "dev": True, "enable": ",".join(names),
         "listen": "127.0.0.1:0", "health_listen": "127.0.0.1:0",
         "admin_listen": "127.0.0.1:0", "zap_listen": "127.0.0.1:0", **flags},
        environ=environ or {})
    host = build_host(settings, master=master or MasterKey(b"\x01" * 32, "t"))
    async with host.lifespan():
        transport = httpx.ASGITransport(app=host.public)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud.test") as client:
            yield Cloud(host, client)
